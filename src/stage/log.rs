//! Per-job logs: every line a stage logs about a job goes to `tracing` and is also kept, then
//! written to `logs/<job>/<name>.log` in the log store, so a failed batch can be read without the
//! machine it ran on.

use std::fmt::Write as _;

use crate::job::{JobId, paths};
use crate::store::Store;

/// Lines about one job from one stage run.
#[derive(Debug)]
pub struct JobLog {
    job: JobId,
    name: String,
    text: String,
}

impl JobLog {
    /// A log for `job`, written as `logs/<job>/<name>.log`.
    pub fn new(job: &JobId, name: impl Into<String>) -> Self {
        Self {
            job: job.clone(),
            name: name.into(),
            text: String::new(),
        }
    }

    /// Logs an informational line.
    pub fn info(&mut self, line: impl AsRef<str>) {
        tracing::info!(job = %self.job, stage = %self.name, "{}", line.as_ref());
        self.push("INFO", line.as_ref());
    }

    /// Logs a warning.
    pub fn warn(&mut self, line: impl AsRef<str>) {
        tracing::warn!(job = %self.job, stage = %self.name, "{}", line.as_ref());
        self.push("WARN", line.as_ref());
    }

    fn push(&mut self, level: &str, line: &str) {
        let now = crate::job::now_secs();
        let _ = writeln!(self.text, "{now:.3} {level} {line}");
    }

    /// Writes the log to the store; a failure to write logs never fails the work itself.
    pub async fn flush(&self, logs: &Store) {
        if let Err(e) = logs
            .put(&paths::log(&self.job, &self.name), self.text.clone())
            .await
        {
            tracing::warn!(job = %self.job, error = %e, "cannot write the job log");
        }
    }
}
