//! What a job looks like now, derived from its markers (see [`crate::job`]) and the dead-letter
//! queues: the basis of `stylefleet status` and of the progress that `process` and `up` show.

use serde::Serialize;

use crate::job::{FailureRecord, JobId, JobState, Manifest, Status, paths};
use crate::message::{BatchMessage, StitchMessage};
use crate::queue::{BATCHES, DeadLetter, Queue, STITCH};
use crate::store::Store;

/// A job as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job.
    pub job: JobId,
    /// Source path.
    pub source: String,
    /// Derived state.
    pub state: JobState,
    /// Batches done.
    pub batches_done: u32,
    /// Batches planned.
    pub batches_total: u32,
    /// Frames done.
    pub frames_done: u64,
    /// Frames planned.
    pub frames_total: u64,
    /// Frames per second since the job was planned (while running) or over its whole run.
    pub fps: f64,
    /// Why it failed.
    pub reason: Option<String>,
    /// The output, once written.
    pub output: Option<String>,
    /// Stage timings from the status snapshot.
    pub timings: std::collections::BTreeMap<String, f64>,
}

/// Errors while inspecting.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// No such job.
    #[error("no job {0}")]
    NoSuchJob(String),
}

/// Every job id in the store.
pub async fn job_ids(store: &Store) -> Result<Vec<JobId>, InspectError> {
    let mut ids: Vec<JobId> = store
        .list("jobs")
        .await?
        .iter()
        .filter_map(|m| {
            m.location
                .parts()
                .nth(1)
                .and_then(|p| JobId::parse(p.as_ref()).ok())
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The job that a (dead-lettered) message body names, if it parses.
pub fn job_of_message(body: &[u8]) -> Option<(JobId, Option<u32>)> {
    if let Ok(m) = BatchMessage::parse(body) {
        return Some((m.job, Some(m.batch)));
    }
    StitchMessage::parse(body).ok().map(|m| (m.job, None))
}

/// Dead letters of both queues, grouped by the job they name.
pub async fn dead_letters_by_job(
    queue: &dyn Queue,
) -> Result<std::collections::HashMap<JobId, Vec<DeadLetter>>, InspectError> {
    let mut by_job: std::collections::HashMap<JobId, Vec<DeadLetter>> = Default::default();
    for name in [BATCHES, STITCH] {
        let mut from = 0;
        loop {
            let page = queue.peek_dead_letters(name, from, 256).await?;
            let Some(last) = page.last() else { break };
            from = last.sequence + 1;
            for dl in page {
                if let Some((job, _)) = job_of_message(&dl.body) {
                    by_job.entry(job).or_default().push(dl);
                }
            }
        }
    }
    Ok(by_job)
}

/// Derives the view of one job. `dead` are the job's dead letters, if the caller has them.
pub async fn view(
    store: &Store,
    job: &JobId,
    dead: &[DeadLetter],
) -> Result<JobView, InspectError> {
    let status = store.get_json::<Status>(&paths::status(job)).await?;
    if let Some(rejected) = store.get_json::<Status>(&paths::rejected(job)).await? {
        return Ok(JobView {
            job: job.clone(),
            source: rejected.source,
            state: JobState::Failed,
            batches_done: 0,
            batches_total: 0,
            frames_done: 0,
            frames_total: 0,
            fps: 0.0,
            reason: rejected.reason,
            output: None,
            timings: Default::default(),
        });
    }
    let Some(manifest) = store.get_json::<Manifest>(&paths::manifest(job)).await? else {
        return Err(InspectError::NoSuchJob(job.to_string()));
    };
    let mut done = std::collections::HashSet::new();
    let mut frames_done = 0;
    for meta in store.list(&paths::done_dir(job)).await? {
        if let Some(Ok(batch)) = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .map(str::parse::<u32>)
            && let Some(plan) = manifest.batches.iter().find(|b| b.index == batch)
        {
            done.insert(batch);
            frames_done += plan.len();
        }
    }
    let frames_total = manifest.probe.frames.len() as u64;
    let batches_total = manifest.batches.len() as u32;
    let batches_done = done.len() as u32;

    // A permanent failure counts only while its batch is still not done (a replay revives the job).
    let mut reason = None;
    for meta in store.list(&paths::failed_dir(job)).await? {
        let Some(record) = store
            .get_json::<FailureRecord>(meta.location.as_ref())
            .await?
        else {
            continue;
        };
        // A stitch failure stands until the job is done (a replay or a re-run clears it first).
        let stitch_failure = record.batch == u32::MAX;
        let still_failed = if stitch_failure {
            status.as_ref().is_none_or(|s| s.state != JobState::Done)
        } else {
            !done.contains(&record.batch)
        };
        if still_failed {
            reason = Some(record.reason);
        }
    }
    if reason.is_none() {
        let live = |dl: &&DeadLetter| {
            job_of_message(&dl.body).is_some_and(|(_, b)| b.is_none_or(|b| !done.contains(&b)))
        };
        if let Some(dl) = dead.iter().find(live) {
            reason = Some(format!("{}: {}", dl.info.reason, dl.info.description));
        }
    }
    let finished = status.as_ref().is_some_and(|s| s.state == JobState::Done);
    let state = if finished {
        JobState::Done
    } else if reason.is_some() {
        JobState::Failed
    } else if batches_done >= batches_total {
        JobState::Stitching
    } else if batches_done > 0 {
        JobState::Running
    } else {
        JobState::Queued
    };
    let elapsed = match &status {
        Some(s) if finished => s.timings.get("total").copied().unwrap_or(0.0),
        _ => crate::job::now_secs() - manifest.created_at,
    };
    let fps = if elapsed > 0.0 {
        frames_done as f64 / elapsed
    } else {
        0.0
    };
    Ok(JobView {
        job: job.clone(),
        source: manifest.source.path,
        state,
        batches_done,
        batches_total,
        frames_done,
        frames_total,
        fps,
        reason: if finished { None } else { reason },
        output: status.as_ref().and_then(|s| s.output.clone()),
        timings: status.map(|s| s.timings).unwrap_or_default(),
    })
}
