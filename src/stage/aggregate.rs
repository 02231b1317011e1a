//! The aggregator: joins a job's chunks in order, copies the audio and other streams from the
//! source, verifies the result against the source, and writes the output once.
//!
//! Output naming: the job first claims an output path create-only in `jobs/<job>/output.json`
//! (`output/<style>/<stem>.mp4`, or `<stem>-<job>.mp4` when another job already owns that name, as
//! a re-upload with new bytes does). The claim makes a retry after a crash between the output write
//! and the status write recognise the output as its own.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::job::{DoneMarker, JobId, JobState, Manifest, Status, now_secs, paths};
use crate::message::StitchMessage;
use crate::queue::Delivery;
use crate::stage::{Context, JobLog, Outcome, StageError};

/// The output a job claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputClaim {
    /// The job.
    pub job: JobId,
    /// The output path in the store.
    pub output: String,
}

/// Handles one stitch delivery.
pub async fn handle(ctx: &Context, delivery: &Delivery) -> Outcome {
    let message = match StitchMessage::parse(&delivery.body) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::DeadLetter {
                reason: e.reason().into(),
                description: e.to_string(),
            };
        }
    };
    let manifest = match ctx
        .store
        .get_json::<Manifest>(&paths::manifest(&message.job))
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Outcome::DeadLetter {
                reason: "UnknownJob".into(),
                description: format!("job {} has no manifest", message.job),
            };
        }
        Err(e) => {
            return ctx.outcome(
                Err(e.into()),
                delivery.delivery_count,
                "reading the manifest",
            );
        }
    };
    let mut log = JobLog::new(
        &message.job,
        format!("stitch.attempt-{}", delivery.delivery_count),
    );
    let result = stitch(ctx, &manifest, &mut log).await;
    let outcome = ctx.outcome(
        result,
        delivery.delivery_count,
        &format!("stitching job {}", message.job),
    );
    match &outcome {
        Outcome::Complete => {}
        Outcome::Retry { reason, delay } => log.warn(format!("will retry in {delay:?}: {reason}")),
        Outcome::DeadLetter {
            reason,
            description,
        } => {
            log.warn(format!("failed for good ({reason}): {description}"));
            ctx.fail_batch(
                &message.job,
                &manifest.source.path,
                None,
                manifest.batches.len() as u32,
                description,
            )
            .await;
        }
    }
    log.flush(&ctx.logs).await;
    outcome
}

/// Stitches the job's output unless it is already written.
pub async fn stitch(
    ctx: &Context,
    manifest: &Manifest,
    log: &mut JobLog,
) -> Result<(), StageError> {
    let job = &manifest.job;
    let started = Instant::now();
    if let Some(status) = ctx.store.get_json::<Status>(&paths::status(job)).await?
        && status.state == JobState::Done
        && ctx.store.exists(&paths::output_claim(job)).await?
    {
        log.info("already stitched (redelivery)");
        return Ok(());
    }
    // Every batch must be done; the counter posted this message, so a gap means a replayed or
    // forged message: wait for the batches rather than fail.
    let mut markers = Vec::with_capacity(manifest.batches.len());
    for batch in &manifest.batches {
        match ctx
            .store
            .get_json::<DoneMarker>(&paths::done(job, batch.index))
            .await?
        {
            Some(marker) if marker.frames == batch.len() => markers.push(marker),
            Some(marker) => {
                return Err(StageError::Permanent(format!(
                    "batch {} has {} frames, the plan says {}",
                    batch.index,
                    marker.frames,
                    batch.len()
                )));
            }
            None => {
                return Err(StageError::Transient(format!(
                    "batch {} is not done yet",
                    batch.index
                )));
            }
        }
    }

    let output = claim_output(ctx, manifest).await?;
    if !ctx.store.exists(&output).await? {
        let work = ctx.scratch.join("stitch").join(job.as_str());
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|e| StageError::Transient(format!("cannot create {}: {e}", work.display())))?;
        let mut chunks = Vec::with_capacity(manifest.batches.len());
        for batch in &manifest.batches {
            let name = format!("{:05}.mp4", batch.index);
            chunks.push(
                ctx.store
                    .materialize(&paths::chunk(job, batch.index), &work, &name)
                    .await?,
            );
        }
        let ext = manifest
            .source
            .path
            .rsplit_once('.')
            .map_or("bin", |(_, e)| e);
        let source = ctx
            .store
            .materialize(
                &manifest.source.path,
                &ctx.scratch.join("sources"),
                &format!("{job}.{ext}"),
            )
            .await?;
        let stitched = work.join("output.mp4");
        crate::media::stitch(
            &source,
            &manifest.probe,
            &chunks,
            &stitched,
            &manifest.encoder,
        )
        .await
        .map_err(|e| StageError::Transient(format!("stitching: {e}")))?;
        crate::media::verify(&manifest.probe, &stitched)
            .await
            .map_err(|e| {
                StageError::Permanent(format!(
                    "the stitched output does not match the source: {e}"
                ))
            })?;
        ctx.store.upload(&stitched, &output, true).await?;
        let _ = tokio::fs::remove_dir_all(&work).await;
        log.info(format!("wrote {output}"));
    }

    let mut timings = std::collections::BTreeMap::new();
    for marker in &markers {
        for (k, v) in &marker.timings {
            *timings.entry(format!("batches_{k}")).or_insert(0.0) += v;
        }
    }
    timings.insert("stitch".into(), started.elapsed().as_secs_f64());
    if let Some(previous) = ctx.store.get_json::<Status>(&paths::status(job)).await?
        && let Some(split) = previous.timings.get("split")
    {
        timings.insert("split".into(), *split);
    }
    timings.insert("total".into(), now_secs() - manifest.created_at);
    let status = Status {
        job: job.clone(),
        source: manifest.source.path.clone(),
        state: JobState::Done,
        reason: None,
        batches_total: manifest.batches.len() as u32,
        output: Some(output),
        timings,
        updated_at: now_secs(),
    };
    ctx.store.put_json(&paths::status(job), &status).await?;
    Ok(())
}

async fn claim_output(ctx: &Context, manifest: &Manifest) -> Result<String, StageError> {
    let job = &manifest.job;
    if let Some(claim) = ctx
        .store
        .get_json::<OutputClaim>(&paths::output_claim(job))
        .await?
    {
        return Ok(claim.output);
    }
    let preferred = manifest.output.clone();
    let output = if ctx.store.exists(&preferred).await? {
        let stem = preferred.strip_suffix(".mp4").unwrap_or(&preferred);
        format!("{stem}-{job}.mp4")
    } else {
        preferred
    };
    let claim = OutputClaim {
        job: job.clone(),
        output,
    };
    ctx.store
        .put_json_create(&paths::output_claim(job), &claim)
        .await?;
    // Whoever won the create race decided the name.
    match ctx
        .store
        .get_json::<OutputClaim>(&paths::output_claim(job))
        .await?
    {
        Some(claim) => Ok(claim.output),
        None => Err(StageError::Transient("the output claim vanished".into())),
    }
}
