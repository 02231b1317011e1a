//! The aggregator's stitch of a large job, and the peak memory of the process that ran it: the
//! measuring half of `scripts/bench-stitch-memory.sh`.
//!
//! ```text
//! stitch_memory prepare <data> <source> <batch-frames>   # plan the job, write every chunk and done marker
//! stitch_memory stitch  <data>                           # stitch it (a process of its own), print the peak
//! ```
//!
//! `prepare` splits `<source>` (put at `input/0/video.mp4`) and writes each batch's chunk the way
//! a worker does, minus the network: the frames are decoded and encoded as they are (lossless
//! x264, so the output is as large as the source). `stitch` runs
//! `stylefleet::stage::aggregate::stitch` on that job: the chunks and the pinned source are read
//! from the store, ffmpeg joins them with the source's audio, the result is verified against the
//! source and uploaded create-only; then it prints `stitch output_bytes=<n> seconds=<s>
//! rss_before_kib=<k> peak_rss_kib=<k>`, the peak being the kernel's high-water mark (`VmHWM`)
//! of this process (ffmpeg and ffprobe run in processes of their own).
//!
//! The store is the data folder, or whatever `STYLEFLEET_STORE` names (`az://<container>` with
//! the Azure variables set, for Azurite).

#[path = "support/prepared.rs"]
mod prepared;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use stylefleet::job::{Manifest, paths};
use stylefleet::media::EncoderSettings;
use stylefleet::settings::Settings;
use stylefleet::setup::Location;
use stylefleet::stage::{Context, JobLog};

use prepared::{prepare_unstyled, the_job};

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("a bad line: {line}"))?;
    Ok(kib.parse()?)
}

async fn context(data: &Path, batch_frames: u64) -> anyhow::Result<Context> {
    let mut location = Location::embedded(data);
    location.store = std::env::var("STYLEFLEET_STORE").ok();
    let settings = Settings {
        batch_frames,
        // Lossless and fast: the chunks, and so the output, are as large as the source.
        encoder: EncoderSettings {
            codec: "libx264".into(),
            crf: 0,
            preset: "ultrafast".into(),
            pix_fmt: "yuv420p".into(),
        },
        ..Settings::default()
    };
    Ok(stylefleet::setup::context(&location, settings).await?)
}

async fn prepare(data: &Path, source: &Path, batch_frames: u64) -> anyhow::Result<()> {
    let ctx = context(data, batch_frames).await?;
    let (job, manifest) = prepare_unstyled(&ctx, source, "stitch_memory").await?;
    println!(
        "prepared job {job}: {} frames in {} chunks",
        manifest.probe.frames.len(),
        manifest.batches.len()
    );
    Ok(())
}

async fn stitch(data: &Path) -> anyhow::Result<()> {
    // The batch size is the manifest's; the context's does not matter for a stitch.
    let ctx = context(data, 16).await?;
    let job = the_job(&ctx).await?;
    let manifest: Manifest = ctx
        .store
        .get_json(&paths::manifest(&job))
        .await?
        .context("no manifest")?;
    let before = status_kib("VmRSS:")?;
    let started = Instant::now();
    let mut log = JobLog::new(&job, "stitch.bench");
    stylefleet::stage::aggregate::stitch(&ctx, &manifest, &mut log)
        .await
        .map_err(|e| anyhow::anyhow!(e.reason()))?;
    let seconds = started.elapsed().as_secs_f64();
    let output = ctx
        .store
        .get_json::<stylefleet::job::Status>(&paths::status(&job))
        .await?
        .and_then(|s| s.output)
        .context("the job names no output")?;
    let bytes = ctx
        .store
        .head(&output)
        .await?
        .context("the output is missing")?
        .size;
    println!(
        "stitch output_bytes={bytes} seconds={seconds:.1} rss_before_kib={before} peak_rss_kib={}",
        status_kib("VmHWM:")?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [mode, data, source, batch] if mode == "prepare" => {
            prepare(Path::new(data), Path::new(source), batch.parse()?).await
        }
        [mode, data] if mode == "stitch" => stitch(Path::new(data)).await,
        _ => bail!(
            "usage: stitch_memory prepare <data> <source> <batch-frames> | stitch_memory stitch <data>"
        ),
    }
}
