//! Azure Blob Storage through object_store's Azure backend: which URLs name a store, how the
//! backend is configured, and the two stores built from them.
//!
//! # Store URLs
//!
//! | URL | the store |
//! |---|---|
//! | `az://<container>` (also `azure://`, `abfs[s]://`) | one container; account and credentials from the environment |
//! | `https://<account>.blob.core.windows.net/<container>` | one container |
//! | `https://<account>.blob.core.windows.net` | the account: each top-level folder of the layout is a container (`input/`, `output/`, `styles/`, `jobs/`, `logs/`) |
//! | `http://<host>:<port>/<account>[/<container>]` | a path-style endpoint (the Azurite emulator): the same two forms |
//!
//! In a one-container store the layout lives inside that container. In an account store the first
//! segment of every path names the container and the rest is the blob name, which is what the
//! deployment creates and what Event Grid reports (`/containers/input/blobs/<style>/<name>`).
//!
//! # Configuration
//!
//! Everything else comes from the environment with object_store's own conventions, read exactly as
//! [`MicrosoftAzureBuilder::from_env`] reads them: `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_CLIENT_ID` (managed or workload identity),
//! `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_USE_AZURE_CLI`, and for the emulator
//! `AZURE_STORAGE_USE_EMULATOR=true` with `AZURITE_BLOB_STORAGE_URL`. A path-style URL names its
//! endpoint itself and wins over the emulator variables; the emulator's well-known account
//! `devstoreaccount1` gets its well-known key unless a key is set.
//!
//! # Retries and timeouts
//!
//! Each request is retried by object_store on connection failures, timeouts, throttling (429) and
//! server errors (5xx): exponential backoff with jitter from [`RETRY_FIRST`] up to [`RETRY_CAP`],
//! at most [`RETRY_ATTEMPTS`] retries within [`RETRY_WINDOW`]. That absorbs a blip of a few seconds
//! without the message in hand being redelivered; object_store logs every retry at `info` (target
//! `object_store::client::retry`) with the backoff it chose. A longer outage surfaces as a
//! [transient](super::StoreError::is_transient) error, and the consume loop abandons the
//! message with its own, longer backoff. Connecting gives up after [`CONNECT_TIMEOUT`]; a whole
//! request (an upload of a finished video included) after [`REQUEST_TIMEOUT`]. The object_store
//! variables `AZURE_TIMEOUT` and `AZURE_CONNECT_TIMEOUT` (e.g. `30s`) override the two timeouts.
//!
//! # Missing containers
//!
//! Before its first operation, each container is looked up (one listing of at most one blob). A
//! missing one is created with the store's credential (the emulator's key may; a deployed worker's
//! identity usually may not); when creation is refused, the operation fails with a message that
//! names the container and the account and is not retried. A container whose listing is refused is
//! assumed to exist: an identity may write where it may not list, and the operation itself then
//! reports what it may not do.
//!
//! # Layout
//!
//! - this module: the retry and timeout [`Options`] and the `open_*` functions.
//! - `url` (private): what a store URL names, and the endpoint configured from it and the
//!   environment.
//! - `container`: [`ContainerStore`], which creates its container when missing (a hand-signed
//!   `Create Container` request: object_store has none).
//! - `account`: [`AccountStore`], a whole account whose top-level folders are containers.
//! - [`sas`]: short-lived single-blob URLs for people outside the fleet.

mod account;
mod container;
pub mod sas;
mod url;

pub use account::AccountStore;
pub use container::ContainerStore;

use std::sync::Arc;
use std::time::Duration;

use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use super::StoreError;
use url::Target;

/// The account of the Azurite emulator (and of the storage emulator before it).
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// The emulator account's well-known key, published by Microsoft; it opens nothing but a local
/// emulator.
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The containers of an account store: the top-level folders of the storage layout.
pub const LAYOUT_CONTAINERS: [&str; 5] = ["input", "output", "styles", "jobs", "logs"];

/// The first retry waits about this long.
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// No single retry waits longer than this.
pub const RETRY_CAP: Duration = Duration::from_secs(8);
/// Retries of one request, at most.
pub const RETRY_ATTEMPTS: usize = 8;
/// No retry starts this long after the first attempt.
pub const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Establishing a connection gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request, its body included, gives up after this long: an upload of a finished video of a
/// few GiB must fit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// How requests are retried and timed out; [`Options::default`] is what every command uses (see
/// the module docs), tests shorten it.
#[derive(Debug, Clone)]
pub struct Options {
    /// object_store's per-request retry policy.
    pub retry: RetryConfig,
    /// Connect timeout for every request.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry: RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: RETRY_FIRST,
                    max_backoff: RETRY_CAP,
                    base: 2.0,
                },
                max_retries: RETRY_ATTEMPTS,
                retry_timeout: RETRY_WINDOW,
            },
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// Opens an Azure store from a URL (see the module docs for the forms), configured from the
/// environment. Nothing is contacted yet: containers are checked before their first operation.
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_store_with(url, &Options::default())
}

/// [`open_store`] with other retries and timeouts.
pub fn open_store_with(url: &str, options: &Options) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let target = Target::parse(url, options)?;
    Ok(match target.container.clone() {
        Some(container) => Arc::new(target.endpoint.container(&container, url)?),
        None => Arc::new(AccountStore::new(target.endpoint)),
    })
}

/// Opens the one-container store `url` names (`az://<container>`, `.../<account>/<container>`),
/// as a type that also offers object_store's multipart API.
pub fn open_container(url: &str) -> Result<ContainerStore, StoreError> {
    open_container_with(url, &Options::default())
}

/// [`open_container`] with other retries and timeouts.
pub fn open_container_with(url: &str, options: &Options) -> Result<ContainerStore, StoreError> {
    let target = Target::parse(url, options)?;
    match target.container {
        Some(container) => target.endpoint.container(&container, url),
        None => Err(config(url, "the URL names an account, not a container")),
    }
}

fn config(spec: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Config {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (url, why) in [
            ("https://acct.blob.core.windows.net/jobs/a", "not a folder"),
            ("http://127.0.0.1:10000", "must name the account"),
            ("ftp://host/x", "unknown scheme"),
            (
                "https://acct.blob.core.windows.net/Jobs",
                "not a container name",
            ),
        ] {
            let err = open_store(url).unwrap_err();
            assert!(err.to_string().contains(why), "{url}: {err}");
            assert!(!err.is_transient(), "{url}");
        }
    }
}
