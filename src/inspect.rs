//! What a job looks like now, derived from its markers (see [`crate::job`]) and the dead-letter
//! queues: the basis of `stylefleet status` and of the progress that `process` and `up` show.
//!
//! - [`view`]: one job's state and progress ([`view_timed`] with its throughput); [`views`]: every job, newest first, with
//!   [`JobState::Interrupted`] told apart (see [`mark_interrupted`]).
//! - [`detail`]: one job in full (its plan, each batch, its logs, the whole failure reason).
//! - [`resolve`]: a job id from the unique prefix a user typed.
//!
//! Throughput is measured over work time: the union of the intervals in which a batch of the job
//! was being worked on (from a worker's start on it to its done marker), so time in which the job
//! waited (a `process` interrupted and run again the next day) does not count.

use serde::Serialize;

use crate::job::{DoneMarker, FailureRecord, JobId, JobState, Manifest, Request, Status, paths};
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
    /// Frames per second of work time (see the module docs).
    pub fps: f64,
    /// Why it failed.
    pub reason: Option<String>,
    /// The output, once written.
    pub output: Option<String>,
    /// Stage timings from the status snapshot.
    pub timings: std::collections::BTreeMap<String, f64>,
    /// When the job was planned (or refused), seconds since the epoch.
    pub created_at: f64,
    /// The style as the user gave it (a style image by its file name).
    pub style: String,
    /// The input as the user named it: the file given to `process`, or the file's name under
    /// `input/`.
    pub input: String,
    /// The output as the user named it: the `-o` path of `process`, or the output in the store
    /// for the fleet's jobs (once known).
    pub named_output: Option<String>,
    /// Seconds in which some batch of the job was being worked on.
    pub work_secs: f64,
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
    /// A prefix that more than one job id starts with.
    #[error("{prefix} names {} jobs: {}; give more of the id", .candidates.len(), list_ids(.candidates))]
    Ambiguous {
        /// What was given.
        prefix: String,
        /// The jobs it could mean.
        candidates: Vec<JobId>,
    },
}

fn list_ids(ids: &[JobId]) -> String {
    ids.iter().map(JobId::as_str).collect::<Vec<_>>().join(", ")
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

/// Derives the view of one job, without its throughput (`fps` and `work_secs` are 0): what the
/// polling loops of `process` and `up` need, from listings alone. `dead` are the job's dead
/// letters, if the caller has them.
pub async fn view(
    store: &Store,
    job: &JobId,
    dead: &[DeadLetter],
) -> Result<JobView, InspectError> {
    view_of(store, job, dead, false).await
}

/// [`view`] with the throughput, which reads every done marker.
pub async fn view_timed(
    store: &Store,
    job: &JobId,
    dead: &[DeadLetter],
) -> Result<JobView, InspectError> {
    view_of(store, job, dead, true).await
}

async fn view_of(
    store: &Store,
    job: &JobId,
    dead: &[DeadLetter],
    timed: bool,
) -> Result<JobView, InspectError> {
    let status = store.get_json::<Status>(&paths::status(job)).await?;
    if store.exists(&paths::removing(job)).await? {
        // Half removed (see `crate::clean`): not a job any more.
        return Err(InspectError::NoSuchJob(job.to_string()));
    }
    let request = store
        .get_json::<Request>(&paths::request(job))
        .await
        .ok()
        .flatten();
    if let Some(rejected) = store.get_json::<Status>(&paths::rejected(job)).await? {
        return Ok(JobView {
            job: job.clone(),
            state: JobState::Failed,
            batches_done: 0,
            batches_total: 0,
            frames_done: 0,
            frames_total: 0,
            fps: 0.0,
            reason: rejected.reason,
            output: None,
            timings: Default::default(),
            created_at: rejected.updated_at,
            style: style_of_path(&rejected.source),
            input: input_name(request.as_ref(), &rejected.source),
            named_output: request.map(|r| r.output),
            work_secs: 0.0,
            source: rejected.source,
        });
    }
    let Some(manifest) = store.get_json::<Manifest>(&paths::manifest(job)).await? else {
        return Err(InspectError::NoSuchJob(job.to_string()));
    };
    let markers = done_markers(store, job, &manifest, timed).await?;
    let done: std::collections::HashSet<u32> = markers.iter().map(|m| m.batch).collect();
    let frames_done: u64 = manifest
        .batches
        .iter()
        .filter(|b| done.contains(&b.index))
        .map(|b| b.len())
        .sum();
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
    let work_secs = work_time(&markers);
    let fps = if work_secs > 0.0 {
        frames_done as f64 / work_secs
    } else {
        0.0
    };
    let output = status.as_ref().and_then(|s| s.output.clone());
    Ok(JobView {
        job: job.clone(),
        created_at: manifest.created_at,
        style: style_name(&manifest),
        input: input_name(request.as_ref(), &manifest.source.path),
        named_output: request.map(|r| r.output).or_else(|| output.clone()),
        work_secs,
        source: manifest.source.path,
        state,
        batches_done,
        batches_total,
        frames_done,
        frames_total,
        fps,
        reason: if finished { None } else { reason },
        output,
        timings: status.map(|s| s.timings).unwrap_or_default(),
    })
}

/// The done markers of a job's planned batches; with `read`, their contents (else, and for a
/// marker that does not parse, one that counts as done with no timings).
async fn done_markers(
    store: &Store,
    job: &JobId,
    manifest: &Manifest,
    read: bool,
) -> Result<Vec<DoneMarker>, InspectError> {
    let mut markers = Vec::new();
    for meta in store.list(&paths::done_dir(job)).await? {
        let Some(Ok(batch)) = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .map(str::parse::<u32>)
        else {
            continue;
        };
        if !manifest.batches.iter().any(|b| b.index == batch) {
            continue;
        }
        let marker = match read {
            true => store
                .get_json::<DoneMarker>(meta.location.as_ref())
                .await
                .ok()
                .flatten(),
            false => None,
        };
        markers.push(marker.unwrap_or(DoneMarker {
            batch,
            frames: 0,
            timings: Default::default(),
            worker: String::new(),
            encoder: None,
            at: 0.0,
            started_at: Some(0.0),
            attempt: None,
        }));
    }
    Ok(markers)
}

/// The measure of the union of the batches' work intervals, in seconds.
pub fn work_time(markers: &[DoneMarker]) -> f64 {
    let mut spans: Vec<(f64, f64)> = markers
        .iter()
        .map(|m| (m.started(), m.at))
        .filter(|(start, end)| end > start)
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

/// The style as the user knows it: the spec, or a style image by its file name.
fn style_name(manifest: &Manifest) -> String {
    match manifest.style.image_path() {
        Some(image) => image.rsplit('/').next().unwrap_or(image).to_owned(),
        None => manifest.style.spec.clone(),
    }
}

/// The style folder of a source path (`input/<style>/...`, `process/<style>/...`), for refused
/// jobs that have no manifest.
fn style_of_path(source: &str) -> String {
    source.split('/').nth(1).unwrap_or("").to_owned()
}

/// The input as the user named it: the file given to `process`, else the source's file name.
fn input_name(request: Option<&Request>, source: &str) -> String {
    match request {
        Some(r) => r.input.clone(),
        None => source.rsplit('/').next().unwrap_or(source).to_owned(),
    }
}

/// The id of the one job whose id starts with `prefix`, among the jobs in the store and those in
/// `more` (jobs named by dead letters, say). A whole valid id is taken as it is.
pub async fn resolve(store: &Store, prefix: &str, more: &[JobId]) -> Result<JobId, InspectError> {
    if let Ok(id) = JobId::parse(prefix) {
        return Ok(id);
    }
    let mut ids = job_ids(store).await?;
    ids.extend(more.iter().cloned());
    pick(prefix, ids)
}

/// The one id of `ids` that starts with `prefix` (see [`resolve`]).
pub fn pick(prefix: &str, mut ids: Vec<JobId>) -> Result<JobId, InspectError> {
    let wanted = prefix.to_ascii_lowercase();
    ids.retain(|id| !wanted.is_empty() && id.as_str().starts_with(&wanted));
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Err(InspectError::NoSuchJob(format!(
            "{prefix} (no job id starts with it; `stylefleet status` lists them)"
        ))),
        1 => Ok(ids.remove(0)),
        _ => Err(InspectError::Ambiguous {
            prefix: prefix.to_owned(),
            candidates: ids,
        }),
    }
}

/// The shortest prefix length (at least `min`) that tells every id of `ids` apart.
pub fn short_len(ids: &[&JobId], min: usize) -> usize {
    let mut sorted: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    sorted
        .windows(2)
        .map(|w| common(w[0], w[1]) + 1)
        .fold(min, usize::max)
        .min(16)
}

/// Marks `views` interrupted when nothing works on them: a job that is not finished (queued,
/// running or stitching) while no consume loop runs against the data folder (see
/// [`crate::presence`]). `consumers` is how many presence records count now.
pub fn mark_interrupted(views: &mut [JobView], consumers: usize) {
    if consumers > 0 {
        return;
    }
    for v in views {
        if matches!(
            v.state,
            JobState::Queued | JobState::Running | JobState::Stitching
        ) {
            v.state = JobState::Interrupted;
        }
    }
}

/// Every job, newest first (`logs` is the log store, which holds the presence records). With
/// `embedded` (the SQLite queue of the embedded default, whose
/// consumers are this machine's processes), jobs that nothing works on show
/// [`JobState::Interrupted`]; on Service Bus the deployment starts consumers when work waits, so
/// a missing one is not an interruption.
pub async fn views(
    store: &Store,
    logs: &Store,
    queue: &dyn Queue,
    embedded: bool,
) -> Result<Vec<JobView>, InspectError> {
    let dead = dead_letters_by_job(queue).await?;
    let mut views = Vec::new();
    for id in job_ids(store).await? {
        let letters = dead.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        match view_timed(store, &id, letters).await {
            Ok(v) => views.push(v),
            // Half-written (planning) or half-removed: not a job to show.
            Err(InspectError::NoSuchJob(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    if embedded {
        let consumers = crate::presence::live(logs).await?.len();
        mark_interrupted(&mut views, consumers);
    }
    views.sort_by(|a, b| {
        b.created_at
            .total_cmp(&a.created_at)
            .then_with(|| a.job.cmp(&b.job))
    });
    Ok(views)
}

/// One batch of a job, for [`detail`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchView {
    /// The batch index.
    pub batch: u32,
    /// Its frame range `[start, end)`.
    pub frames: [u64; 2],
    /// `done`, `failed`, `dead-lettered` or `pending`.
    pub state: String,
    /// Deliveries seen (from the done marker, the batch's logs and its dead letter).
    pub attempts: u32,
    /// The worker that finished it.
    pub worker: Option<String>,
    /// When the finishing delivery started on it (seconds since the epoch).
    pub started_at: Option<f64>,
    /// When it was done.
    pub finished_at: Option<f64>,
    /// Stage timings of the finishing delivery (decode, style, encode).
    pub timings: std::collections::BTreeMap<String, f64>,
    /// Why it failed, in full.
    pub failure: Option<String>,
}

/// One job in full: what `status JOB` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    /// The job's view (the same fields as in the list).
    #[serde(flatten)]
    pub view: JobView,
    /// The source's pinned version and size.
    pub source_version: Option<String>,
    /// The source's size in bytes.
    pub source_size: Option<u64>,
    /// The settings the job was planned with (style, strength, batch size, encoder, ...).
    pub settings: serde_json::Value,
    /// Each batch.
    pub batches: Vec<BatchView>,
    /// Where the job's logs are (in the log store).
    pub log_location: String,
    /// The job's log files.
    pub logs: Vec<String>,
}

/// One job in full. `logs` is the log store; `dead` the job's dead letters; `consumers` how many
/// presence records count (None: do not judge interruption, see [`views`]).
pub async fn detail(
    store: &Store,
    logs: &Store,
    job: &JobId,
    dead: &[DeadLetter],
    consumers: Option<usize>,
) -> Result<JobDetail, InspectError> {
    let mut view = view_timed(store, job, dead).await?;
    if let Some(n) = consumers {
        mark_interrupted(std::slice::from_mut(&mut view), n);
    }
    let log_dir = paths::log_dir(job);
    let log_files: Vec<String> = logs
        .list(&log_dir)
        .await?
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    let log_location = match logs.local_path(&log_dir) {
        Some(p) => p.display().to_string(),
        None => format!("{}/{log_dir}/", logs.spec().trim_end_matches('/')),
    };
    let Some(manifest) = store.get_json::<Manifest>(&paths::manifest(job)).await? else {
        return Ok(JobDetail {
            view,
            source_version: None,
            source_size: None,
            settings: serde_json::Value::Null,
            batches: Vec::new(),
            log_location,
            logs: log_files,
        });
    };
    let markers = done_markers(store, job, &manifest, true).await?;
    let mut failures = std::collections::HashMap::new();
    for meta in store.list(&paths::failed_dir(job)).await? {
        if let Ok(Some(record)) = store
            .get_json::<FailureRecord>(meta.location.as_ref())
            .await
        {
            failures.insert(record.batch, record.reason);
        }
    }
    let mut batches = Vec::new();
    for plan in &manifest.batches {
        let marker = markers.iter().find(|m| m.batch == plan.index);
        let prefix = format!("batch-{:05}.attempt-", plan.index);
        let logged = log_files
            .iter()
            .filter_map(|f| {
                f.rsplit('/')
                    .next()?
                    .strip_prefix(&prefix)?
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let letter = dead
            .iter()
            .find(|dl| job_of_message(&dl.body).is_some_and(|(_, b)| b == Some(plan.index)));
        let attempts = logged
            .max(marker.and_then(|m| m.attempt).unwrap_or(0))
            .max(letter.map_or(0, |dl| dl.delivery_count))
            .max(u32::from(marker.is_some()));
        let failure = failures
            .get(&plan.index)
            .cloned()
            .or_else(|| letter.map(|dl| format!("{}: {}", dl.info.reason, dl.info.description)));
        let state = match (marker, &failure, letter) {
            (Some(_), _, _) => "done",
            (None, Some(_), Some(_)) => "dead-lettered",
            (None, Some(_), None) => "failed",
            (None, None, _) => "pending",
        };
        batches.push(BatchView {
            batch: plan.index,
            frames: plan.frames,
            state: state.to_owned(),
            attempts,
            worker: marker.map(|m| m.worker.clone()).filter(|w| !w.is_empty()),
            started_at: marker.map(DoneMarker::started).filter(|t| *t > 0.0),
            finished_at: marker.map(|m| m.at).filter(|t| *t > 0.0),
            timings: marker.map(|m| m.timings.clone()).unwrap_or_default(),
            failure: if marker.is_some() { None } else { failure },
        });
    }
    let settings = serde_json::json!({
        "style": manifest.style.spec,
        "strength": manifest.style.strength,
        "preserve_colour": manifest.style.preserve_colour,
        "batch_frames": manifest.batches.first().map(|b| b.len()),
        "model_batch": manifest.model_batch,
        "window": manifest.window,
        "encoder": manifest.encoder,
        "temporal": manifest.temporal,
        "video": format!(
            "{}x{}, {} frames",
            manifest.probe.video.width,
            manifest.probe.video.height,
            manifest.probe.frames.len()
        ),
    });
    Ok(JobDetail {
        view,
        source_version: Some(manifest.source.version.clone()),
        source_size: Some(manifest.source.size),
        settings,
        batches,
        log_location,
        logs: log_files,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn marker(batch: u32, start: f64, end: f64) -> DoneMarker {
        DoneMarker {
            batch,
            frames: 4,
            timings: Default::default(),
            worker: "w".into(),
            encoder: None,
            at: end,
            started_at: Some(start),
            attempt: Some(1),
        }
    }

    #[test]
    fn work_time_is_the_union_of_the_batches_intervals() {
        // Two overlapping batches, then a pause of an hour, then one more.
        let markers = [
            marker(0, 100.0, 110.0),
            marker(1, 105.0, 112.0),
            marker(2, 3700.0, 3703.0),
        ];
        assert!((work_time(&markers) - 15.0).abs() < 1e-9);
        assert_eq!(work_time(&[]), 0.0);
        // An old marker without a start: its timings give it.
        let mut old = marker(3, 0.0, 50.0);
        old.started_at = None;
        old.timings.insert("style".into(), 4.0);
        assert!((work_time(&[old]) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn prefixes_pick_one_job_or_name_the_candidates() {
        let ids: Vec<JobId> = ["0123456789abcdef", "0123ffffffffffff", "abcdef0123456789"]
            .iter()
            .map(|s| JobId::parse(s).unwrap())
            .collect();
        assert_eq!(pick("ab", ids.clone()).unwrap(), ids[2]);
        assert_eq!(pick("01234", ids.clone()).unwrap(), ids[0]);
        match pick("0123", ids.clone()) {
            Err(InspectError::Ambiguous { candidates, .. }) => {
                assert_eq!(candidates, vec![ids[0].clone(), ids[1].clone()])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick("9", ids.clone()),
            Err(InspectError::NoSuchJob(_))
        ));
        assert!(matches!(pick("", ids), Err(InspectError::NoSuchJob(_))));
    }

    #[test]
    fn short_ids_tell_every_job_apart() {
        let ids: Vec<JobId> = ["0123456789abcdef", "0123456fffffffff", "abcdef0123456789"]
            .iter()
            .map(|s| JobId::parse(s).unwrap())
            .collect();
        let refs: Vec<&JobId> = ids.iter().collect();
        assert_eq!(short_len(&refs, 6), 8);
        assert_eq!(short_len(&refs[2..], 6), 6);
    }
}
