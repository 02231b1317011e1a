//! Dead-letter operations for operators: list, show, replay and purge, in bulk, with filters.
//!
//! Replay is safe: each matching message is re-sent to its queue with its original id and body,
//! and only then removed from the dead-letter queue; a crash in between leaves it in both places,
//! which the idempotent handlers absorb. Non-matching messages are released untouched.
//!
//! Replay revives the job: given the store, the failure record the message left
//! (`jobs/<job>/failed/...`) is removed before the message is re-sent, so the job shows its
//! progress again at once, and a new failure of the replayed work is recorded afresh.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::inspect::job_of_message;
use crate::job::paths;
use crate::queue::{BATCHES, DeadLetter, Delivery, OutgoingMessage, Queue, QueueError, STITCH};
use crate::store::{Store, StoreError};

/// Which dead letters an operation touches. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this queue (`batches` or `stitch`); both when `None`.
    pub queue: Option<String>,
    /// Only messages of this job.
    pub job: Option<String>,
    /// Only messages whose reason or description contains this text.
    pub reason: Option<String>,
    /// Only messages dead-lettered at least this long ago.
    pub older_than: Option<Duration>,
    /// Only this message id.
    pub id: Option<String>,
}

impl Filter {
    /// The queues this filter covers.
    pub fn queues(&self) -> Vec<String> {
        match &self.queue {
            Some(q) => vec![q.clone()],
            None => vec![BATCHES.to_owned(), STITCH.to_owned()],
        }
    }

    fn matches_parts(
        &self,
        id: &str,
        body: &[u8],
        reason: &str,
        description: &str,
        at: SystemTime,
    ) -> bool {
        if self.id.as_deref().is_some_and(|want| want != id) {
            return false;
        }
        if let Some(job) = &self.job {
            let named = job_of_message(body).map(|(j, _)| j.to_string());
            if named.as_deref() != Some(job.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.reason
            && !reason.contains(text.as_str())
            && !description.contains(text.as_str())
        {
            return false;
        }
        if let Some(age) = self.older_than
            && SystemTime::now().duration_since(at).unwrap_or_default() < age
        {
            return false;
        }
        true
    }

    /// Whether a listed dead letter matches.
    pub fn matches(&self, dl: &DeadLetter) -> bool {
        self.matches_parts(
            &dl.id,
            &dl.body,
            &dl.info.reason,
            &dl.info.description,
            dl.info.at,
        )
    }

    fn matches_delivery(&self, d: &Delivery) -> bool {
        match &d.dead_letter {
            Some(info) => {
                self.matches_parts(&d.id, &d.body, &info.reason, &info.description, info.at)
            }
            None => false,
        }
    }
}

/// A dead letter for display.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The queue.
    pub queue: String,
    /// Sequence number.
    pub sequence: i64,
    /// Message id.
    pub id: String,
    /// Reason.
    pub reason: String,
    /// Description.
    pub description: String,
    /// Deliveries before dead-lettering.
    pub delivery_count: u32,
    /// Seconds since it was dead-lettered.
    pub age_secs: u64,
    /// The body, as text.
    pub body: String,
}

impl From<DeadLetter> for Listed {
    fn from(dl: DeadLetter) -> Self {
        Listed {
            queue: dl.queue,
            sequence: dl.sequence,
            id: dl.id,
            reason: dl.info.reason,
            description: dl.info.description,
            delivery_count: dl.delivery_count,
            age_secs: SystemTime::now()
                .duration_since(dl.info.at)
                .unwrap_or_default()
                .as_secs(),
            body: String::from_utf8_lossy(&dl.body).into_owned(),
        }
    }
}

/// Every matching dead letter, without locking anything.
pub async fn list(queue: &dyn Queue, filter: &Filter) -> Result<Vec<Listed>, QueueError> {
    let mut out = Vec::new();
    for name in filter.queues() {
        let mut from = 0;
        loop {
            let page = queue.peek_dead_letters(&name, from, 256).await?;
            let Some(last) = page.last() else { break };
            from = last.sequence + 1;
            out.extend(
                page.into_iter()
                    .filter(|dl| filter.matches(dl))
                    .map(Listed::from),
            );
        }
    }
    Ok(out)
}

/// What a bulk operation did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BulkReport {
    /// Messages that matched.
    pub matched: u64,
    /// Messages re-sent (replay) or deleted (purge); zero in a dry run.
    pub acted: u64,
}

/// Errors of bulk operations.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store failed while clearing a failure record.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Removes the failure record a dead letter left for its job (the batch's, or the stitch's).
pub async fn clear_failure(store: &Store, body: &[u8]) -> Result<(), StoreError> {
    match job_of_message(body) {
        Some((job, Some(batch))) => store.delete(&paths::failed(&job, batch)).await,
        Some((job, None)) => store.delete(&paths::failed_stitch(&job)).await,
        None => Ok(()),
    }
}

/// Replays (re-sends then removes) or purges (removes) every matching dead letter. `progress` is
/// called after each matching message. With `dry_run`, only counts. With `store`, a replay first
/// clears the failure record of the message's job (see the module docs).
pub async fn bulk(
    queue: &dyn Queue,
    store: Option<&Store>,
    filter: &Filter,
    replay: bool,
    dry_run: bool,
    mut progress: impl FnMut(&Listed),
) -> Result<BulkReport, DlqError> {
    let mut report = BulkReport::default();
    if dry_run {
        for listed in list(queue, filter).await? {
            report.matched += 1;
            progress(&listed);
        }
        return Ok(report);
    }
    for name in filter.queues() {
        // Non-matching messages stay locked until the pass ends, so that each receive moves on to
        // messages not seen yet; they are all released at the end.
        let mut held = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let deliveries = queue
                .receive_dead_letters(&name, 64, Duration::from_millis(200))
                .await?;
            if deliveries.is_empty() {
                break;
            }
            let mut fresh = false;
            for d in deliveries {
                // Seen before: its lock expired during a long pass.
                let new = seen.insert(d.id.clone());
                fresh |= new;
                if !new || !filter.matches_delivery(&d) {
                    held.push(d);
                    continue;
                }
                report.matched += 1;
                if replay {
                    if let Some(store) = store {
                        clear_failure(store, &d.body).await?;
                    }
                    queue
                        .send(
                            &name,
                            vec![OutgoingMessage::new(d.id.clone(), d.body.clone())],
                        )
                        .await?;
                }
                queue.complete(&d).await?;
                report.acted += 1;
                progress(&Listed {
                    queue: name.clone(),
                    sequence: 0,
                    id: d.id.clone(),
                    reason: d
                        .dead_letter
                        .as_ref()
                        .map(|i| i.reason.clone())
                        .unwrap_or_default(),
                    description: d
                        .dead_letter
                        .as_ref()
                        .map(|i| i.description.clone())
                        .unwrap_or_default(),
                    delivery_count: d.delivery_count,
                    age_secs: 0,
                    body: String::from_utf8_lossy(&d.body).into_owned(),
                });
            }
            if !fresh {
                break;
            }
        }
        for d in held {
            // Lost locks are fine here: the message is simply visible again.
            let _ = queue.abandon(&d, None).await;
        }
    }
    Ok(report)
}
