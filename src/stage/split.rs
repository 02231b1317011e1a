//! The splitter: turns a new file under `input/` into a job. It probes (never decodes), refuses
//! what it cannot process with a reason, plans batches, writes the manifest create-only, and posts
//! one message per batch that is not done yet.
//!
//! Idempotent: the job id comes from the source's path and version plus the style and settings, so
//! the same event twice, or the same bytes uploaded twice, find the existing manifest and only
//! re-post batches that are still missing (which the queue's duplicate detection and the worker's
//! done check absorb).

use std::time::Instant;

use crate::job::{
    JobId, JobState, Manifest, Source, Status, StyleChoice, now_secs, paths, plan_batches,
};
use crate::message::BatchMessage;
use crate::queue::BATCHES;
use crate::stage::{Context, JobLog, StageError};
use crate::store::version_of;

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
        return Err(StageError::Permanent(format!(
            "{source_path} is not under input/<style>/: drop videos into a folder named after the style"
        )));
    };
    for ext in ["png", "jpg", "jpeg"] {
        let image = format!("styles/{style}.{ext}");
        if ctx.store.exists(&image).await? {
            return Ok(StyleChoice {
                spec: format!("image:{image}"),
                strength: 1.0,
                preserve_colour: false,
            });
        }
    }
    Ok(StyleChoice {
        spec: style.to_owned(),
        strength: 1.0,
        preserve_colour: false,
    })
}

/// Where the output of `source_path` goes: `input/<style>/<stem>.<ext>` (or any other top folder)
/// becomes `output/<style>/<stem>.mp4`.
pub fn output_path(source_path: &str) -> String {
    let rest = source_path
        .split_once('/')
        .map_or(source_path, |(_, rest)| rest);
    let (dir, file) = rest.rsplit_once('/').unwrap_or(("", rest));
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    if dir.is_empty() {
        format!("output/{stem}.mp4")
    } else {
        format!("output/{dir}/{stem}.mp4")
    }
}

/// Checks a style spec before any work is queued, so a typo fails its job at once with the list
/// of valid names instead of failing in every worker.
#[cfg(feature = "style")]
fn check_style(style: &StyleChoice) -> Result<(), String> {
    if style.spec.starts_with("image:") {
        return Ok(());
    }
    if !(0.0..=1.0).contains(&style.strength) {
        return Err(format!(
            "strength must be between 0 and 1, got {}",
            style.strength
        ));
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

/// Plans (or finds) the job for `source_path` styled with `style`, and queues its missing batches.
pub async fn split(
    ctx: &Context,
    source_path: &str,
    style: &StyleChoice,
) -> Result<SplitOutcome, StageError> {
    let started = Instant::now();
    let meta = ctx
        .store
        .head(source_path)
        .await?
        .ok_or_else(|| StageError::Permanent(format!("{source_path} does not exist")))?;
    // The version is the content's hash: the same bytes uploaded again (new ETag, new mtime) are
    // the same job, as users expect; a store-reported version would make them a second job.
    let scratch = ctx.scratch.join("sources");
    let ext = source_path.rsplit_once('.').map_or("bin", |(_, e)| e);
    let staging = JobId::derive(source_path, &version_of(&meta), "", "");
    let local = ctx
        .store
        .materialize(source_path, &scratch, &format!("{staging}.{ext}"))
        .await?;
    let version = content_version_of_file(&local)
        .await
        .map_err(|e| StageError::Transient(e.to_string()))?;
    let settings_key = serde_json::json!({
        "batch_frames": ctx.settings.batch_frames,
        "model_batch": ctx.settings.model_batch,
        "encoder": ctx.settings.encoder,
        "strength": style.strength,
        "preserve_colour": style.preserve_colour,
    })
    .to_string();
    let job = JobId::derive(source_path, &version, &style.spec, &settings_key);
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
                meta.size
            ));
            match plan(ctx, &job, source_path, &local, &version, meta.size, style).await? {
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
                                return Err(StageError::Transient(
                                    "manifest vanished after a create race".into(),
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
    if created {
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
        ctx.store.put_json(&paths::status(&job), &status).await?;
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
    version: &str,
    size: u64,
    style: &StyleChoice,
) -> Result<Result<Manifest, String>, StageError> {
    if size == 0 {
        return Ok(Err("the file is empty (0 bytes)".into()));
    }
    if let Err(reason) = check_style(style) {
        return Ok(Err(format!("bad style {:?}: {reason}", style.spec)));
    }
    if size > ctx.settings.limits.max_bytes {
        return Ok(Err(format!(
            "the file is {size} bytes, over the limit of {}",
            ctx.settings.limits.max_bytes
        )));
    }
    let probe = match crate::media::probe(local).await {
        Ok(probe) => probe,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = crate::media::check(&probe, &ctx.settings.limits) {
        return Ok(Err(e.to_string()));
    }
    let batches = plan_batches(probe.frames.len() as u64, ctx.settings.batch_frames);
    Ok(Ok(Manifest {
        v: 1,
        job: job.clone(),
        source: Source {
            path: source_path.to_owned(),
            version: version.to_owned(),
            size,
        },
        style: style.clone(),
        probe,
        batches,
        encoder: ctx.settings.encoder.clone(),
        model_batch: ctx.settings.model_batch,
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
    ctx.store
        .put_json_create(&paths::rejected(job), &status)
        .await?;
    ctx.store.put_json(&paths::status(job), &status).await?;
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
