//! [`AccountStore`]: a whole storage account, whose top-level folders are its containers.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::url::{Endpoint, Target};
use super::{ContainerStore, LAYOUT_CONTAINERS, Options, StoreError, config};

/// A whole storage account as one store: the first segment of a path names the container, the
/// rest is the blob. See the module docs.
#[derive(Debug, Clone)]
pub struct AccountStore {
    inner: Arc<AccountInner>,
}

#[derive(Debug)]
struct AccountInner {
    endpoint: Endpoint,
    /// Containers opened so far; each is checked once, on first use.
    containers: Mutex<HashMap<String, ContainerStore>>,
}

impl AccountStore {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        AccountStore {
            inner: Arc::new(AccountInner {
                endpoint,
                containers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Opens the account store `url` names (`https://<account>.blob.core.windows.net`,
    /// `http://<host>:<port>/<account>`).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let target = Target::parse(url, &Options::default())?;
        match target.container {
            None => Ok(Self::new(target.endpoint)),
            Some(_) => Err(config(url, "the URL names a container, not an account")),
        }
    }

    /// The storage account.
    pub fn account(&self) -> &str {
        &self.inner.endpoint.account
    }

    /// The store of container `name` (opened once, shared afterwards).
    pub fn container(&self, name: &str) -> object_store::Result<ContainerStore> {
        self.inner.container(name)
    }
}

impl AccountInner {
    fn container(&self, name: &str) -> object_store::Result<ContainerStore> {
        // A poisoned map only means another thread panicked while inserting: the map is intact.
        let mut containers = self
            .containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = containers.get(name) {
            return Ok(c.clone());
        }
        let store = self
            .endpoint
            .container(name, self.endpoint.service.as_str())
            .map_err(|e| object_store::Error::NotSupported {
                source: Box::new(e),
            })?;
        containers.insert(name.to_owned(), store.clone());
        Ok(store)
    }

    /// The container a path lives in, and the path inside it.
    fn split(&self, location: &Path) -> object_store::Result<(ContainerStore, Path)> {
        let mut parts = location.parts();
        let Some(first) = parts.next() else {
            return Err(not_in_a_container(location));
        };
        let rest: Path = parts.collect();
        if rest.as_ref().is_empty() {
            return Err(not_in_a_container(location));
        }
        Ok((self.container(first.as_ref())?, rest))
    }

    /// The container a listing prefix names, and the prefix inside it.
    fn split_prefix(&self, prefix: &Path) -> object_store::Result<(ContainerStore, Option<Path>)> {
        let mut parts = prefix.parts();
        let Some(first) = parts.next() else {
            return Err(not_in_a_container(prefix));
        };
        let rest: Path = parts.collect();
        let rest = (!rest.as_ref().is_empty()).then_some(rest);
        Ok((self.container(first.as_ref())?, rest))
    }

    /// The containers a listing of everything covers: the layout and whatever was opened.
    fn known_containers(&self) -> Vec<String> {
        let mut names: Vec<String> = LAYOUT_CONTAINERS.iter().map(|s| (*s).to_owned()).collect();
        let containers = self
            .containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names.extend(containers.keys().cloned());
        names.sort();
        names.dedup();
        names
    }
}

fn not_in_a_container(location: &Path) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!(
            "{location:?}: in an account store every blob lives in a container, named by the \
             first segment of its path (input/..., jobs/...)"
        )
        .into(),
    }
}

/// `path` inside `container`, as the account store names it.
fn in_container(container: &str, path: &Path) -> Path {
    std::iter::once(object_store::path::PathPart::from(container))
        .chain(path.parts())
        .collect()
}

fn reprefix(container: String) -> impl Fn(ObjectMeta) -> ObjectMeta {
    move |mut meta| {
        meta.location = in_container(&container, &meta.location);
        meta
    }
}

impl fmt::Display for AccountStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MicrosoftAzure(account={}, every container)",
            self.inner.endpoint.account
        )
    }
}

#[async_trait]
impl ObjectStore for AccountStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (container, path) = self.inner.split(location)?;
        container.put_opts(&path, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let (container, path) = self.inner.split(location)?;
        container.put_multipart_opts(&path, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let (container, path) = self.inner.split(location)?;
        let mut result = container.get_opts(&path, options).await?;
        result.meta.location = location.clone();
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let (container, path) = self.inner.split(location)?;
        container.get_ranges(&path, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .and_then(move |location| {
                let inner = inner.clone();
                async move {
                    let (container, path) = inner.split(&location)?;
                    container.delete(&path).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match prefix {
            Some(prefix) => match self.inner.split_prefix(prefix) {
                Ok((container, rest)) => {
                    let name = container.name().to_owned();
                    container.list(rest.as_ref()).map_ok(reprefix(name)).boxed()
                }
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            },
            None => {
                let inner = self.inner.clone();
                stream::iter(inner.known_containers())
                    .map(move |name| match inner.container(&name) {
                        Ok(container) => container.list(None).map_ok(reprefix(name)).boxed(),
                        Err(e) => stream::once(async move { Err(e) }).boxed(),
                    })
                    .flatten()
                    .boxed()
            }
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        match prefix {
            Some(prefix) => {
                let (container, rest) = self.inner.split_prefix(prefix)?;
                let name = container.name().to_owned();
                let listed = container.list_with_delimiter(rest.as_ref()).await?;
                Ok(ListResult {
                    common_prefixes: listed
                        .common_prefixes
                        .iter()
                        .map(|p| in_container(&name, p))
                        .collect(),
                    objects: listed.objects.into_iter().map(reprefix(name)).collect(),
                    extensions: listed.extensions,
                })
            }
            // The top level holds containers only, like folders.
            None => Ok(ListResult {
                common_prefixes: self
                    .inner
                    .known_containers()
                    .iter()
                    .map(|name| Path::from(name.as_str()))
                    .collect(),
                objects: Vec::new(),
                extensions: Default::default(),
            }),
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let (from_container, from_path) = self.inner.split(from)?;
        let (to_container, to_path) = self.inner.split(to)?;
        if from_container.name() == to_container.name() {
            return from_container
                .copy_opts(&from_path, &to_path, options)
                .await;
        }
        // object_store copies within one container only: read and write across two.
        let bytes = from_container.get(&from_path).await?.bytes().await?;
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        to_container
            .put_opts(&to_path, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_container_and_blob() {
        let store = AccountStore::open("http://127.0.0.1:1/devstoreaccount1").unwrap();
        let (c, p) = store
            .inner
            .split(&Path::from("jobs/j1/manifest.json"))
            .unwrap();
        assert_eq!(c.name(), "jobs");
        assert_eq!(p.as_ref(), "j1/manifest.json");
        assert!(matches!(
            store.inner.split(&Path::from("jobs")),
            Err(object_store::Error::NotSupported { .. })
        ));
        assert_eq!(
            in_container("output", &Path::from("a/b.mp4")).as_ref(),
            "output/a/b.mp4"
        );
    }
}
