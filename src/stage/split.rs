//! The splitter: turns a new file under `input/` into a job. It probes (never decodes), refuses
//! what it cannot process with a reason, plans batches, writes the manifest create-only, and posts
//! one message per batch that is not done yet.
//!
//! Idempotent: the job id comes from the source's path and content hash plus the style (a style
//! image's content hash included) and settings, so the same event twice, or the same bytes
//! uploaded twice, find the existing manifest and only re-post what is still missing (which the
//! queue's duplicate detection and the worker's done check absorb). New bytes under an old name
//! are a new job.
//!
//! Pinning: the source and the style image are read once here, hashed while they stream into the
//! content-addressed scratch cache, and the manifest records their hash and ETag; every later
//! reader reads exactly that version or fails the job (see [`Store::fetch_pinned`]).
//!
//! Reviving: splitting a job that failed (running the same `process` command again, or a new event
//! for the same bytes) replays the job's dead letters, clears its failure records and re-posts
//! what is missing, the stitch included, so a failure whose cause is gone ends in done.
//!
//! [`Store::fetch_pinned`]: crate::store::Store::fetch_pinned

use std::time::Instant;

use tracing::Instrument;

use crate::job::{
    JobId, JobState, Manifest, Source, Status, StyleChoice, extension_of, now_secs, paths,
    plan_batches,
};
use crate::message::{BatchMessage, StitchMessage};
use crate::queue::{BATCHES, STITCH};
use crate::stage::{Context, JobLog, StageError};
use crate::store::{Fingerprint, StoreError};

/// What the splitter did.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitOutcome {
    /// The job is planned (now or before) and its missing batches are queued.
    Planned {
        /// The job.
        job: JobId,
        /// Batches in the plan.
        batches: u32,
        /// Batch messages posted by this call.
        posted: u32,
        /// Whether this call wrote the manifest (false: the job already existed).
        created: bool,
    },
    /// The input was refused; the job records why.
    Rejected {
        /// The job.
        job: JobId,
        /// Why, in words.
        reason: String,
    },
    /// The job already finished.
    Done {
        /// The job.
        job: JobId,
    },
}

impl SplitOutcome {
    /// The job in question.
    pub fn job(&self) -> &JobId {
        match self {
            SplitOutcome::Planned { job, .. }
            | SplitOutcome::Rejected { job, .. }
            | SplitOutcome::Done { job } => job,
        }
    }
}

/// The style a path under `input/` asks for: `input/<style>/<name>`. A style image
/// `styles/<style>.<jpg|jpeg|png>` wins over a built-in style of the same name.
pub async fn style_for_input(ctx: &Context, source_path: &str) -> Result<StyleChoice, StageError> {
    let mut parts = source_path.split('/');
    let (Some("input"), Some(style), Some(_name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(StageError::permanent(format!(
            "{source_path} is not under input/<style>/: drop videos into a folder named after the style"
        )));
    };
    for ext in ["png", "jpg", "jpeg"] {
        let image = format!("styles/{style}.{ext}");
        if ctx.store.exists(&image).await? {
            return Ok(StyleChoice::new(format!("image:{image}"), 1.0, false));
        }
    }
    Ok(StyleChoice::new(style, 1.0, false))
}

/// The output name `source_path` asks for: `<top>/<style>/.../<stem>.<ext>` becomes
/// `output/<style>/<stem>.mp4` (the folders between, such as the content hash of a `process` copy,
/// are dropped: two jobs that want one name settle it by the claim in the aggregator).
pub fn output_path(source_path: &str) -> String {
    let parts: Vec<&str> = source_path.split('/').collect();
    let file = parts.last().copied().unwrap_or(source_path);
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    match parts.as_slice() {
        [_, style, _, ..] => format!("output/{style}/{stem}.mp4"),
        _ => format!("output/{stem}.mp4"),
    }
}

/// Checks a style and its strength before any work is queued, so a typo fails its job at once
/// with a reason that names what is wrong (the model's errors name the spec they refuse) instead
/// of failing in every worker.
#[cfg(feature = "style")]
fn check_style(style: &StyleChoice) -> Result<(), String> {
    if !(0.0..=1.0).contains(&style.strength) {
        return Err(format!(
            "strength must be between 0 and 1, got {}",
            style.strength
        ));
    }
    if style.spec.starts_with("image:") {
        return Ok(());
    }
    style
        .spec
        .parse::<stylefleet_models::StyleSpec>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "style"))]
fn check_style(style: &StyleChoice) -> Result<(), String> {
    if !(0.0..=1.0).contains(&style.strength) {
        return Err(format!(
            "strength must be between 0 and 1, got {}",
            style.strength
        ));
    }
    Ok(())
}

/// Plans (or finds) the job for `source_path` styled with `style`, and queues its missing batches;
/// in a `split` span (see [`crate::telemetry`]), counted in the job and failure metrics.
pub async fn split(
    ctx: &Context,
    source_path: &str,
    style: &StyleChoice,
) -> Result<SplitOutcome, StageError> {
    use crate::telemetry::metrics::{self, JobEvent};
    let span = tracing::info_span!(
        "split",
        stylefleet.source = source_path,
        stylefleet.job = tracing::field::Empty,
        stylefleet.batches = tracing::field::Empty,
        stylefleet.outcome = tracing::field::Empty,
    );
    let result = split_source(ctx, source_path, style)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(outcome) => {
            span.record("stylefleet.job", outcome.job().as_str());
            match outcome {
                SplitOutcome::Planned {
                    batches, created, ..
                } => {
                    span.record("stylefleet.batches", i64::from(*batches));
                    span.record("stylefleet.outcome", "planned");
                    if *created {
                        metrics::job(JobEvent::Planned);
                    }
                }
                SplitOutcome::Done { .. } => {
                    span.record("stylefleet.outcome", "done");
                }
                SplitOutcome::Rejected { .. } => {
                    span.record("stylefleet.outcome", "rejected");
                }
            }
        }
        Err(e) => {
            span.record("stylefleet.outcome", "failed");
            let reason = if e.is_transient() {
                "transient"
            } else {
                "PermanentFailure"
            };
            metrics::failure("split", reason);
        }
    }
    result
}

/// [`split`]'s work.
async fn split_source(
    ctx: &Context,
    source_path: &str,
    style: &StyleChoice,
) -> Result<SplitOutcome, StageError> {
    let started = Instant::now();
    // The source's content, pinned: the bytes hashed here are the bytes every stage reads.
    let (source, local) = ctx
        .store
        .fetch_pinned(
            source_path,
            None,
            &ctx.scratch.join("sources"),
            extension_of(source_path),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => {
                StageError::permanent(format!("{source_path} does not exist"))
            }
            e => e.into(),
        })?;
    let style = match pin_style_image(ctx, style).await? {
        Ok(style) => style,
        Err(reason) => {
            let job = JobId::derive(source_path, &source.sha256, &style.spec, "");
            reject(ctx, &job, source_path, &reason).await?;
            return Ok(SplitOutcome::Rejected { job, reason });
        }
    };
    let style = &style;
    let version = source.sha256.clone();
    let mut settings_key = serde_json::json!({
        "batch_frames": ctx.settings.batch_frames,
        "model_batch": ctx.settings.model_batch,
        "encoder": ctx.settings.encoder,
        "strength": style.strength,
        "preserve_colour": style.preserve_colour,
    });
    // Stabilisation is part of the job (another output); off keeps the ids jobs had before the
    // option existed.
    if let (Some(temporal), Some(key)) = (&ctx.settings.temporal, settings_key.as_object_mut()) {
        key.insert("temporal".into(), serde_json::json!(temporal));
    }
    let settings_key = settings_key.to_string();
    let job = JobId::derive(source_path, &version, &style.identity(), &settings_key);
    let mut log = JobLog::new(&job, "split");

    if let Some(rejected) = ctx.store.get_json::<Status>(&paths::rejected(&job)).await? {
        let reason = rejected.reason.unwrap_or_default();
        return Ok(SplitOutcome::Rejected { job, reason });
    }

    let (manifest, created) = match ctx
        .store
        .get_json::<Manifest>(&paths::manifest(&job))
        .await?
    {
        Some(manifest) => (manifest, false),
        None => {
            log.info(format!(
                "planning {source_path} ({} bytes, version {version})",
                source.size
            ));
            let planning = tracing::info_span!("plan", stylefleet.job = %job);
            match plan(ctx, &job, source_path, &local, &source, style)
                .instrument(planning)
                .await?
            {
                Err(reason) => {
                    log.warn(format!("refused: {reason}"));
                    reject(ctx, &job, source_path, &reason).await?;
                    log.flush(&ctx.logs).await;
                    return Ok(SplitOutcome::Rejected { job, reason });
                }
                Ok(manifest) => {
                    // Create-only: if another splitter won the race, its manifest is the plan.
                    let created = ctx
                        .store
                        .put_json_create(&paths::manifest(&job), &manifest)
                        .await?;
                    match created {
                        true => (manifest, true),
                        false => match ctx
                            .store
                            .get_json::<Manifest>(&paths::manifest(&job))
                            .await?
                        {
                            Some(theirs) => (theirs, false),
                            None => {
                                return Err(StageError::transient(
                                    "manifest vanished after a create race",
                                ));
                            }
                        },
                    }
                }
            }
        }
    };

    if ctx.store.exists(&paths::output_claim(&job)).await?
        && let Some(status) = ctx.store.get_json::<Status>(&paths::status(&job)).await?
        && status.state == JobState::Done
    {
        return Ok(SplitOutcome::Done { job });
    }
    let revived = !created && revive(ctx, &job).await?;
    if revived {
        log.info("the job had failed: its dead letters are replayed and its failures cleared");
    }

    // Resume is "plan minus done", limited to the job's window; finished batches post the rest.
    let done = ctx.store.list(&paths::done_dir(&job)).await?;
    let done: std::collections::HashSet<String> = done
        .iter()
        .filter_map(|m| m.location.filename().map(str::to_owned))
        .collect();
    let missing: Vec<_> = manifest
        .batches
        .iter()
        .filter(|b| !done.contains(&format!("{:05}.json", b.index)))
        .take(manifest.window.max(1) as usize)
        .map(|b| BatchMessage::new(job.clone(), b.index, b.frames[0]..b.frames[1]).to_outgoing())
        .collect();
    let posted = missing.len() as u32;
    for chunk in missing.chunks(100) {
        ctx.queue.send(BATCHES, chunk.to_vec()).await?;
    }
    if missing.is_empty() && !manifest.batches.is_empty() {
        // Every batch is done but the output is not: the stitch may have failed, or the process
        // that should have posted it died. Posting it again is harmless (one stitch per job).
        ctx.queue
            .send(STITCH, vec![StitchMessage::new(job.clone()).to_outgoing()])
            .await?;
    }
    if created || revived {
        let mut status = Status {
            job: job.clone(),
            source: source_path.to_owned(),
            state: JobState::Queued,
            reason: None,
            batches_total: manifest.batches.len() as u32,
            output: None,
            timings: Default::default(),
            updated_at: now_secs(),
        };
        status
            .timings
            .insert("split".into(), started.elapsed().as_secs_f64());
        // A stitch that finished since the check above keeps its `done`.
        let finished = ctx
            .store
            .get_json::<Status>(&paths::status(&job))
            .await?
            .is_some_and(|s| s.state == JobState::Done);
        if !finished {
            ctx.store.put_json(&paths::status(&job), &status).await?;
        }
        log.info(format!(
            "planned {} frames in {} batches; posted {posted}",
            manifest.probe.frames.len(),
            manifest.batches.len()
        ));
        log.flush(&ctx.logs).await;
    }
    Ok(SplitOutcome::Planned {
        job,
        batches: manifest.batches.len() as u32,
        posted,
        created,
    })
}

/// Probes the source and builds the manifest, or says why the input is refused.
async fn plan(
    ctx: &Context,
    job: &JobId,
    source_path: &str,
    local: &std::path::Path,
    pinned: &Fingerprint,
    style: &StyleChoice,
) -> Result<Result<Manifest, String>, StageError> {
    let size = pinned.size;
    if size == 0 {
        return Ok(Err("the file is empty (0 bytes)".into()));
    }
    if let Err(reason) = check_style(style) {
        return Ok(Err(reason));
    }
    if size > ctx.settings.limits.max_bytes {
        return Ok(Err(format!(
            "the file is {size} bytes, over the limit of {}",
            ctx.settings.limits.max_bytes
        )));
    }
    let probing = tracing::info_span!("probe", stylefleet.job = %job);
    let probe = match crate::media::probe(local).instrument(probing).await {
        Ok(probe) => probe,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = crate::media::check(&probe, &ctx.settings.limits) {
        return Ok(Err(e.to_string()));
    }
    let batches = plan_batches(
        probe.frames.len() as u64,
        ctx.settings.batch_frames,
        ctx.settings.plan_workers,
    );
    Ok(Ok(Manifest {
        v: 1,
        job: job.clone(),
        source: Source {
            path: source_path.to_owned(),
            version: pinned.sha256.clone(),
            size,
            etag: pinned.etag.clone(),
        },
        style: style.clone(),
        probe,
        batches,
        encoder: ctx.settings.encoder.clone(),
        model_batch: ctx.settings.model_batch,
        temporal: ctx.settings.temporal.clone(),
        window: ctx.settings.flood.max_queued_per_job.max(1),
        output: output_path(source_path),
        created_at: now_secs(),
    }))
}

/// `sha256:<hex>` of a file's bytes, read off the async runtime.
pub async fn content_version_of_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hash = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hash)?;
        Ok(format!("sha256:{:x}", hash.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Pins the style image of an `image:` style (its bytes' hash and ETag), or says why the image
/// cannot be used. Other styles pass unchanged.
async fn pin_style_image(
    ctx: &Context,
    style: &StyleChoice,
) -> Result<Result<StyleChoice, String>, StageError> {
    let Some(path) = style.image_path() else {
        return Ok(Ok(style.clone()));
    };
    let fetched = ctx
        .store
        .fetch_pinned(path, None, &ctx.scratch.join("styles"), extension_of(path))
        .await;
    match fetched {
        Ok((image, _)) => Ok(Ok(StyleChoice {
            image: Some(image),
            ..style.clone()
        })),
        Err(StoreError::NotFound { .. }) => {
            Ok(Err(format!("the style image {path} does not exist")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Brings a failed job back: replays its dead letters and clears its failure records, so that the
/// batches and the stitch run again. Returns whether there was anything to revive.
pub async fn revive(ctx: &Context, job: &JobId) -> Result<bool, StageError> {
    let filter = crate::dlq::Filter {
        job: Some(job.to_string()),
        ..Default::default()
    };
    // Records first, then the replay: a failure of the replayed work is then recorded afresh,
    // never deleted here. Peeked first: most splits find nothing to revive, and a bulk pass
    // locks every dead letter.
    let failures = ctx.store.list(&paths::failed_dir(job)).await?;
    for record in &failures {
        ctx.store.delete(record.location.as_ref()).await?;
    }
    let dead = crate::dlq::list(ctx.queue.as_ref(), &filter).await?;
    let replayed = if dead.is_empty() {
        0
    } else {
        crate::dlq::bulk(ctx.queue.as_ref(), None, &filter, true, false, |_| {})
            .await
            .map_err(|e| match e {
                crate::dlq::DlqError::Queue(e) => StageError::from(e),
                crate::dlq::DlqError::Store(e) => StageError::from(e),
            })?
            .acted
    };
    Ok(replayed > 0 || !failures.is_empty())
}

/// Records a refusal: `rejected.json` (create-only, so the reason is the first one) and the status.
async fn reject(
    ctx: &Context,
    job: &JobId,
    source_path: &str,
    reason: &str,
) -> Result<(), StageError> {
    let status = Status {
        job: job.clone(),
        source: source_path.to_owned(),
        state: JobState::Failed,
        reason: Some(reason.to_owned()),
        batches_total: 0,
        output: None,
        timings: Default::default(),
        updated_at: now_secs(),
    };
    let first = ctx
        .store
        .put_json_create(&paths::rejected(job), &status)
        .await?;
    ctx.store.put_json(&paths::status(job), &status).await?;
    if first {
        crate::telemetry::metrics::failure("split", "Rejected");
        crate::telemetry::metrics::job(crate::telemetry::metrics::JobEvent::Failed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::output_path;

    #[test]
    fn output_mirrors_input() {
        assert_eq!(
            output_path("input/mosaic/clip.mp4"),
            "output/mosaic/clip.mp4"
        );
        assert_eq!(
            output_path("input/3:0.5,7:0.5/a.b.mov"),
            "output/3:0.5,7:0.5/a.b.mp4"
        );
        assert_eq!(output_path("input/x/noext"), "output/x/noext.mp4");
        assert_eq!(output_path("process/7/clip.mkv"), "output/7/clip.mp4");
    }
}
