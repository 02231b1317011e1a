//! The three stages of a job, independent of where they run: [`split`] plans a job and posts its
//! batches, [`style`] (behind the `style` feature, since it links Candle) styles one batch, and
//! [`aggregate`] stitches the output. Each takes a [`Context`] and returns an [`Outcome`] that the
//! consume loop in [`crate::consume`] turns into queue settlement.

pub mod aggregate;
pub mod log;
pub mod split;
#[cfg(feature = "style")]
pub mod style;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::job::{FailureRecord, JobId, JobState, Manifest, Status, now_secs, paths};
use crate::queue::Queue;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

pub use log::JobLog;

/// What every stage works with.
#[derive(Debug, Clone)]
pub struct Context {
    /// Blob storage for inputs, jobs and outputs.
    pub store: Store,
    /// Blob storage for logs (the same store locally; the system account on Azure).
    pub logs: Store,
    /// The work queues.
    pub queue: Arc<dyn Queue>,
    /// Settings for planning, encoding and retries.
    pub settings: Settings,
    /// The queue's `max_delivery_count`: the attempt that reaches it is the last.
    pub max_delivery_count: u32,
    /// Local scratch folder for decoded sources and chunks.
    pub scratch: PathBuf,
    /// Who is working (host and pid), recorded in done markers and logs.
    pub worker_name: String,
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done (or already done): remove the message.
    Complete,
    /// Failed in a way that may pass: release it for redelivery after the delay.
    Retry {
        /// Why.
        reason: String,
        /// When to try again.
        delay: Duration,
    },
    /// Failed for good: dead-letter with this reason.
    DeadLetter {
        /// Short machine-readable reason.
        reason: String,
        /// Detail for people.
        description: String,
    },
    /// Not worked on, and not a failure: release it at once for another consumer (a worker that
    /// is shutting down lets go of a batch still waiting for the device).
    Release {
        /// Why.
        reason: String,
    },
}

/// A boxed error kept as the source of a [`StageError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stage failure, classified where it happens: retrying a [`Transient`](Self::Transient) one may
/// help; a [`Permanent`](Self::Permanent) one is dead-lettered on its first delivery.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Retrying may help (storage hiccup, a killed ffmpeg, a busy queue).
    #[error(transparent)]
    Transient(Failure),
    /// Retrying cannot help (bad message, missing job, unusable style, corrupt source, an output
    /// path that cannot be written).
    #[error(transparent)]
    Permanent(Failure),
}

/// What failed, and the error behind it.
#[derive(Debug)]
pub struct Failure {
    /// What was being done, in words; `None` when the source says it all.
    context: Option<String>,
    /// The cause, kept for callers and for the reason shown to users.
    source: Option<BoxError>,
}

impl Failure {
    /// A failure of `context` caused by `source`.
    pub fn new(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Failure {
            context: Some(context.into()),
            source: Some(source.into()),
        }
    }

    /// A failure that `source` describes by itself.
    pub fn of(source: impl Into<BoxError>) -> Self {
        Failure {
            context: None,
            source: Some(source.into()),
        }
    }

    /// A failure described by `context` alone.
    pub fn msg(context: impl Into<String>) -> Self {
        Failure {
            context: Some(context.into()),
            source: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.context, &self.source) {
            (Some(context), _) => f.write_str(context),
            (None, Some(source)) => source.fmt(f),
            (None, None) => f.write_str("unknown failure"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match (&self.context, &self.source) {
            (Some(_), Some(source)) => Some(source.as_ref()),
            // Display already printed the source: its own cause comes next.
            (None, Some(source)) => source.source(),
            _ => None,
        }
    }
}

impl StageError {
    /// A transient failure described by `context` alone.
    pub fn transient(context: impl Into<String>) -> Self {
        StageError::Transient(Failure::msg(context))
    }

    /// A permanent failure described by `context` alone.
    pub fn permanent(context: impl Into<String>) -> Self {
        StageError::Permanent(Failure::msg(context))
    }

    /// A failure of `step` caused by a media error, classified by [`MediaError::is_transient`]:
    /// ffmpeg refusing the same bytes twice is not worth a second attempt; a killed ffmpeg is.
    ///
    /// [`MediaError::is_transient`]: crate::media::MediaError::is_transient
    pub fn media(step: impl Into<String>, error: crate::media::MediaError) -> Self {
        let transient = error.is_transient();
        let failure = Failure::new(step, error);
        if transient {
            StageError::Transient(failure)
        } else {
            StageError::Permanent(failure)
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, StageError::Transient(_))
    }

    /// The whole reason: the context followed by every source, `: `-separated (what users see in
    /// `status`, dead letters and the CLI).
    pub fn reason(&self) -> String {
        crate::lifecycle::report(self)
    }
}

impl From<crate::media::MediaError> for StageError {
    fn from(e: crate::media::MediaError) -> Self {
        StageError::media("ffmpeg", e)
    }
}

impl From<crate::fault::InjectedFault> for StageError {
    fn from(e: crate::fault::InjectedFault) -> Self {
        if e.permanent {
            StageError::Permanent(Failure::of(e))
        } else {
            StageError::Transient(Failure::of(e))
        }
    }
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        let transient = e.is_transient();
        let failure = Failure::of(e);
        if transient {
            StageError::Transient(failure)
        } else {
            StageError::Permanent(failure)
        }
    }
}

impl From<crate::queue::QueueError> for StageError {
    fn from(e: crate::queue::QueueError) -> Self {
        let transient = e.is_transient();
        let failure = Failure::of(e);
        if transient {
            StageError::Transient(failure)
        } else {
            StageError::Permanent(failure)
        }
    }
}

impl Context {
    /// The job's source, exactly the version its plan pinned, as a local file (from the shared
    /// scratch cache, fetched once per content).
    pub async fn pinned_source(&self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let (_, source) = self
            .store
            .fetch_pinned(
                &manifest.source.path,
                Some(&manifest.source.fingerprint()),
                &self.scratch.join("sources"),
                manifest.source.extension(),
            )
            .await?;
        Ok(source)
    }

    /// Turns a stage result into an outcome: transient failures are retried with backoff until the
    /// last allowed delivery, where they become permanent so that the job fails with the reason
    /// instead of the message vanishing into the dead-letter queue unexplained; permanent ones are
    /// dead-lettered at once.
    pub fn outcome(
        &self,
        result: Result<(), StageError>,
        delivery_count: u32,
        what: &str,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Complete,
            Err(e @ StageError::Transient(_)) if delivery_count < self.max_delivery_count => {
                Outcome::Retry {
                    delay: self.settings.retry.delay(delivery_count),
                    reason: e.reason(),
                }
            }
            Err(e @ StageError::Transient(_)) => Outcome::DeadLetter {
                reason: "RetriesExhausted".into(),
                description: format!(
                    "{what} failed on all {delivery_count} attempts; last error: {}",
                    e.reason()
                ),
            },
            Err(e @ StageError::Permanent(_)) => Outcome::DeadLetter {
                reason: "PermanentFailure".into(),
                description: format!("{what}: {}", e.reason()),
            },
        }
    }

    /// Records that `batch` of `job` (the stitch when `None`) failed for good and marks the job
    /// failed with the reason. A job that is already done stays done: a late failure of a
    /// duplicate delivery never overwrites its status.
    pub async fn fail_batch(
        &self,
        job: &JobId,
        source: &str,
        batch: Option<u32>,
        total: u32,
        reason: &str,
    ) {
        let already_failed = match self.store.get_json::<Status>(&paths::status(job)).await {
            Ok(Some(status)) if status.state == JobState::Done => {
                tracing::warn!(%job, ?batch, %reason, "a duplicate failed after the job was done; ignored");
                return;
            }
            Ok(Some(status)) => status.state == JobState::Failed,
            _ => false,
        };
        let record = FailureRecord {
            batch: batch.unwrap_or(u32::MAX),
            reason: reason.to_owned(),
            at: now_secs(),
        };
        let path = match batch {
            Some(b) => paths::failed(job, b),
            None => paths::failed_stitch(job),
        };
        if let Err(e) = self.store.put_json(&path, &record).await {
            tracing::warn!(%job, error = %e, "cannot record the failure");
        }
        let status = Status {
            job: job.clone(),
            source: source.to_owned(),
            state: JobState::Failed,
            reason: Some(reason.to_owned()),
            batches_total: total,
            output: None,
            timings: Default::default(),
            updated_at: now_secs(),
        };
        if let Err(e) = self.store.put_json(&paths::status(job), &status).await {
            tracing::warn!(%job, error = %e, "cannot write the failed status");
        }
        if !already_failed {
            crate::telemetry::metrics::job(crate::telemetry::metrics::JobEvent::Failed);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::MediaError;

    fn exit(code: i32) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        std::process::ExitStatus::from_raw(code << 8)
    }

    fn signalled(signal: i32) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        std::process::ExitStatus::from_raw(signal)
    }

    #[test]
    fn ffmpeg_failures_are_classified_where_they_happen() {
        let refused = MediaError::Ffmpeg {
            step: "decode",
            status: exit(1),
            stderr: "Invalid data found when processing input".into(),
        };
        let e = StageError::media("decoding frames 0..16", refused);
        assert!(!e.is_transient());
        assert_eq!(
            e.reason(),
            "decoding frames 0..16: ffmpeg failed to decode (exit status: 1): Invalid data found when processing input"
        );
        let killed = MediaError::Ffmpeg {
            step: "encode",
            status: signalled(9),
            stderr: String::new(),
        };
        assert!(StageError::media("encoding", killed).is_transient());
    }

    #[test]
    fn reasons_keep_every_source_once() {
        let store = crate::store::StoreError::Io {
            context: "cannot write chunk".into(),
            source: std::io::Error::other("disk full"),
        };
        let e = StageError::from(store);
        assert!(e.is_transient());
        assert_eq!(e.reason(), "cannot write chunk: disk full");
        assert_eq!(StageError::permanent("bad").reason(), "bad");
    }
}
