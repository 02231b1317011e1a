//! `stylefleet process --dry-run`: what a run would do and cost, found without doing it.
//!
//! The input is probed and checked against the limits, the style is loaded, and the batches are
//! planned as the splitter plans them (`plan_batches` over the frame count). The time comes from
//! the model itself, measured now on this machine: two neighbouring frames from the middle of the
//! video, at its own size, styled one after the other on the device the workers would use; the
//! faster call (the first can pay for warming up) is the cost of a frame. The workers of one
//! machine share its cores or its GPU, so the estimate is frames times that cost, whatever
//! `--workers` says. The disk comes from the encoder: the two styled frames are encoded with the
//! job's settings, one and then both, which gives what a keyframe and what a following frame
//! take; chunks start with a keyframe each, and the stitched output has one every 250 frames
//! (libx264's default interval).
//!
//! Nothing is written: no data folder, store, queue, scratch file or output.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use stylefleet::job::{BatchPlan, plan_batches};
use stylefleet::media::{EncoderSettings, Probe};
use stylefleet::settings::Settings;

use crate::args::{Location, Planning, StyleArgs};

/// Frames between keyframes in a stream libx264 encodes with its defaults.
const KEYFRAME_INTERVAL: u64 = 250;

/// What a keyframe and a following frame take once encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBytes {
    /// The first frame of a stream (or chunk).
    pub key: u64,
    /// A frame that follows another.
    pub next: u64,
}

impl FrameBytes {
    /// The bytes of a stream of `frames` frames with a keyframe every `interval`.
    pub fn stream(self, frames: u64, interval: u64) -> u64 {
        let keys = frames.div_ceil(interval.max(1));
        keys * self.key + (frames - keys) * self.next
    }
}

/// Prints the plan for processing `input` into `output`; writes nothing.
pub async fn run(
    input: &Path,
    output: &Path,
    style: &StyleArgs,
    planning: &Planning,
    location: &Location,
    workers: usize,
) -> anyhow::Result<ExitCode> {
    let mut settings = super::settings(Some(planning));
    settings.plan_workers = u32::try_from(workers).unwrap_or(u32::MAX);
    let meta =
        std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a file", input.display());
    }
    let probe = stylefleet::media::probe(input)
        .await
        .with_context(|| format!("{} cannot be processed", input.display()))?;
    stylefleet::media::check(&probe, &settings.limits)
        .with_context(|| format!("{} cannot be processed", input.display()))?;
    let v = &probe.video;
    let frames = probe.frame_count();
    let duration = probe.video_duration_s();
    let batches = plan_batches(frames, settings.batch_frames, settings.plan_workers);

    println!("dry run: nothing is written");
    println!(
        "input    {}: {}x{}{}, {frames} frames, {duration:.2} s, {}, {}",
        input.display(),
        v.width,
        v.height,
        match v.rotation {
            0 => String::new(),
            r => format!(" (shown turned {r} degrees)"),
        },
        v.codec_name,
        human_bytes(meta.len()),
    );
    println!(
        "plan     {} batches of {} frames (at most {}), {} queued at a time; {workers} worker{}",
        batches.len(),
        batch_sizes(&batches),
        settings.batch_frames,
        settings.flood.max_queued_per_job.min(batches.len() as u32),
        if workers == 1 { "" } else { "s" },
    );
    eprintln!(
        "measuring the model on two frames at {}x{}...",
        v.width, v.height
    );
    let sample = sample(input, &probe).await?;
    let measured = measure(style, &settings, &probe, sample).await?;
    println!(
        "model    {:.3} s a frame at {}x{} on {} (measured now: the faster of two calls of one frame; loading took {:.2} s)",
        measured.seconds_per_frame, v.width, v.height, measured.device, measured.load_seconds,
    );
    println!(
        "time     about {} of styling ({frames} frames x {:.3} s; the workers share this machine's {}), plus decoding, encoding{} and the stitch",
        human_duration(frames as f64 * measured.seconds_per_frame),
        measured.seconds_per_frame,
        if measured.device == "the CPU" {
            "cores"
        } else {
            "device"
        },
        if settings.temporal.is_some() {
            ", temporal stabilisation"
        } else {
            ""
        },
    );
    let bytes = measured.bytes;
    let chunks: u64 = batches
        .iter()
        .map(|b| bytes.stream(b.len(), KEYFRAME_INTERVAL))
        .sum();
    // With stabilisation the output is encoded again as one stream; without, the chunks are
    // joined as they are.
    let styled = match settings.temporal {
        Some(_) => bytes.stream(frames, KEYFRAME_INTERVAL),
        None => chunks,
    };
    let source = meta.len();
    let data_total = source * 2 + chunks + styled;
    println!(
        "disk     about {} in {} (input copy {}, working copy {}, chunks {}, output {}) and {} for {}; \
         estimated from a keyframe of {} and a following frame of {} (video only; audio is copied as it is)",
        human_bytes(data_total),
        location.data.display(),
        human_bytes(source),
        human_bytes(source),
        human_bytes(chunks),
        human_bytes(styled),
        human_bytes(styled),
        output.display(),
        human_bytes(bytes.key),
        human_bytes(bytes.next),
    );
    Ok(ExitCode::SUCCESS)
}

/// Two neighbouring frames from the middle of the video (one when it has one), as stored.
async fn sample(input: &Path, probe: &Probe) -> anyhow::Result<Vec<Vec<u8>>> {
    let middle = stylefleet::media::frame_index_at(probe, None)?;
    let end = (middle + 2).min(probe.frame_count());
    let start = end.saturating_sub(2);
    Ok(stylefleet::media::decode_frames(input, probe, start..end).await?)
}

/// What the measurement found.
struct Measured {
    seconds_per_frame: f64,
    load_seconds: f64,
    device: String,
    bytes: FrameBytes,
}

#[cfg(feature = "style")]
async fn measure(
    style: &StyleArgs,
    settings: &Settings,
    probe: &Probe,
    sample: Vec<Vec<u8>>,
) -> anyhow::Result<Measured> {
    use std::time::Instant;
    use stylefleet_models::{Frame, StyleOptions, StyleSpec, Stylizer};

    let spec: StyleSpec = style.style.parse()?;
    let options = StyleOptions {
        strength: style.strength,
        preserve_colour: style.preserve_colour,
    };
    let (width, height) = (probe.video.width, probe.video.height);
    let (styled, seconds_per_frame, load_seconds, device) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let device = stylefleet_models::device(true)?;
            let loading = Instant::now();
            let stylizer = Stylizer::new(&spec, options, &device)?;
            let load_seconds = loading.elapsed().as_secs_f64();
            let mut fastest = f64::INFINITY;
            let mut styled = Vec::new();
            for data in sample {
                let frame = Frame {
                    width,
                    height,
                    data,
                };
                let started = Instant::now();
                let out = stylizer.style_batch(std::slice::from_ref(&frame))?;
                fastest = fastest.min(started.elapsed().as_secs_f64());
                styled.extend(out.into_iter().map(|f| f.data));
            }
            let device = if device.is_cpu() {
                "the CPU".to_owned()
            } else {
                format!("the GPU ({:?})", device.location())
            };
            Ok((styled, fastest, load_seconds, device))
        })
        .await??;
    let bytes = frame_bytes(&styled, width, height, &settings.encoder).await?;
    Ok(Measured {
        seconds_per_frame,
        load_seconds,
        device,
        bytes,
    })
}

#[cfg(not(feature = "style"))]
async fn measure(
    _: &StyleArgs,
    _: &Settings,
    _: &Probe,
    _: Vec<Vec<u8>>,
) -> anyhow::Result<Measured> {
    anyhow::bail!(
        "this build has no models (built without the `style` feature): nothing to measure"
    )
}

/// What the styled sample frames take once encoded: a keyframe (the first alone) and a following
/// frame (both, less the first).
#[cfg_attr(not(feature = "style"), allow(dead_code))]
async fn frame_bytes(
    styled: &[Vec<u8>],
    width: u32,
    height: u32,
    encoder: &EncoderSettings,
) -> anyhow::Result<FrameBytes> {
    let Some(first) = styled.first() else {
        anyhow::bail!("the model returned no frame")
    };
    let one = stylefleet::media::encoded_size(std::slice::from_ref(first), width, height, encoder)
        .await?;
    if styled.len() < 2 {
        return Ok(FrameBytes {
            key: one,
            next: one,
        });
    }
    let two = stylefleet::media::encoded_size(&styled[..2], width, height, encoder).await?;
    Ok(FrameBytes {
        key: one,
        next: two.saturating_sub(one),
    })
}

/// `850 kB`, `12.3 MB`, `4.1 GB`.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

/// `42 s`, `3 min 20 s`, `2 h 05 min`.
fn human_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// The sizes of the planned batches in words: `16`, or `13 to 14` (the plan balances them).
fn batch_sizes(batches: &[BatchPlan]) -> String {
    let sizes = batches.iter().map(BatchPlan::len);
    match (sizes.clone().min(), sizes.max()) {
        (Some(low), Some(high)) if low != high => format!("{low} to {high}"),
        (Some(size), _) => size.to_string(),
        _ => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_pay_a_keyframe_per_interval() {
        let b = FrameBytes { key: 100, next: 10 };
        assert_eq!(b.stream(1, 250), 100);
        assert_eq!(b.stream(16, 250), 100 + 15 * 10);
        assert_eq!(b.stream(251, 250), 2 * 100 + 249 * 10);
        assert_eq!(b.stream(0, 250), 0);
    }

    #[test]
    fn batch_sizes_name_the_range_of_the_balanced_plan() {
        assert_eq!(batch_sizes(&plan_batches(40, 16, 1)), "13 to 14");
        assert_eq!(batch_sizes(&plan_batches(32, 16, 1)), "16");
        assert_eq!(batch_sizes(&plan_batches(0, 16, 1)), "0");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(7_300), "7.3 kB");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
        assert_eq!(human_bytes(4_100_000_000), "4.1 GB");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(0.34), "0.3 s");
        assert_eq!(human_duration(200.0), "3 min 20 s");
        assert_eq!(human_duration(7500.0), "2 h 05 min");
    }
}
