//! `stylefleet process`: one video through the same pipeline as the fleet (splitter, worker
//! processes, aggregator), with progress, ending only when the output is written and verified.
//!
//! The video and a style image go into the store under their content hash
//! (`process/<style>/<hash>/<name>`, `styles/<stem>-<hash>.<ext>`), so two runs that share a data
//! folder never overwrite each other's inputs, whatever the files are called; the same bytes find
//! the same job, so a re-run resumes (and revives a failed job). The output path is checked before
//! any work (writable, not the input itself) and written atomically. Its aggregator stitches its
//! own job only ([`check_request`] is what a caller can run before opening the store at all).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consume::{ConsumeOptions, StitchHandler, consume_one};
use crate::inspect::{InspectError, JobView, job_of_message, view};
use crate::job::{JobId, JobState, Manifest, Request, StyleChoice, paths};
use crate::media::MediaError;
use crate::message::StitchMessage;
use crate::queue::{BATCHES, STITCH};
use crate::stage::split::{SplitOutcome, split};
use crate::stage::{Context, StageError};
use crate::store::StoreError;

use super::reconcile_dead_letters;
use super::workers::{WorkerCommand, WorkerPool};

/// How long `process` keeps polling a job whose store does not answer before it gives up (the
/// job itself resumes on the next run).
const STORE_OUTAGE_LIMIT: Duration = Duration::from_secs(300);

/// What to process.
#[derive(Debug, Clone)]
pub struct ProcessRequest {
    /// The video.
    pub input: PathBuf,
    /// Where the styled video goes; `{job}` in its file name stands for the job id
    /// ([`output_for`]).
    pub output: PathBuf,
    /// Whether an existing file at the output path may be replaced.
    pub overwrite: bool,
    /// The style as given: index, name, blend, or a path to a style image.
    pub style: String,
    /// Blend with the original.
    pub strength: f32,
    /// Keep the original's colours.
    pub preserve_colour: bool,
    /// Worker processes.
    pub workers: usize,
}

/// Why `process` did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The input or the style was refused, or a batch failed for good.
    #[error("job {job} failed: {reason}")]
    Failed {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// Interrupted before the end; the job resumes on the next run.
    #[error("interrupted; run the same command again to resume job {0}")]
    Interrupted(JobId),
    /// The request cannot be carried out as given (the input is not a file, the output path is
    /// the input or a folder), or the fleet cannot go on (workers that keep failing).
    #[error("{0}")]
    Invalid(String),
    /// A local file or folder could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job's progress could not be read.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The video could not be planned (its whole reason, causes included).
    #[error("{}", .0.reason())]
    Split(StageError),
    /// The output copied out of the store differs from the source.
    #[error("the copied output does not match the source")]
    Verify(#[source] MediaError),
}

impl ProcessError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ProcessError::Io { context, source }
    }
}

/// Refuses, before anything is written to the store, a request that cannot be carried out: an
/// input that is not a readable file, an output path that is the input itself, a folder, or in a
/// folder that cannot be written.
pub fn check_request(request: &ProcessRequest) -> Result<(), ProcessError> {
    let input = &request.input;
    let meta = std::fs::metadata(input)
        .map_err(ProcessError::io(format!("cannot read {}", input.display())))?;
    if !meta.is_file() {
        return Err(ProcessError::Invalid(format!(
            "{} is not a file",
            input.display()
        )));
    }
    check_output(input, &request.output, request.overwrite)
}

/// The output path of `job`: `template` with `{job}` in its file name replaced by the job id.
pub fn output_for(template: &Path, job: &JobId) -> PathBuf {
    match template.file_name().and_then(|n| n.to_str()) {
        Some(name) if name.contains(JOB_PLACEHOLDER) => {
            template.with_file_name(name.replace(JOB_PLACEHOLDER, &job.to_string()))
        }
        _ => template.to_owned(),
    }
}

/// What [`ProcessRequest::output`] may hold for the job id.
pub const JOB_PLACEHOLDER: &str = "{job}";

/// Runs the request; `progress` sees the job after every poll.
pub async fn process(
    ctx: &Context,
    request: &ProcessRequest,
    worker: WorkerCommand,
    shutdown: CancellationToken,
    mut progress: impl FnMut(&JobView),
) -> Result<JobView, ProcessError> {
    let input = &request.input;
    check_request(request)?;
    crate::setup::sweep_leftovers(ctx, crate::setup::CLI_UPLOADS).await;
    let (spec, folder) = stage_style(ctx, &request.style).await?;
    let name = input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("video")
        .to_owned();
    let hash = short_hash(input).await?;
    let source_path = format!("process/{folder}/{hash}/{name}");
    upload_once(ctx, input, &source_path).await?;

    let style = StyleChoice::new(spec, request.strength, request.preserve_colour);
    let job = match split(ctx, &source_path, &style)
        .await
        .map_err(ProcessError::Split)?
    {
        SplitOutcome::Rejected { job, reason } => return Err(ProcessError::Failed { job, reason }),
        outcome => outcome.job().clone(),
    };
    let manifest: Manifest = ctx
        .store
        .get_json(&paths::manifest(&job))
        .await?
        .ok_or_else(|| ProcessError::Invalid(format!("job {job} has no manifest")))?;
    // The job id is known now: an output named after it is checked before the work starts.
    let target = output_for(&request.output, &job);
    if target != request.output {
        check_output(input, &target, request.overwrite)?;
    }
    // The names the user gave, for `status` (the store knows the video by its content hash).
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let named = Request {
        input: absolute(input).display().to_string(),
        output: absolute(&target).display().to_string(),
        at: crate::job::now_secs(),
    };
    ctx.store.put_json(&paths::request(&job), &named).await?;

    // The run is its job's aggregator: its presence tells `status` that the job is in hand, also
    // while it stitches with no worker running.
    let presence = crate::presence::announce(&ctx.logs, &ctx.worker_name, STITCH);
    let stop_aggregator = CancellationToken::new();
    let (stitching, wants_stitch) = watch::channel(false);
    let aggregator = {
        let ctx = ctx.clone();
        let job = job.clone();
        let token = stop_aggregator.clone();
        tokio::spawn(async move { stitch_own(&ctx, &job, wants_stitch, token).await })
    };
    let mut pool = WorkerPool::new(worker);
    let mut unreachable_since: Option<Instant> = None;
    let result = loop {
        if let Err(e) = reconcile_dead_letters(ctx).await {
            tracing::warn!(error = %e, "cannot read the dead-letter queues");
        }
        let current = match view(&ctx.store, &job, &[]).await {
            Ok(current) => {
                unreachable_since = None;
                current
            }
            // The store is down for longer than its own request retries last: the workers back off
            // and retry their batches by themselves, so keep polling, within a limit.
            Err(InspectError::Store(e))
                if e.is_transient()
                    && unreachable_since.get_or_insert_with(Instant::now).elapsed()
                        < STORE_OUTAGE_LIMIT =>
            {
                tracing::warn!(%job, error = %e, "cannot read the job's progress; polling again");
                tokio::select! {
                    _ = shutdown.cancelled() => break Err(ProcessError::Interrupted(job.clone())),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            Err(e) => return Err(e.into()),
        };
        progress(&current);
        if crate::telemetry::metrics::read() {
            for queue in [BATCHES, STITCH] {
                if let Ok(depth) = ctx.queue.backlog(queue).await {
                    crate::telemetry::metrics::queue_depth(queue, depth);
                }
            }
        }
        stitching.send_replace(current.state == JobState::Stitching);
        match current.state {
            JobState::Done => break Ok(current),
            JobState::Failed => {
                let reason = current.reason.clone().unwrap_or_else(|| "unknown".into());
                break Err(ProcessError::Failed {
                    job: job.clone(),
                    reason,
                });
            }
            JobState::Stitching => pool
                .scale_to(0)
                .map_err(ProcessError::io("cannot stop the workers"))?,
            _ => pool
                .scale_to(request.workers.max(1))
                .map_err(ProcessError::io("cannot start the workers"))?,
        }
        // Workers that cannot even start (a broken build, a bad configuration) would otherwise be
        // restarted forever.
        if pool.failures() >= 3 * request.workers.max(1) as u64 && current.batches_done == 0 {
            let exits = pool.failures();
            break Err(ProcessError::Invalid(format!(
                "workers keep failing ({exits} exits); see their messages above"
            )));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Err(ProcessError::Interrupted(job.clone())),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    };
    pool.shutdown(Duration::from_secs(35)).await;
    stop_aggregator.cancel();
    let _ = aggregator.await;
    presence.withdraw().await;
    let done = result?;

    let output = done
        .output
        .clone()
        .ok_or_else(|| ProcessError::Invalid(format!("job {job} is done but names no output")))?;
    copy_out(ctx, &output, &target).await?;
    crate::media::verify(&manifest.probe, &target)
        .await
        .map_err(ProcessError::Verify)?;
    Ok(done)
}

/// Puts a style image into `styles/` under its content hash and returns the spec and the folder
/// name for the input.
async fn stage_style(ctx: &Context, style: &str) -> Result<(String, String), ProcessError> {
    let path = Path::new(style);
    if path.is_file() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("style");
        let ext = path
            .extension()
            .and_then(|s| s.to_str())
            .unwrap_or("png")
            .to_ascii_lowercase();
        let hash = short_hash(path).await?;
        let store_path = format!("styles/{stem}-{hash}.{ext}");
        upload_once(ctx, path, &store_path).await?;
        return Ok((format!("image:{store_path}"), stem.to_owned()));
    }
    Ok((style.to_owned(), style.replace('/', "_")))
}

/// The aggregator of one `process` run, which stitches its own job and no other: another job is
/// resumed by its own command or stitched by the fleet, never by a run the user started for
/// another video. While the job waits for its stitch (`wants_stitch`), it receives the job's own
/// message by its id where the queue can (the embedded one), so no other job's message is
/// touched. Elsewhere it receives from the stitch queue in order, works on its own message and
/// lets go of any other at once, untouched; while its own message is not there (still locked by a
/// run that died, or taken by another aggregator), it looks again after a pause that doubles up to
/// 8 s, as each such look counts a delivery of the messages it lets go.
async fn stitch_own(
    ctx: &Context,
    job: &JobId,
    mut wants_stitch: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let options = ConsumeOptions::new(STITCH);
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            waited = wants_stitch.wait_for(|wants| *wants) => if waited.is_err() { return },
        }
        let received = if ctx.queue.receives_by_id() {
            let id = StitchMessage::new(job.clone()).id();
            ctx.queue
                .receive_by_id(STITCH, &id)
                .await
                .map(|own| own.into_iter().collect())
        } else {
            ctx.queue.receive(STITCH, 32, options.wait).await
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot receive from the stitch queue; trying again");
                Vec::new()
            }
        };
        let (own, others): (Vec<_>, Vec<_>) = deliveries.into_iter().partition(|d| {
            job_of_message(&d.body).is_some_and(|(of, _)| &of == job) && !shutdown.is_cancelled()
        });
        for delivery in others {
            if let Err(e) = ctx.queue.abandon(&delivery, None).await {
                tracing::warn!(id = %delivery.id, error = %e, "could not release another job's stitch");
            }
        }
        pause = if own.is_empty() && !ctx.queue.receives_by_id() {
            (pause * 2).min(Duration::from_secs(8))
        } else {
            Duration::from_secs(1)
        };
        for delivery in own {
            consume_one(ctx, &StitchHandler, &options, &shutdown, delivery).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The first 16 hex digits of a file's SHA-256: its name in the store.
async fn short_hash(path: &Path) -> Result<String, ProcessError> {
    let version = crate::stage::split::content_version_of_file(path)
        .await
        .map_err(ProcessError::io(format!("cannot read {}", path.display())))?;
    let hex = version.strip_prefix("sha256:").unwrap_or(&version);
    Ok(hex.chars().take(16).collect())
}

/// Uploads a file to its content-addressed path, create-only: the bytes already there are the
/// same bytes.
async fn upload_once(ctx: &Context, from: &Path, to: &str) -> Result<(), ProcessError> {
    if !ctx.store.exists(to).await? {
        ctx.store.upload(from, to, true).await?;
    }
    Ok(())
}

/// Refuses an output path that is the input itself, a folder, a file that exists (unless
/// `overwrite`), or in a folder that cannot be written.
fn check_output(input: &Path, output: &Path, overwrite: bool) -> Result<(), ProcessError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(input, output) {
        return Err(ProcessError::Invalid(format!(
            "the output {} is the input itself; choose another path with -o",
            output.display()
        )));
    }
    if output.is_dir() {
        return Err(ProcessError::Invalid(format!(
            "the output {} is a folder; give a file path with -o",
            output.display()
        )));
    }
    if !overwrite && output.is_file() {
        return Err(ProcessError::Invalid(format!(
            "the output {} exists already; --force overwrites it",
            output.display()
        )));
    }
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(ProcessError::io(format!(
        "cannot create the output folder {}",
        parent.display()
    )))?;
    // A probe file proves the folder takes new files (permissions, read-only mounts, a full disk
    // of inodes), which a metadata check cannot.
    tempfile::Builder::new()
        .prefix(".stylefleet-probe-")
        .tempfile_in(parent)
        .map_err(ProcessError::io(format!(
            "cannot write to the output folder {}",
            parent.display()
        )))?;
    Ok(())
}

/// Copies the output out of the store to `to` through a temporary file beside it, renamed at the
/// end: `to` holds the whole output or what it held before, never a part.
async fn copy_out(ctx: &Context, output: &str, to: &Path) -> Result<(), ProcessError> {
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(ProcessError::io(format!(
            "cannot create {}",
            parent.display()
        )))?;
    let partial = tempfile::Builder::new()
        .prefix(".stylefleet-")
        .suffix(".part")
        .tempfile_in(parent)
        .map_err(ProcessError::io(format!(
            "cannot write to {}",
            parent.display()
        )))?;
    match ctx.store.local_path(output) {
        Some(local) => {
            tokio::fs::copy(&local, partial.path())
                .await
                .map_err(ProcessError::io(format!(
                    "cannot copy {} to {}",
                    local.display(),
                    to.display()
                )))?;
        }
        None => ctx.store.download(output, partial.path()).await?,
    }
    partial
        .persist(to)
        .map_err(|e| ProcessError::io(format!("cannot write {}", to.display()))(e.error))?;
    Ok(())
}
