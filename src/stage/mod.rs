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

use crate::job::{FailureRecord, JobId, JobState, Status, now_secs, paths};
use crate::queue::Queue;
use crate::settings::Settings;
use crate::store::Store;

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
}

/// A stage failure, classified where it happens.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Retrying may help (storage hiccup, a killed ffmpeg, a busy queue).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad message, missing job, unusable style, corrupt source).
    #[error("{0}")]
    Permanent(String),
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_transient() {
            StageError::Transient(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}

impl From<crate::queue::QueueError> for StageError {
    fn from(e: crate::queue::QueueError) -> Self {
        if e.is_transient() {
            StageError::Transient(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}

impl Context {
    /// Turns a stage result into an outcome: transient failures are retried with backoff until the
    /// last allowed delivery, where they become permanent so that the job fails with the reason
    /// instead of the message vanishing into the dead-letter queue unexplained.
    pub fn outcome(
        &self,
        result: Result<(), StageError>,
        delivery_count: u32,
        what: &str,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Complete,
            Err(StageError::Transient(reason)) if delivery_count < self.max_delivery_count => {
                Outcome::Retry {
                    delay: self.settings.retry.delay(delivery_count),
                    reason,
                }
            }
            Err(StageError::Transient(reason)) => Outcome::DeadLetter {
                reason: "RetriesExhausted".into(),
                description: format!(
                    "{what} failed on all {delivery_count} attempts; last error: {reason}"
                ),
            },
            Err(StageError::Permanent(reason)) => Outcome::DeadLetter {
                reason: "PermanentFailure".into(),
                description: format!("{what}: {reason}"),
            },
        }
    }

    /// Records that `batch` of `job` failed for good and marks the job failed with the reason.
    pub async fn fail_batch(
        &self,
        job: &JobId,
        source: &str,
        batch: Option<u32>,
        total: u32,
        reason: &str,
    ) {
        let record = FailureRecord {
            batch: batch.unwrap_or(u32::MAX),
            reason: reason.to_owned(),
            at: now_secs(),
        };
        let path = match batch {
            Some(b) => paths::failed(job, b),
            None => format!("{}/stitch.json", paths::failed_dir(job)),
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
    }
}
