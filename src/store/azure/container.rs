//! [`ContainerStore`]: one container, created when missing before its first operation.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::azure::{AzureCredential, MicrosoftAzure};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Url;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::OnceCell;

use super::url::{Endpoint, check_container_name};
use super::{CONNECT_TIMEOUT, StoreError, config};

/// The service version used for the requests this module makes itself (creating a container).
const SERVICE_VERSION: &str = "2023-11-03";

/// The object_store name for errors raised here.
const STORE_NAME: &str = "MicrosoftAzure";

impl Endpoint {
    /// The store of one container.
    pub(super) fn container(&self, name: &str, spec: &str) -> Result<ContainerStore, StoreError> {
        check_container_name(name).map_err(|reason| config(spec, reason))?;
        let inner = self
            .builder
            .clone()
            .with_container_name(name)
            .build()
            .map_err(|e| config(spec, e.to_string()))?;
        Ok(ContainerStore {
            inner: Arc::new(ContainerInner {
                inner,
                name: name.to_owned(),
                endpoint: self.clone(),
                ready: OnceCell::new(),
            }),
        })
    }

    /// Creates container `name`; `Ok(false)` when it already existed.
    async fn create_container(
        &self,
        name: &str,
        credential: &AzureCredential,
    ) -> Result<bool, ContainerError> {
        let mut url = self.service.clone();
        url.path_segments_mut()
            .map_err(|()| ContainerError::Url(self.service.to_string()))?
            .pop_if_empty()
            .push(name);
        url.query_pairs_mut().append_pair("restype", "container");
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut headers = vec![
            ("x-ms-date", date.clone()),
            ("x-ms-version", SERVICE_VERSION.to_owned()),
        ];
        match (&self.key, credential) {
            (Some(key), _) => {
                headers.push((
                    "authorization",
                    shared_key(&self.account, key, &url, &date)?,
                ));
            }
            (None, AzureCredential::BearerToken(token)) => {
                headers.push(("authorization", format!("Bearer {token}")));
            }
            (None, AzureCredential::SASToken(pairs)) => {
                url.query_pairs_mut().extend_pairs(pairs);
            }
            (None, AzureCredential::AccessKey(_)) => return Err(ContainerError::NoKey),
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ContainerError::Http)?;
        let mut request = client.put(url.as_str()).header("content-length", "0");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(ContainerError::Http)?;
        let status = response.status();
        match status.as_u16() {
            201 => Ok(true),
            409 => Ok(false),
            _ => {
                let body = response.text().await.unwrap_or_default();
                Err(ContainerError::Status {
                    status: status.as_u16(),
                    body,
                })
            }
        }
    }
}

/// The `SharedKey` authorization of a bodiless `PUT` to `url`.
fn shared_key(account: &str, key: &str, url: &Url, date: &str) -> Result<String, ContainerError> {
    use base64::Engine as _;
    use base64::prelude::BASE64_STANDARD;
    use hmac::{Hmac, Mac as _};
    let key = BASE64_STANDARD
        .decode(key)
        .map_err(|_| ContainerError::BadKey)?;
    // Verb, then eleven standard headers of which this request has none (a zero Content-Length
    // is signed as empty), then the x-ms- headers, then the resource and its sorted query.
    let mut query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    query.sort();
    let mut resource = format!("/{account}{}", url.path());
    for (name, value) in &query {
        resource.push_str(&format!("\n{}:{value}", name.to_ascii_lowercase()));
    }
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{SERVICE_VERSION}\n{resource}"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| ContainerError::BadKey)?;
    mac.update(to_sign.as_bytes());
    Ok(format!(
        "SharedKey {account}:{}",
        BASE64_STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Why a container could not be made ready.
#[derive(Debug, thiserror::Error)]
enum ContainerError {
    #[error("the account URL {0} cannot hold a container")]
    Url(String),
    #[error("the account key is not valid base64")]
    BadKey,
    #[error("an account key is configured but could not be read back")]
    NoKey,
    #[error("the request failed: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the service answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl ContainerError {
    /// Whether the service refused (rather than failed).
    fn refused(&self) -> bool {
        matches!(
            self,
            ContainerError::Status {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// A container that does not exist and could not be created: an object_store error that is not
/// retried, whose message names the container and the account.
#[derive(Debug, thiserror::Error)]
#[error(
    "container {container:?} does not exist in storage account {account:?} and could not be \
     created ({source}); create it, or grant this identity the right to"
)]
struct MissingContainer {
    container: String,
    account: String,
    #[source]
    source: ContainerError,
}

/// One container as a store; see the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    inner: Arc<ContainerInner>,
}

#[derive(Debug)]
struct ContainerInner {
    /// object_store's backend for this container.
    inner: MicrosoftAzure,
    /// The container.
    name: String,
    /// Where it lives, to create it.
    endpoint: Endpoint,
    /// Set once the container is known to exist; a failed check leaves it unset so that the next
    /// operation tries again (the service may just be unreachable for a moment).
    ready: OnceCell<()>,
}

impl ContainerStore {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The storage account.
    pub fn account(&self) -> &str {
        &self.inner.endpoint.account
    }

    /// object_store's backend for this container, without the container check.
    pub fn backend(&self) -> &MicrosoftAzure {
        &self.inner.inner
    }

    /// Makes sure the container exists, creating it when missing (see the module docs). Every
    /// operation does this first; callers may do it early to fail fast.
    pub async fn ensure(&self) -> object_store::Result<()> {
        self.inner.ready().await
    }
}

impl ContainerInner {
    async fn ready(&self) -> object_store::Result<()> {
        self.ready
            .get_or_try_init(|| self.check())
            .await
            .map(|_| ())
    }

    async fn check(&self) -> object_store::Result<()> {
        let probe = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        match self.inner.list_paginated(None, probe).await {
            Ok(_) => Ok(()),
            // Listing may be refused where writing is not: let the operation speak for itself.
            Err(object_store::Error::PermissionDenied { .. })
            | Err(object_store::Error::Unauthenticated { .. }) => Ok(()),
            Err(e) if container_not_found(&e) => self.create().await,
            Err(e) => Err(e),
        }
    }

    async fn create(&self) -> object_store::Result<()> {
        let credential = self.inner.credentials().get_credential().await?;
        match self
            .endpoint
            .create_container(&self.name, &credential)
            .await
        {
            Ok(created) => {
                if created {
                    tracing::info!(container = %self.name, account = %self.endpoint.account, "created the missing container");
                }
                Ok(())
            }
            Err(e) => {
                let refused =
                    e.refused() || matches!(e, ContainerError::BadKey | ContainerError::NoKey);
                let error = MissingContainer {
                    container: self.name.clone(),
                    account: self.endpoint.account.clone(),
                    source: e,
                };
                Err(if refused {
                    object_store::Error::PermissionDenied {
                        path: self.name.clone(),
                        source: Box::new(error),
                    }
                } else {
                    // Unreachable or failing service: worth another try later.
                    object_store::Error::Generic {
                        store: STORE_NAME,
                        source: Box::new(error),
                    }
                })
            }
        }
    }
}

/// Whether a listing failed because the container does not exist. object_store reports a failed
/// listing as a generic error that carries the service's answer, whose error code is documented.
fn container_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("ContainerNotFound")
}

impl fmt::Display for ContainerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MicrosoftAzure(account={}, container={})",
            self.inner.endpoint.account, self.inner.name
        )
    }
}

/// A stream that first makes sure the container exists.
fn after_ready<T: Send + 'static>(
    inner: Arc<ContainerInner>,
    then: impl FnOnce(&MicrosoftAzure) -> BoxStream<'static, object_store::Result<T>> + Send + 'static,
) -> BoxStream<'static, object_store::Result<T>> {
    stream::once(async move {
        match inner.ready().await {
            Ok(()) => then(&inner.inner),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    })
    .flatten()
    .boxed()
}

#[async_trait]
impl ObjectStore for ContainerStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.ready().await?;
        self.inner.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.ready().await?;
        self.inner.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.ready().await?;
        self.inner.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.ready().await?;
        self.inner.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        after_ready(self.inner.clone(), move |s| s.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = prefix.cloned();
        after_ready(self.inner.clone(), move |s| s.list(prefix.as_ref()))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = prefix.cloned();
        let offset = offset.clone();
        after_ready(self.inner.clone(), move |s| {
            let after = offset.clone();
            // The emulator ignores the service's startFrom: filter here too, which costs nothing
            // where the service already did.
            s.list_with_offset(prefix.as_ref(), &offset)
                .try_filter(move |meta| futures::future::ready(meta.location > after))
                .boxed()
        })
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.ready().await?;
        self.inner.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.ready().await?;
        self.inner.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl MultipartStore for ContainerStore {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.inner.ready().await?;
        self.inner.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.inner.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.inner.inner.abort_multipart(path, id).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{EMULATOR_ACCOUNT, EMULATOR_KEY};
    use super::*;

    #[test]
    fn shared_key_signs_the_documented_string() {
        // The signature of a fixed request, computed independently with Python's hmac module
        // over the string Microsoft documents for Create Container.
        let url =
            Url::parse("http://127.0.0.1:10000/devstoreaccount1/jobs?restype=container").unwrap();
        let auth = shared_key(
            EMULATOR_ACCOUNT,
            EMULATOR_KEY,
            &url,
            "Mon, 01 Jan 2024 00:00:00 GMT",
        )
        .unwrap();
        assert_eq!(
            auth,
            format!("SharedKey {EMULATOR_ACCOUNT}:{}", EXPECTED_SIGNATURE)
        );
    }

    const EXPECTED_SIGNATURE: &str = "4UHqH475KPHC2wBiRFbyjORGCZsJh1H233fVtqw2Y4s=";
}
