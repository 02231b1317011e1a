//! The `splitter` function: Event Grid `BlobCreated` for an upload under `input/<style>/` in, a
//! planned job and its first batch messages out.
//!
//! Duplicates and order. Event Grid delivers at least once and in no particular order:
//! - the job id comes from the content's hash, so any event for the same bytes finds the same
//!   job (the splitter only re-posts batches that are not done, which workers absorb);
//! - an event whose id was handled before is skipped cheaply: a create-only marker
//!   `jobs/events/<hash of the id>.json` is written once the job is planned (never before, so a
//!   failure half-way is retried by Event Grid and not mistaken for done);
//! - an event announcing an older version of the blob (its `data.eTag` differs from the blob's
//!   ETag now) is skipped: the event of the version now stored plans that one, so an old event
//!   arriving late neither re-reads the file nor starts a second job.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use stylefleet::job::{JobId, now_secs};
use stylefleet::stage::split::{SplitOutcome, split, style_for_input};
use stylefleet::stage::{Context, StageError};

use crate::event::{Decision, Event, EventError, Layout, decide, normalize_etag, parse_events};
use crate::protocol::{Invocation, InvocationResponse, RequestError};

/// The trigger binding's name in `splitter/function.json`.
pub const BINDING: &str = "event";

/// Why a splitter invocation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SplitterError {
    /// The request or its event is malformed: answered 400, nothing done.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// An event does not have the shape its type promises: answered 400, nothing done.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Planning failed in a way that may pass: answered 500, so Event Grid retries.
    #[error("event {event}: {reason}")]
    Transient {
        /// The event id.
        event: String,
        /// What failed.
        reason: String,
    },
}

/// The marker that says event `id` was handled: `jobs/events/<sha256(id), 32 hex>.json` (event
/// ids are arbitrary text; the hash keeps them path-safe).
pub fn event_marker(id: &str) -> String {
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("jobs/events/{hex}.json")
}

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event id.
    pub event: String,
    /// The input it announced.
    pub path: String,
    /// The job it planned or found.
    pub job: JobId,
    /// When it was handled (seconds since the epoch).
    pub at: f64,
}

/// Handles one invocation: parses and decides every event first (a malformed one refuses the
/// whole request before anything is done), then acts on each in turn.
pub async fn handle(
    ctx: &Context,
    layout: &Layout,
    body: &[u8],
) -> Result<InvocationResponse, SplitterError> {
    let invocation = Invocation::parse(body)?;
    let events = parse_events(invocation.trigger(BINDING)?)?;
    let decisions = events
        .iter()
        .map(|e| decide(e, layout))
        .collect::<Result<Vec<_>, _>>()?;
    let mut response = InvocationResponse::default();
    let mut summary = Vec::with_capacity(events.len());
    for (event, decision) in events.iter().zip(decisions) {
        match decision {
            Decision::Validate { code } => {
                response.log(format!("event {}: subscription validation", event.id));
                response.return_value = json!({ "validationResponse": code });
                return Ok(response);
            }
            Decision::Ignore { reason } => {
                response.log(format!("ignored {reason}"));
                summary.push(json!({"id": event.id, "action": "ignored", "reason": reason}));
            }
            Decision::Split { path, etag } => {
                let done = split_one(ctx, event, &path, etag.as_deref())
                    .await
                    .map_err(|reason| SplitterError::Transient {
                        event: event.id.clone(),
                        reason,
                    })?;
                response.log(format!("event {} ({path}): {}", event.id, done.describe()));
                summary.push(done.to_json(&event.id, &path));
            }
        }
    }
    response.return_value = json!({ "events": summary });
    Ok(response)
}

/// What the splitter did with one upload event.
#[derive(Debug, Clone, PartialEq)]
enum Handled {
    /// The stage ran (planned a new job, found an existing one, refused the input, or found it
    /// done).
    Split(SplitOutcome),
    /// This event id was handled before.
    Duplicate(JobId),
    /// The event announces a version that is no longer stored.
    Stale {
        /// The ETag the event carries.
        announced: String,
        /// The ETag stored now.
        current: String,
    },
    /// Nothing to do, and why (the blob is gone, or the input cannot be a job).
    Skipped(String),
}

impl Handled {
    fn describe(&self) -> String {
        match self {
            Handled::Split(SplitOutcome::Planned {
                job,
                batches,
                posted,
                created: true,
            }) => format!("planned job {job}: {batches} batches, posted {posted}"),
            Handled::Split(SplitOutcome::Planned { job, posted, .. }) => {
                format!("job {job} exists; re-posted {posted} batches not done yet")
            }
            Handled::Split(SplitOutcome::Rejected { job, reason }) => {
                format!("job {job} refused the input: {reason}")
            }
            Handled::Split(SplitOutcome::Done { job }) => format!("job {job} is already done"),
            Handled::Duplicate(job) => format!("already handled (job {job})"),
            Handled::Stale { announced, current } => format!(
                "stale: the event announces version {announced} but {current} is stored; its own event plans it"
            ),
            Handled::Skipped(reason) => format!("skipped: {reason}"),
        }
    }

    fn to_json(&self, id: &str, path: &str) -> Value {
        let (action, job) = match self {
            Handled::Split(SplitOutcome::Planned {
                created: true, job, ..
            }) => ("planned", Some(job)),
            Handled::Split(SplitOutcome::Planned { job, .. }) => ("existing", Some(job)),
            Handled::Split(SplitOutcome::Rejected { job, .. }) => ("rejected", Some(job)),
            Handled::Split(SplitOutcome::Done { job }) => ("done", Some(job)),
            Handled::Duplicate(job) => ("duplicate", Some(job)),
            Handled::Stale { .. } => ("stale", None),
            Handled::Skipped(_) => ("skipped", None),
        };
        json!({
            "id": id,
            "path": path,
            "action": action,
            "job": job.map(JobId::as_str),
            "detail": self.describe(),
        })
    }
}

/// Plans the job for one upload event; `Err` is a transient failure (Event Grid retries).
async fn split_one(
    ctx: &Context,
    event: &Event,
    path: &str,
    etag: Option<&str>,
) -> Result<Handled, String> {
    let marker = event_marker(&event.id);
    let transient = |e: stylefleet::store::StoreError| e.to_string();
    match ctx.store.get_json::<EventRecord>(&marker).await {
        Ok(Some(record)) => return Ok(Handled::Duplicate(record.job)),
        Ok(None) => {}
        // A marker that does not parse only costs a re-plan, which is idempotent.
        Err(e) if !e.is_transient() => {
            tracing::warn!(event = %event.id, error = %e, "unreadable event marker; planning again");
        }
        Err(e) => return Err(transient(e)),
    }
    if let Some(announced) = etag {
        match ctx.store.head(path).await.map_err(transient)? {
            None => return Ok(Handled::Skipped(format!("{path} no longer exists"))),
            Some(meta) => {
                if let Some(current) = meta.e_tag.as_deref().map(normalize_etag)
                    && current != announced
                {
                    return Ok(Handled::Stale {
                        announced: announced.to_owned(),
                        current,
                    });
                }
            }
        }
    }
    let style = match style_for_input(ctx, path).await {
        Ok(style) => style,
        Err(e @ StageError::Permanent(_)) => return Ok(Handled::Skipped(e.reason())),
        Err(e @ StageError::Transient(_)) => return Err(e.reason()),
    };
    let outcome = match split(ctx, path, &style).await {
        Ok(outcome) => outcome,
        Err(e @ StageError::Permanent(_)) => return Ok(Handled::Skipped(e.reason())),
        Err(e @ StageError::Transient(_)) => return Err(e.reason()),
    };
    let record = EventRecord {
        event: event.id.clone(),
        path: path.to_owned(),
        job: outcome.job().clone(),
        at: now_secs(),
    };
    // Create-only: a concurrent duplicate may have written it first, which is the same record.
    ctx.store
        .put_json_create(&marker, &record)
        .await
        .map_err(transient)?;
    Ok(Handled::Split(outcome))
}

#[cfg(test)]
mod tests {
    use super::event_marker;

    #[test]
    fn markers_are_path_safe_and_stable() {
        let m = event_marker("a/b?c");
        assert!(m.starts_with("jobs/events/"));
        assert_eq!(m.len(), "jobs/events/".len() + 32 + ".json".len());
        assert_eq!(m, event_marker("a/b?c"));
        assert_ne!(m, event_marker("a/b?d"));
    }
}
