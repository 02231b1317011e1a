//! Blob storage through `object_store`: a local folder for the embedded default, Azure Blob
//! Storage in the cloud. Everything goes through [`Store`], whose writes come in two kinds: plain
//! overwrites (chunks, status snapshots, logs) and create-only writes for what must happen once
//! (manifest, done markers, output), which report whether this call created the object.
//!
//! # Files in and out
//!
//! Videos move between local files and the store with [`Store::upload`] and [`Store::download`],
//! which stream: memory stays at a few parts whatever the size of the file (inputs may be many
//! GiB, and the aggregator on Azure has 2 GiB).
//!
//! - **Remote stores** get a multipart upload in parts of [`UPLOAD_PART_SIZE`], at most
//!   [`UPLOAD_PARTS_IN_FLIGHT`] at a time. The parts are invisible until the upload commits, all
//!   at once. object_store's multipart upload has no create-only mode, so a create-only upload
//!   commits to a staging object, `<top>/.staging/<rest of the path>.<attempt>` (in the same
//!   container as the destination, so that the copy stays on the server), copies it create-only
//!   to its name ([`CopyMode::Create`](object_store::CopyMode::Create)), waits until the copy has
//!   the whole size (Azure may finish a large copy in the background) and deletes the staging
//!   object. Each attempt stages under a name of its own, so two uploads of one name at once
//!   never share uncommitted blocks (the loser finds the name taken); what a killed attempt left
//!   is swept.
//! - **The local folder** bypasses object_store's own staging (files named `<name>#<n>` that a
//!   kill leaves behind). A create-only upload of a file inside the store's folder (scratch space
//!   is `<data>/scratch` by default, so a finished output is there) is a hard link of the file to
//!   its name, which fails if the name is taken: atomic, instant, nothing staged. An overwrite
//!   copies such a file to a temporary file beside it and renames that into place. A file from
//!   elsewhere (a user's video) is never linked, so that the store does not share a file its
//!   owner may rewrite: it is copied to a temporary file in the destination's folder, named so
//!   that listings leave it out, then linked create-only or renamed into place.
//! - **Downloads** stream into a temporary file of their own beside the target, renamed at the
//!   end: concurrent downloads to one target do not share a partial file, and the target holds a
//!   whole object or what it held before.
//!
//! # Leftovers
//!
//! A process killed in the middle of a transfer can leave its temporary file (named
//! `.stylefleet-upload-*` or `.stylefleet-download-*`) in the scratch folder, or in a rare case a
//! staging object in the store (a small JSON write killed inside object_store's local backend,
//! the copy of a file from outside the folder, or a remote upload killed between its commit and
//! its copy).
//! None of them is ever read as an object. [`Store::sweep_scratch`] and [`Store::sweep_staging`],
//! called when a process starts, remove those older than [`SWEEP_AGE`].
//!
//! # Layout
//!
//! - this module: [`Store`] and its errors, small JSON reads and writes, [`Store::fetch_pinned`]
//!   (a job's pinned version of an object, see [`Fingerprint`]).
//! - [`azure`]: Azure Blob Storage (the URL forms, a container store, an account store) and its
//!   short-lived single-blob URLs ([`azure::sas`]).
//! - `transfer` (private): the file transfers and sweeps behind uploads and downloads.

pub mod azure;
mod transfer;

use transfer::*;

use std::fs::Permissions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The size of one part of a streamed upload. Azure takes at most 50,000 blocks per blob, so
/// this allows objects of up to 390 GiB.
pub const UPLOAD_PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once: an upload holds at most one more part than this in
/// memory.
pub const UPLOAD_PARTS_IN_FLIGHT: usize = 4;

/// The folder, at the top of each container (or top-level folder), where create-only uploads to a
/// remote store are staged before their copy to the final name.
pub const STAGING_DIR: &str = ".staging";

/// How long a temporary file or staging object must have been left untouched before a sweep
/// removes it. A live transfer touches its file with every part, and a staging object lives for
/// the seconds between its commit and its copy, so this only ever catches what a killed process
/// left.
pub const SWEEP_AGE: Duration = Duration::from_secs(15 * 60);

/// Prefix of the temporary files of uploads (beside the source, or in the destination's folder).
const UPLOAD_PREFIX: &str = ".stylefleet-upload-";
/// Suffix of the same: object_store's local backend treats `<name>#<digits>` as its own staging
/// name and leaves it out of listings, so a temporary file in the store is never listed.
const UPLOAD_SUFFIX: &str = "#0";
/// Prefix of the temporary files of downloads.
const DOWNLOAD_PREFIX: &str = ".stylefleet-download-";
/// Prefix of the temporary files of pinned fetches (`Store::fetch_pinned`).
const FETCH_PREFIX: &str = ".fetch-";

/// Errors from the store, classified: [`StoreError::is_transient`] ones are retried with backoff.
///
/// A variant with a cause names it in its message (logs print the message alone) and keeps it as
/// its [`source`](std::error::Error::source); reports of the whole chain
/// ([`lifecycle::report`](crate::lifecycle::report), a job's reason) skip a cause the message
/// before already ends with, so it is said once.
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
    /// The folder behind a local store: ffmpeg reads sources there directly instead of a copy,
    /// and files move in and out with file-system calls.
    local: Option<Local>,
    /// How the store was named, for messages.
    spec: String,
}

/// A store in a local folder.
#[derive(Debug, Clone)]
struct Local {
    /// The folder.
    root: PathBuf,
    /// The backend, typed: it maps object names to files exactly as it stores them.
    fs: Arc<LocalFileSystem>,
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
            return azure::open_store(spec).map(|inner| Store {
                inner,
                local: None,
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
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StoreError::Config {
                spec: root.display().to_string(),
                reason: e.to_string(),
            })?
            .with_automatic_cleanup(true);
        let fs = Arc::new(fs);
        Ok(Store {
            inner: fs.clone(),
            spec: root.display().to_string(),
            local: Some(Local { root, fs }),
        })
    }

    /// Wraps any object_store backend (for example one built for tests).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, spec: impl Into<String>) -> Self {
        Store {
            inner,
            local: None,
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

    /// Whether `path` still names itself once encoded for the store. object_store percent-encodes
    /// characters it cannot address (`<`, `>`, `|`, `#`, ...), so a file listed under such a name
    /// can never be read back by it.
    pub fn is_addressable(path: &str) -> bool {
        StorePath::from(path).as_ref() == path
    }

    /// The file behind `path` when the store is a local folder.
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|local| local.root.join(path))
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
    /// The bytes go to a temporary file of this call's own beside `to` (named
    /// `.stylefleet-download-*`), renamed to `to` at the end: any number of downloads to one
    /// target may run at once, and a killed one leaves no file that [`Store::sweep_scratch`]
    /// would not remove.
    pub async fn download(&self, path: &str, to: &Path) -> Result<()> {
        let io = |context: String| move |source| StoreError::Io { context, source };
        let result = self
            .inner
            .get(&StorePath::from(path))
            .await
            .map_err(|e| StoreError::backend(path, e))?;
        let folder = parent_of(to);
        let partial = temp_file(folder, DOWNLOAD_PREFIX, "")
            .map_err(io(format!("cannot create a file in {}", folder.display())))?;
        let mut file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(io(format!("cannot open {}", partial.path().display())))?,
        );
        let mut stream = result.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| StoreError::backend(path, e))?
        {
            file.write_all(&chunk)
                .await
                .map_err(io(format!("cannot write {}", partial.path().display())))?;
        }
        file.sync_all()
            .await
            .map_err(io(format!("cannot sync {}", partial.path().display())))?;
        partial.persist(to).map_err(|e| StoreError::Io {
            context: format!("cannot rename to {}", to.display()),
            source: e.error,
        })?;
        Ok(())
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

    /// Uploads a local file to `path`, streaming; create-only when `create_only`, in which case it
    /// returns whether this call created the object (`false`: the name was taken, and what is
    /// there is left as it was). Either way the object appears whole or not at all, and a kill at
    /// any point leaves nothing at `path` (see the module docs for how, per backend).
    ///
    /// In a local store, a create-only upload of a file inside the store's folder (scratch space
    /// is there by default) makes the object a hard link of `from`: the two are then one file, so
    /// a caller must not rewrite `from` in place afterwards (deleting it, or replacing it by a
    /// rename, is fine). A file from elsewhere is copied.
    pub async fn upload(&self, from: &Path, path: &str, create_only: bool) -> Result<bool> {
        let Some(local) = &self.local else {
            return self.upload_parts(from, path, create_only).await;
        };
        let to = local
            .fs
            .path_to_filesystem(&StorePath::from(path))
            .map_err(|e| StoreError::backend(path, e))?;
        let (root, from) = (local.root.clone(), from.to_owned());
        tokio::task::spawn_blocking(move || upload_file(&root, &from, &to, create_only))
            .await
            .map_err(|e| StoreError::Io {
                context: format!("the upload to {path} stopped"),
                source: std::io::Error::other(e),
            })?
    }

    /// [`Store::upload`] to a remote store: a multipart upload, committed at once; create-only
    /// through a staging object and a create-only copy.
    async fn upload_parts(&self, from: &Path, path: &str, create_only: bool) -> Result<bool> {
        let to = StorePath::from(path);
        let staging = create_only.then(|| StorePath::from(staging_path(path, &upload_attempt())));
        if create_only && self.exists(path).await? {
            return Ok(false);
        }
        let target = staging.as_ref().unwrap_or(&to);
        let mut file = tokio::fs::File::open(from)
            .await
            .map_err(|source| StoreError::Io {
                context: format!("cannot read {}", from.display()),
                source,
            })?;
        let upload = self
            .inner
            .put_multipart(target)
            .await
            .map_err(|e| StoreError::backend(target.as_ref(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_SIZE);
        let size = match send_parts(&mut file, from, &mut writer, target.as_ref()).await {
            Ok(size) => size,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        writer
            .finish()
            .await
            .map_err(|e| StoreError::backend(target.as_ref(), e))?;
        let Some(staging) = staging else {
            return Ok(true);
        };
        let created = match self.inner.copy_if_not_exists(&staging, &to).await {
            Ok(()) => {
                self.wait_for_copy(path, size).await?;
                true
            }
            Err(object_store::Error::AlreadyExists { .. }) => false,
            Err(e) => return Err(StoreError::backend(path, e)),
        };
        self.forget_staging(path, &staging).await;
        Ok(created)
    }

    /// Deletes the staging object of an upload to `path`; failing that, a sweep will.
    async fn forget_staging(&self, path: &str, staging: &StorePath) {
        if let Err(e) = self.delete(staging.as_ref()).await {
            tracing::warn!(%path, error = %e, "cannot delete the staging object of an upload");
        }
    }

    /// Waits until `path` has `size` bytes. A server-side copy on Azure may finish in the
    /// background; the staging object it reads must outlive it.
    async fn wait_for_copy(&self, path: &str, size: u64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + COPY_WAIT;
        let mut pause = Duration::from_millis(100);
        loop {
            let now = self.head(path).await?.map(|meta| meta.size);
            if now == Some(size) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Io {
                    context: format!("the copy of the upload to {path} did not finish"),
                    source: std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!("{now:?} bytes of {size} after {COPY_WAIT:?}"),
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Removes what killed transfers left in `dir` (the scratch folder, the cache of pinned
    /// fetches) and in its subfolders: temporary files of uploads, downloads and
    /// pinned fetches that nothing has touched for `older_than` (use [`SWEEP_AGE`]). Other files
    /// are never touched, and a missing folder is no error. Returns how many files it removed.
    /// Meant for process start, before the first transfer; safe while others run.
    pub async fn sweep_scratch(dir: &Path, older_than: Duration) -> Result<usize> {
        let dir = dir.to_owned();
        run_blocking("sweeping the scratch folder", move || {
            sweep_folder(&dir, older_than, &|name| {
                name.starts_with(UPLOAD_PREFIX)
                    || name.starts_with(DOWNLOAD_PREFIX)
                    || name.starts_with(FETCH_PREFIX)
            })
        })
        .await
    }

    /// Removes the staging that killed writes left in the store itself, once untouched for
    /// `older_than` (use [`SWEEP_AGE`]); returns how many it removed. In a local folder: the
    /// `<name>#<digits>` files object_store's local backend stages small writes in, and the
    /// temporary files of uploads (copies of files from outside the folder, or staged in scratch
    /// space inside it); none is ever listed or read as an object.
    /// In a remote store: objects under `<top>/.staging/` for each of `tops`, the top-level
    /// folders (containers) this process uploads to create-only (see the module docs): a process
    /// sweeps only where it may write, and never lists the account's containers, which no
    /// component of the deployment is granted. Meant for process start; safe while others run.
    pub async fn sweep_staging(&self, tops: &[&str], older_than: Duration) -> Result<usize> {
        if let Some(local) = &self.local {
            let root = local.root.clone();
            return run_blocking("sweeping the store folder", move || {
                sweep_folder(&root, older_than, &|name| {
                    name.starts_with(UPLOAD_PREFIX) || is_backend_staging(name)
                })
            })
            .await;
        }
        let Some(cutoff) = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        else {
            return Ok(0);
        };
        let mut removed = 0;
        for top in tops {
            for meta in self.list(&format!("{top}/{STAGING_DIR}")).await? {
                if meta.last_modified < cutoff {
                    self.delete(meta.location.as_ref()).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
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

    #[test]
    fn staging_names_stay_in_the_destination_container() {
        assert_eq!(
            staging_path("output/s/v.mp4", "7-0"),
            "output/.staging/s/v.mp4.7-0"
        );
        assert_eq!(staging_path("v.mp4", "7-1"), ".staging/v.mp4.7-1");
        assert_ne!(upload_attempt(), upload_attempt());
        assert!(is_backend_staging("status.json#1"));
        assert!(is_backend_staging(".stylefleet-upload-aB3#0"));
        assert!(!is_backend_staging("clip#take2.mp4"));
        assert!(!is_backend_staging("clip#"));
        assert!(!is_backend_staging("clip.mp4"));
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
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
