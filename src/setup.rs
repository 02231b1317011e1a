//! Building a stage [`Context`] from where things live. The command line, the Functions app and the
//! worker container all start here, so the three read the same settings the same way.
//!
//! Where things live is a [`Location`]: a data folder for the embedded default, or URLs of a blob
//! store, a log store and a queue. [`Location::from_env`] reads the variables the Azure deployment
//! sets (`STYLEFLEET_STORE`, `STYLEFLEET_LOG_STORE`, `STYLEFLEET_QUEUE`); a few more variables
//! shorten timings for tests and demos (`STYLEFLEET_LOCK_SECS`, `STYLEFLEET_MAX_DELIVERIES`,
//! `STYLEFLEET_RETRY_MIN_SECS`).

use std::path::PathBuf;
use std::time::Duration;

use crate::access::Account;
use crate::queue::{self, QueueError, sqlite::QueueConfig};
use crate::settings::Settings;
use crate::stage::Context;
use crate::store::{Store, StoreError};

/// The folder of the embedded default when nothing else is named.
pub const DEFAULT_DATA: &str = "stylefleet-data";

/// Where data and work live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Folder of the embedded default: the store, the queue database and scratch space unless
    /// named otherwise below.
    pub data: PathBuf,
    /// Blob store (a folder, `az://<container>`, `https://<account>.blob.core.windows.net[/<container>]`);
    /// `None`: `data`.
    pub store: Option<String>,
    /// Store for logs; `None`: the blob store.
    pub log_store: Option<String>,
    /// Queue (an SQLite file, or `servicebus://<namespace>.servicebus.windows.net`); `None`:
    /// `<data>/queue.sqlite`.
    pub queue: Option<String>,
    /// Local scratch space for sources, chunks and stitching; `None`: `<data>/scratch`.
    pub scratch: Option<PathBuf>,
}

impl Location {
    /// Everything in one local folder: the embedded default.
    pub fn embedded(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            store: None,
            log_store: None,
            queue: None,
            scratch: None,
        }
    }

    /// Reads `STYLEFLEET_DATA`, `STYLEFLEET_STORE`, `STYLEFLEET_LOG_STORE`, `STYLEFLEET_QUEUE` and
    /// `STYLEFLEET_SCRATCH`; unset or empty variables keep the defaults.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            data: var("STYLEFLEET_DATA").map_or_else(|| PathBuf::from(DEFAULT_DATA), PathBuf::from),
            store: var("STYLEFLEET_STORE"),
            log_store: var("STYLEFLEET_LOG_STORE"),
            queue: var("STYLEFLEET_QUEUE"),
            scratch: var("STYLEFLEET_SCRATCH").map(PathBuf::from),
        }
    }

    /// The same location with scratch space in `scratch`.
    pub fn with_scratch(mut self, scratch: impl Into<PathBuf>) -> Self {
        self.scratch = Some(scratch.into());
        self
    }

    /// The blob store's spec.
    pub fn store_spec(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| self.data.display().to_string())
    }

    /// The queue's spec.
    pub fn queue_spec(&self) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| self.data.join("queue.sqlite").display().to_string())
    }

    /// The scratch folder.
    pub fn scratch_dir(&self) -> PathBuf {
        self.scratch
            .clone()
            .unwrap_or_else(|| self.data.join("scratch"))
    }
}

/// Why a context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The blob store (or the log store) did not open.
    #[error("opening the store {spec}: {source}")]
    Store {
        /// The store as named.
        spec: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The queue did not open.
    #[error("opening the queue {spec}: {source}")]
    Queue {
        /// The queue as named.
        spec: String,
        /// The cause.
        #[source]
        source: QueueError,
    },
    /// An environment variable holds something unusable.
    #[error("{name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scratch folder cannot be created.
    #[error("creating the scratch folder {}: {source}", path.display())]
    Scratch {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `STYLEFLEET_IDENTITY` (or the matrix it is held to) is unusable.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// The blocking task that opens the queue stopped.
    #[error("the task opening the queue stopped: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A number of seconds from `name`, if set: positive, or zero where `zero_ok`.
fn env_secs(name: &'static str, zero_ok: bool) -> Result<Option<Duration>, SetupError> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (secs > 0.0 || (zero_ok && secs == 0.0)) => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        Ok(_) => Err(SetupError::Env {
            name,
            value,
            reason: "must be a positive number of seconds".into(),
        }),
        Err(e) => Err(SetupError::Env {
            name,
            value,
            reason: e.to_string(),
        }),
    }
}

/// Settings of the embedded queue; `STYLEFLEET_LOCK_SECS` and `STYLEFLEET_MAX_DELIVERIES` shorten
/// them (tests, demos).
pub fn queue_config_from_env() -> Result<QueueConfig, SetupError> {
    let mut config = QueueConfig::default();
    if let Some(lock) = env_secs("STYLEFLEET_LOCK_SECS", false)? {
        config.lock_duration = lock;
    }
    if let Some(n) = env_number("STYLEFLEET_MAX_DELIVERIES", 1u32)? {
        config.max_delivery_count = n;
    }
    Ok(config)
}

/// A number from `name`, if set, at least `min`.
fn env_number<T>(name: &'static str, min: T) -> Result<Option<T>, SetupError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    match value.parse::<T>() {
        Ok(n) if n >= min => Ok(Some(n)),
        Ok(_) => Err(SetupError::Env {
            name,
            value,
            reason: format!("must be at least {min}"),
        }),
        Err(e) => Err(SetupError::Env {
            name,
            value,
            reason: e.to_string(),
        }),
    }
}

/// `settings` with what the environment overrides, for processes that take no flags (the
/// Functions app): `STYLEFLEET_BATCH_FRAMES`, `STYLEFLEET_MODEL_BATCH`, `STYLEFLEET_MAX_BYTES`,
/// `STYLEFLEET_MAX_DURATION_SECS`, `STYLEFLEET_PLAN_WORKERS` (the workers a plan makes whole
/// rounds for), `STYLEFLEET_TEMPORAL` (`on`, `off` or a strength 0..1), and
/// the encoder of new jobs: `STYLEFLEET_CODEC` (`auto`, `libx264`, `h264_nvenc`),
/// `STYLEFLEET_PRESET` (an x264 preset) and `STYLEFLEET_CRF` (0..=51).
pub fn settings_from_env(mut settings: Settings) -> Result<Settings, SetupError> {
    if let Some(n) = env_number("STYLEFLEET_BATCH_FRAMES", 1u64)? {
        settings.batch_frames = n;
    }
    if let Some(n) = env_number("STYLEFLEET_MODEL_BATCH", 1u32)? {
        settings.model_batch = n;
    }
    if let Some(n) = env_number("STYLEFLEET_PLAN_WORKERS", 1u32)? {
        settings.plan_workers = n;
    }
    if let Some(n) = env_number("STYLEFLEET_MAX_BYTES", 1u64)? {
        settings.limits.max_bytes = n;
    }
    if let Some(n) = env_number("STYLEFLEET_MAX_QUEUED_PER_JOB", 1u32)? {
        settings.flood.max_queued_per_job = n;
    }
    if let Some(d) = env_secs("STYLEFLEET_MAX_DURATION_SECS", false)? {
        settings.limits.max_duration_s = d.as_secs_f64();
    }
    if let Ok(value) = std::env::var("STYLEFLEET_CODEC") {
        let codec = value
            .parse::<crate::media::Codec>()
            .map_err(|reason| SetupError::Env {
                name: "STYLEFLEET_CODEC",
                value,
                reason,
            })?;
        settings.encoder.codec = codec.as_str().into();
    }
    if let Ok(value) = std::env::var("STYLEFLEET_PRESET") {
        let preset = value
            .parse::<crate::media::Preset>()
            .map_err(|reason| SetupError::Env {
                name: "STYLEFLEET_PRESET",
                value,
                reason,
            })?;
        settings.encoder.preset = preset.as_str().into();
    }
    if let Some(crf) = env_number("STYLEFLEET_CRF", 0u8)? {
        if crf > crate::media::codec::MAX_CRF {
            return Err(SetupError::Env {
                name: "STYLEFLEET_CRF",
                value: crf.to_string(),
                reason: format!("must be at most {}", crate::media::codec::MAX_CRF),
            });
        }
        settings.encoder.crf = crf;
    }
    if let Ok(value) = std::env::var("STYLEFLEET_TEMPORAL") {
        settings.temporal =
            crate::temporal::TemporalSettings::parse_option(&value).map_err(|reason| {
                SetupError::Env {
                    name: "STYLEFLEET_TEMPORAL",
                    value,
                    reason,
                }
            })?;
    }
    Ok(settings)
}

/// Who is working: `$HOSTNAME:<pid>` (the replica name on Container Apps).
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// The top-level folders the CLI's `process` and the embedded fleet upload to create-only: the
/// inputs and style images they store, and the outputs their aggregator writes.
pub const CLI_UPLOADS: &[&str] = &["input", "styles", "output"];

/// The top-level folder the aggregator uploads to create-only.
pub const AGGREGATOR_UPLOADS: &[&str] = &["output"];

/// Removes what killed transfers left behind (temporary files in the scratch folder, staging in
/// the store under `staged_tops`, the top-level folders this process uploads to create-only) once
/// nothing has touched them for [`SWEEP_AGE`](crate::store::SWEEP_AGE). Every long-lived process
/// calls it at start; a failure is only logged.
pub async fn sweep_leftovers(ctx: &Context, staged_tops: &[&str]) {
    let age = crate::store::SWEEP_AGE;
    match crate::store::Store::sweep_scratch(&ctx.scratch, age).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed temporary files of killed transfers"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep the scratch folder"),
    }
    match ctx.store.sweep_staging(staged_tops, age).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staging of killed uploads"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep the store's staging"),
    }
}

/// Opens the stores and the queue `location` names and returns the context every stage takes.
/// `settings` plan and encode new jobs; `STYLEFLEET_RETRY_MIN_SECS` overrides the first retry
/// delay. With `STYLEFLEET_IDENTITY`, the stores and the queue refuse what that identity of the
/// deployment is not granted ([`crate::access`]).
pub async fn context(location: &Location, mut settings: Settings) -> Result<Context, SetupError> {
    let store_spec = location.store_spec();
    let store = Store::open(&store_spec).map_err(|source| SetupError::Store {
        spec: store_spec.clone(),
        source,
    })?;
    let logs = match &location.log_store {
        Some(spec) => Store::open(spec).map_err(|source| SetupError::Store {
            spec: spec.clone(),
            source,
        })?,
        None => store.clone(),
    };
    let config = queue_config_from_env()?;
    let max_delivery_count = config.max_delivery_count;
    let queue_spec = location.queue_spec();
    // Opening SQLite touches the disk (and may wait on a lock): keep it off the runtime.
    let queue = {
        let spec = queue_spec.clone();
        tokio::task::spawn_blocking(move || queue::open(&spec, config))
            .await
            .map_err(SetupError::Task)?
            .map_err(|source| SetupError::Queue {
                spec: queue_spec,
                source,
            })?
    };
    if let Some(min) = env_secs("STYLEFLEET_RETRY_MIN_SECS", true)? {
        settings.retry.min_delay = min;
    }
    // Tests hold each process to its identity's grants in the deployment (see `access`).
    let (store, logs, queue) = match crate::access::Guard::from_env()? {
        Some(guard) => {
            tracing::info!(
                identity = guard.who(),
                "holding this process to its access grants"
            );
            (
                guard.store(&store, Account::Data),
                guard.store(&logs, Account::System),
                guard.queue(queue),
            )
        }
        None => (store, logs, queue),
    };
    let scratch = location.scratch_dir();
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|source| SetupError::Scratch {
            path: scratch.clone(),
            source,
        })?;
    Ok(Context {
        store,
        logs,
        queue,
        settings,
        max_delivery_count,
        scratch,
        worker_name: worker_name(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_live_in_the_data_folder() {
        let location = Location::embedded("data");
        assert_eq!(location.store_spec(), "data");
        assert_eq!(location.queue_spec(), "data/queue.sqlite");
        assert_eq!(location.scratch_dir(), PathBuf::from("data/scratch"));
        let location = Location {
            store: Some("az://data".into()),
            queue: Some("servicebus://ns.servicebus.windows.net".into()),
            ..Location::embedded("data")
        }
        .with_scratch("/var/tmp/x");
        assert_eq!(location.store_spec(), "az://data");
        assert_eq!(
            location.queue_spec(),
            "servicebus://ns.servicebus.windows.net"
        );
        assert_eq!(location.scratch_dir(), PathBuf::from("/var/tmp/x"));
    }

    #[tokio::test]
    async fn context_opens_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&Location::embedded(dir.path()), Settings::default())
            .await
            .unwrap();
        assert!(ctx.scratch.is_dir());
        assert!(dir.path().join("queue.sqlite").exists());
        assert_eq!(ctx.queue.backlog(crate::queue::BATCHES).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_unopenable_store_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let location = Location {
            store: Some(file.display().to_string()),
            ..Location::embedded(dir.path())
        };
        let err = context(&location, Settings::default()).await.unwrap_err();
        assert!(matches!(err, SetupError::Store { .. }), "{err}");
        assert!(err.to_string().contains("a-file"), "{err}");
    }
}
