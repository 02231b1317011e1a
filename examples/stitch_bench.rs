//! The aggregator's stitch of one job, phase by phase: the measuring half of
//! `scripts/bench-stitch.sh`.
//!
//! ```text
//! stitch_bench prepare <data> <source> <batch-frames> <on|off>   # plan the job (temporal on or off), write every chunk and done marker
//! stitch_bench stitch  <data>                                    # stitch it, print the phases as one JSON line
//! ```
//!
//! `prepare` splits `<source>` (put at `input/0/video.mp4`) with the default encoder settings and
//! writes each batch's chunk the way a worker does, minus the network (the decoded frames are
//! encoded as they are). `stitch` runs `stylefleet::stage::aggregate::stitch` on that job (fetch
//! the chunks and the pinned source, join or stabilise, verify against the source, upload
//! create-only) and prints its wall time and the phase timings the stitch records in the job's
//! status. A job stitches once: copy the prepared data folder for each run.

#[path = "support/prepared.rs"]
mod prepared;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use stylefleet::job::{Manifest, paths};
use stylefleet::settings::Settings;
use stylefleet::setup::Location;
use stylefleet::stage::{Context, JobLog};

use prepared::{prepare_unstyled, the_job};

async fn context(data: &Path, batch_frames: u64, temporal: bool) -> anyhow::Result<Context> {
    let defaults = Settings::default();
    let settings = Settings {
        batch_frames,
        temporal: if temporal {
            defaults.temporal.clone()
        } else {
            None
        },
        ..defaults
    };
    Ok(stylefleet::setup::context(&Location::embedded(data), settings).await?)
}

async fn prepare(
    data: &Path,
    source: &Path,
    batch_frames: u64,
    temporal: bool,
) -> anyhow::Result<()> {
    let ctx = context(data, batch_frames, temporal).await?;
    let (job, manifest) = prepare_unstyled(&ctx, source, "stitch_bench").await?;
    println!(
        "prepared job {job}: {} frames in {} chunks, temporal {}",
        manifest.probe.frames.len(),
        manifest.batches.len(),
        if temporal { "on" } else { "off" }
    );
    Ok(())
}

async fn stitch(data: &Path) -> anyhow::Result<()> {
    // The batch size and temporal choice are the manifest's; the context's do not matter here.
    let ctx = context(data, 16, false).await?;
    let job = the_job(&ctx).await?;
    let manifest: Manifest = ctx
        .store
        .get_json(&paths::manifest(&job))
        .await?
        .context("no manifest")?;
    let started = Instant::now();
    let mut log = JobLog::new(&job, "stitch.bench");
    stylefleet::stage::aggregate::stitch(&ctx, &manifest, &mut log)
        .await
        .map_err(|e| anyhow::anyhow!(e.reason()))?;
    let seconds = started.elapsed().as_secs_f64();
    let status = ctx
        .store
        .get_json::<stylefleet::job::Status>(&paths::status(&job))
        .await?
        .context("no status")?;
    let phases: serde_json::Map<String, serde_json::Value> = status
        .timings
        .iter()
        .filter(|(k, _)| k.starts_with("stitch_"))
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "frames": manifest.probe.frames.len(),
            "chunks": manifest.batches.len(),
            "temporal": manifest.temporal.is_some(),
            "seconds": seconds,
            "phases": phases,
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [mode, data, source, batch, temporal] if mode == "prepare" => {
            let temporal = match temporal.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("temporal is on or off, not {other}"),
            };
            prepare(Path::new(data), Path::new(source), batch.parse()?, temporal).await
        }
        [mode, data] if mode == "stitch" => stitch(Path::new(data)).await,
        _ => bail!(
            "usage: stitch_bench prepare <data> <source> <batch-frames> <on|off> | stitch_bench stitch <data>"
        ),
    }
}
