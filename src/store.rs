//! Blob storage through `object_store`: a local folder for the embedded default, Azure Blob
//! Storage in the cloud. Everything goes through [`Store`], whose writes come in two kinds: plain
//! overwrites (chunks, status snapshots, logs) and create-only writes for what must happen once
//! (manifest, done markers, output), which report whether this call created the object.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

/// Errors from the store, classified: [`StoreError::is_transient`] ones are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{path} does not exist in the store")]
    NotFound {
        /// The object.
        path: String,
    },
    /// The object is no longer the version a job pinned (replaced by a new upload, or gone).
    #[error(
        "{path} changed after the job was planned ({detail}); a new upload is a job of its own"
    )]
    Changed {
        /// The object.
        path: String,
        /// What differs.
        detail: String,
    },
    /// The store could not be opened (bad URL or configuration).
    #[error("cannot open the store {spec}: {reason}")]
    Config {
        /// What was given.
        spec: String,
        /// Why it failed.
        reason: String,
    },
    /// A stored JSON document does not parse.
    #[error("{path} is not a valid document: {source}")]
    Corrupt {
        /// The object.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Local file I/O around a transfer.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The backend failed.
    #[error("store operation on {path} failed: {source}")]
    Backend {
        /// The object.
        path: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    /// Whether a retry may succeed (network, throttling, a backend hiccup).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Backend { source, .. } => !matches!(
                source,
                object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            StoreError::Io { .. } => true,
            StoreError::NotFound { .. }
            | StoreError::Changed { .. }
            | StoreError::Config { .. }
            | StoreError::Corrupt { .. } => false,
        }
    }

    fn backend(path: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                path: path.to_owned(),
            },
            source => StoreError::Backend {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The blob store every stage reads and writes.
#[derive(Debug, Clone)]
pub struct Store {
    /// The backend.
    inner: Arc<dyn ObjectStore>,
    /// The folder behind a local store: ffmpeg reads sources there directly instead of a copy.
    local_root: Option<PathBuf>,
    /// How the store was named, for messages.
    spec: String,
}

impl Store {
    /// Opens a store from a folder path, a `file://` URL, or an Azure URL (`az://<container>`,
    /// `https://<account>.blob.core.windows.net/<container>`), configured from the environment
    /// with object_store's conventions (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_USE_EMULATOR`,
    /// managed identity through `AZURE_CLIENT_ID` and friends).
    pub fn open(spec: &str) -> Result<Self> {
        if let Some(path) = spec.strip_prefix("file://") {
            return Self::local(Path::new(path));
        }
        if spec.contains("://") {
            return crate::azure::open_store(spec).map(|inner| Store {
                inner,
                local_root: None,
                spec: spec.to_owned(),
            });
        }
        Self::local(Path::new(spec))
    }

    /// A store in a local folder, created if missing.
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            context: format!("cannot create the store folder {}", root.display()),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| StoreError::Io {
            context: format!("cannot resolve the store folder {}", root.display()),
            source,
        })?;
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StoreError::Config {
                spec: root.display().to_string(),
                reason: e.to_string(),
            })?
            .with_automatic_cleanup(true);
        Ok(Store {
            inner: Arc::new(inner),
            spec: root.display().to_string(),
            local_root: Some(root),
        })
    }

    /// Wraps any object_store backend (for example one built for tests).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, spec: impl Into<String>) -> Self {
        Store {
            inner,
            local_root: None,
            spec: spec.into(),
        }
    }

    /// How the store was named.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The backend, for callers that need more than this wrapper offers.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The file behind `path` when the store is a local folder.
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// Writes `bytes` at `path`, replacing what was there.
    pub async fn put(&self, path: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let location = StorePath::from(path);
        self.inner
            .put(&location, PutPayload::from(bytes.into()))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::backend(path, e))
    }

    /// Writes `bytes` at `path` only if nothing is there. Returns `true` when this call created
    /// it, `false` when it already existed (which idempotent callers treat as success).
    pub async fn put_create(&self, path: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        let location = StorePath::from(path);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&location, PutPayload::from(bytes.into()), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(StoreError::backend(path, e)),
        }
    }

    /// Serialises `value` as pretty JSON and writes it (overwrite).
    pub async fn put_json<T: Serialize>(&self, path: &str, value: &T) -> Result<()> {
        self.put(path, json_bytes(path, value)?).await
    }

    /// Serialises `value` as pretty JSON and writes it create-only; see [`Store::put_create`].
    pub async fn put_json_create<T: Serialize>(&self, path: &str, value: &T) -> Result<bool> {
        self.put_create(path, json_bytes(path, value)?).await
    }

    /// Reads an object, `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>> {
        let location = StorePath::from(path);
        match self.inner.get(&location).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| StoreError::backend(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::backend(path, e)),
        }
    }

    /// Reads and parses a JSON document, `None` when it does not exist.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.get(path).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        path: path.to_owned(),
                        source,
                    })
            }
        }
    }

    /// Metadata of an object, `None` when it does not exist.
    pub async fn head(&self, path: &str) -> Result<Option<ObjectMeta>> {
        match self.inner.head(&StorePath::from(path)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::backend(path, e)),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.head(path).await?.is_some())
    }

    /// Every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let location = StorePath::from(prefix);
        match self
            .inner
            .list(Some(&location))
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(v) => Ok(v),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(StoreError::backend(prefix, e)),
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.inner.delete(&StorePath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::backend(path, e)),
        }
    }

    /// Copies an object into a local file, streaming; the file appears complete or not at all.
    pub async fn download(&self, path: &str, to: &Path) -> Result<()> {
        let io = |context: String| move |source| StoreError::Io { context, source };
        let partial = to.with_extension("part");
        let result = self
            .inner
            .get(&StorePath::from(path))
            .await
            .map_err(|e| StoreError::backend(path, e))?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io(format!("cannot create {}", partial.display())))?;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| StoreError::backend(path, e))?
        {
            file.write_all(&chunk)
                .await
                .map_err(io(format!("cannot write {}", partial.display())))?;
        }
        file.sync_all()
            .await
            .map_err(io(format!("cannot sync {}", partial.display())))?;
        tokio::fs::rename(&partial, to)
            .await
            .map_err(io(format!("cannot rename to {}", to.display())))
    }

    /// A readable local file for `path`: the file itself in a local store, otherwise a copy in
    /// `scratch` (reused when already there).
    pub async fn materialize(&self, path: &str, scratch: &Path, name: &str) -> Result<PathBuf> {
        if let Some(local) = self.local_path(path) {
            return Ok(local);
        }
        let to = scratch.join(name);
        if tokio::fs::metadata(&to).await.is_err() {
            tokio::fs::create_dir_all(scratch)
                .await
                .map_err(|source| StoreError::Io {
                    context: format!("cannot create {}", scratch.display()),
                    source,
                })?;
            self.download(path, &to).await?;
        }
        Ok(to)
    }

    /// A local copy of exactly the version `pin` names (or, without a pin, of the version there
    /// now, whose fingerprint is returned): the object is read with `If-Match` on the pinned ETag
    /// and hashed while it streams to a file of its own, then kept in `cache` under its content
    /// hash (`<sha256>.<ext>`), so a cached copy can never be another version's bytes and any
    /// number of processes can share the folder. A version that is gone, or bytes that hash
    /// differently, fail with [`StoreError::Changed`]: a job's readers never see another upload.
    pub async fn fetch_pinned(
        &self,
        path: &str,
        pin: Option<&Fingerprint>,
        cache: &Path,
        ext: &str,
    ) -> Result<(Fingerprint, PathBuf)> {
        let io = |context: String| move |source| StoreError::Io { context, source };
        if let Some(pin) = pin {
            let cached = cache.join(pin.file_name(ext));
            if tokio::fs::metadata(&cached).await.is_ok() {
                return Ok((pin.clone(), cached));
            }
        }
        tokio::fs::create_dir_all(cache)
            .await
            .map_err(io(format!("cannot create {}", cache.display())))?;
        let options = GetOptions {
            if_match: pin.and_then(|p| p.etag.clone()),
            ..Default::default()
        };
        let result = match self.inner.get_opts(&StorePath::from(path), options).await {
            Ok(result) => result,
            Err(object_store::Error::Precondition { .. }) => {
                return Err(StoreError::Changed {
                    path: path.to_owned(),
                    detail: "its ETag is no longer the pinned one".into(),
                });
            }
            Err(object_store::Error::NotFound { .. }) if pin.is_some() => {
                return Err(StoreError::Changed {
                    path: path.to_owned(),
                    detail: "it was deleted".into(),
                });
            }
            Err(e) => return Err(StoreError::backend(path, e)),
        };
        let etag = result.meta.e_tag.clone();
        let partial = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(cache)
            .map_err(io(format!("cannot create a file in {}", cache.display())))?;
        let mut file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(io(format!("cannot open {}", partial.path().display())))?,
        );
        let mut hash = sha2::Sha256::new();
        let mut size = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| match e {
            object_store::Error::Precondition { .. } => StoreError::Changed {
                path: path.to_owned(),
                detail: "it was replaced while it was read".into(),
            },
            e => StoreError::backend(path, e),
        })? {
            hash.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(io(format!("cannot write {}", partial.path().display())))?;
        }
        file.sync_all()
            .await
            .map_err(io(format!("cannot sync {}", partial.path().display())))?;
        let fingerprint = Fingerprint {
            sha256: format!("sha256:{:x}", hash.finalize()),
            etag,
            size,
        };
        if let Some(pin) = pin
            && pin.sha256 != fingerprint.sha256
        {
            return Err(StoreError::Changed {
                path: path.to_owned(),
                detail: format!("planned {}, now {}", pin.sha256, fingerprint.sha256),
            });
        }
        let to = cache.join(fingerprint.file_name(ext));
        partial.persist(&to).map_err(|e| StoreError::Io {
            context: format!("cannot rename to {}", to.display()),
            source: e.error,
        })?;
        Ok((fingerprint, to))
    }

    /// Uploads a local file to `path`; create-only when `create_only` (returns whether it created).
    pub async fn upload(&self, from: &Path, path: &str, create_only: bool) -> Result<bool> {
        let bytes = tokio::fs::read(from)
            .await
            .map_err(|source| StoreError::Io {
                context: format!("cannot read {}", from.display()),
                source,
            })?;
        if create_only {
            self.put_create(path, bytes).await
        } else {
            self.put(path, bytes).await.map(|()| true)
        }
    }
}

fn json_bytes<T: Serialize>(path: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// The identity of one version of an object: what a job pins at split time and its readers check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// `sha256:<hex>` of the bytes: the same bytes uploaded again are the same version.
    pub sha256: String,
    /// The store's ETag of the version that was read, for conditional reads (`If-Match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

impl Fingerprint {
    /// The name of the content-addressed local copy: `<hex>.<ext>`.
    pub fn file_name(&self, ext: &str) -> String {
        let hex = self.sha256.strip_prefix("sha256:").unwrap_or(&self.sha256);
        format!("{hex}.{ext}")
    }
}

/// The version tag of an object: its ETag when the backend gives one, else size and mtime.
pub fn version_of(meta: &ObjectMeta) -> String {
    meta.e_tag.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            meta.size,
            meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_only_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        assert!(
            store
                .put_create("jobs/a/manifest.json", "first")
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_create("jobs/a/manifest.json", "second")
                .await
                .unwrap()
        );
        assert_eq!(
            store.get("jobs/a/manifest.json").await.unwrap().unwrap(),
            "first"
        );
        assert!(store.get("jobs/a/missing.json").await.unwrap().is_none());
        assert_eq!(store.list("jobs/a").await.unwrap().len(), 1);
        assert!(store.list("jobs/none").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn download_is_complete_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("store")).unwrap();
        store
            .put("input/x/a.bin", vec![7u8; 100_000])
            .await
            .unwrap();
        let to = dir.path().join("a.bin");
        store.download("input/x/a.bin", &to).await.unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), vec![7u8; 100_000]);
        assert!(
            store
                .download("input/x/none.bin", &dir.path().join("b.bin"))
                .await
                .is_err()
        );
        assert!(!dir.path().join("b.bin").exists());
    }
}
