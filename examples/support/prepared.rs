//! What the stitch examples (`stitch_bench`, `stitch_memory`) share: a job planned from a source
//! and every chunk written the way a worker writes it, minus the network (the decoded frames are
//! encoded as they are), so that only the stitch is left to run and measure.

use std::path::Path;

use anyhow::{Context as _, bail};
use stylefleet::job::{DoneMarker, JobId, Manifest, StyleChoice, now_secs, paths};
use stylefleet::stage::Context;
use stylefleet::stage::split::{SplitOutcome, split};

/// Puts `source` at `input/0/video.mp4`, plans its job with `ctx`'s settings, and writes each
/// batch's chunk and done marker (`worker` names the writer in the markers).
pub async fn prepare_unstyled(
    ctx: &Context,
    source: &Path,
    worker: &str,
) -> anyhow::Result<(JobId, Manifest)> {
    let path = "input/0/video.mp4";
    ctx.store.upload(source, path, false).await?;
    let style = StyleChoice::new("0", 1.0, false);
    let job = match split(ctx, path, &style)
        .await
        .map_err(|e| anyhow::anyhow!(e.reason()))?
    {
        SplitOutcome::Planned { job, .. } => job,
        other => bail!("the split did not plan a job: {other:?}"),
    };
    let manifest: Manifest = ctx
        .store
        .get_json(&paths::manifest(&job))
        .await?
        .context("no manifest")?;
    let (_, local) = ctx
        .store
        .fetch_pinned(
            path,
            Some(&manifest.source.fingerprint()),
            &ctx.scratch.join("sources"),
            "mp4",
        )
        .await?;
    let chunk = ctx.scratch.join("prepare-chunk.mp4");
    for batch in &manifest.batches {
        let range = batch.frames[0]..batch.frames[1];
        let frames =
            stylefleet::media::decode_frames(&local, &manifest.probe, range.clone()).await?;
        stylefleet::media::encode_chunk(
            &frames,
            &manifest.probe,
            range.clone(),
            &chunk,
            &manifest.encoder,
        )
        .await?;
        ctx.store
            .upload(&chunk, &paths::chunk(&job, batch.index), false)
            .await?;
        let marker = DoneMarker {
            batch: batch.index,
            frames: batch.len(),
            timings: Default::default(),
            worker: worker.into(),
            encoder: None,
            at: now_secs(),
            started_at: None,
            attempt: None,
        };
        ctx.store
            .put_json_create(&paths::done(&job, batch.index), &marker)
            .await?;
    }
    let _ = std::fs::remove_file(&chunk);
    Ok((job, manifest))
}

/// The one job in the store.
pub async fn the_job(ctx: &Context) -> anyhow::Result<JobId> {
    let ids = stylefleet::inspect::job_ids(&ctx.store).await?;
    match &ids[..] {
        [id] => Ok(id.clone()),
        other => bail!("expected one job in the store, found {}", other.len()),
    }
}
