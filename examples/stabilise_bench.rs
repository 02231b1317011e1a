//! The cost of the temporal stabiliser alone: `Stabiliser::push` on real 720p frames, with no
//! network and no encode.
//!
//! ```text
//! stabilise_bench [frames] [runs] [clip]
//! ```
//!
//! Decodes the first `frames` (default 48) frames of `clip` (default
//! `.cache/footage/bigbuckbunny.mp4`) as the pipeline does (`media::decode_frames`), makes a deterministic "styled" frame
//! from each (a colour-mixed copy moved by a few pixels, with per-frame noise: the filter does not
//! care where styled frames come from), holds them all in memory, then runs a fresh
//! [`Stabiliser`] with the default settings over them `runs` (default 3) times. Prints the median
//! milliseconds a frame (the pushes only) and its split into the filter's parts
//! ([`Stabiliser::timings`]), rayon's thread count, and a SHA-256 of every output frame and
//! [`Step`]: a change that is meant to make the filter cheaper must leave the digest as
//! it is.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure};
use sha2::{Digest as _, Sha256};
use stylefleet::temporal::{Restart, Stabiliser, Step, TemporalSettings};

/// A deterministic stand-in for the network's picture of `source` (frame `t`): each channel a mix
/// of the source's three, taken 3 pixels left and 2 up (edges clamped), plus noise that changes
/// from frame to frame as per-frame styling does.
fn styled(source: &[u8], w: usize, h: usize, t: usize) -> Vec<u8> {
    let mut out = vec![0u8; source.len()];
    for y in 0..h {
        let sy = y.saturating_sub(2);
        for x in 0..w {
            let sx = x.saturating_sub(3);
            let p = 3 * (sy * w + sx);
            let (r, g, b) = (
                i32::from(source[p]),
                i32::from(source[p + 1]),
                i32::from(source[p + 2]),
            );
            let mut hash = (t as u32)
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add((y * w + x) as u32)
                .wrapping_mul(0x85EB_CA6B);
            hash ^= hash >> 15;
            let noise = (hash % 17) as i32 - 8;
            let q = 3 * (y * w + x);
            out[q] = ((2 * r + g + b) / 4 + noise).clamp(0, 255) as u8;
            out[q + 1] = ((r + 2 * g + b) / 4 - noise).clamp(0, 255) as u8;
            out[q + 2] = ((r + g + 2 * b) / 4 + noise / 2).clamp(0, 255) as u8;
        }
    }
    out
}

/// One byte per kind of step, for the digest.
fn restart_code(restart: Option<Restart>) -> u8 {
    match restart {
        None => 0,
        Some(Restart::First) => 1,
        Some(Restart::AfterFlat) => 2,
        Some(Restart::LumaJump) => 3,
        Some(Restart::Cut) => 4,
    }
}

/// The index of the median of `values`.
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[order.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(48), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let clip = PathBuf::from(
        args.next()
            .unwrap_or_else(|| ".cache/footage/bigbuckbunny.mp4".into()),
    );
    if args.next().is_some() || runs == 0 || n == 0 {
        bail!("usage: stabilise_bench [frames] [runs] [clip]");
    }
    let probe = stylefleet::media::probe(&clip).await?;
    let (w, h) = (probe.video.width as usize, probe.video.height as usize);
    let n = n.min(probe.frames.len());
    let sources = stylefleet::media::decode_frames(&clip, &probe, 0..n as u64).await?;
    let styled: Vec<Vec<u8>> = sources
        .iter()
        .enumerate()
        .map(|(t, s)| styled(s, w, h, t))
        .collect();
    println!(
        "{}: {n} frames of {w}x{h}, {runs} runs, {} rayon threads",
        clip.display(),
        rayon::current_num_threads()
    );

    let mut per_frame = Vec::with_capacity(runs);
    let mut timings = Vec::with_capacity(runs);
    let mut digests = Vec::with_capacity(runs);
    let mut steps: Vec<Step> = Vec::with_capacity(n);
    for _ in 0..runs {
        let mut stab = Stabiliser::new(TemporalSettings::default(), w as u32, h as u32);
        let mut hasher = Sha256::new();
        let mut spent = 0.0f64;
        steps.clear();
        for (source, styled) in sources.iter().zip(&styled) {
            let started = Instant::now();
            let (out, step) = stab.push(source, styled);
            spent += started.elapsed().as_secs_f64();
            hasher.update(&out);
            hasher.update([restart_code(step.restart)]);
            hasher.update(step.reliable.to_le_bytes());
            steps.push(step);
        }
        per_frame.push(1000.0 * spent / n as f64);
        timings.push(stab.timings());
        digests.push(hasher.finalize());
    }
    ensure!(
        digests.iter().all(|d| *d == digests[0]),
        "the runs disagree: the filter is not deterministic"
    );
    let restarts: Vec<String> = steps
        .iter()
        .enumerate()
        .filter_map(|(t, s)| s.restart.map(|r| format!("{t}:{r:?}")))
        .collect();
    let blended: Vec<f32> = steps
        .iter()
        .filter(|s| s.restart.is_none())
        .map(|s| s.reliable)
        .collect();
    println!(
        "restarts {}, mean reliable {:.3}",
        restarts.join(" "),
        blended.iter().sum::<f32>() / blended.len().max(1) as f32
    );
    let runs_text: Vec<String> = per_frame.iter().map(|v| format!("{v:.1}")).collect();
    // The run whose total is the median, and its split.
    let median = median_index(&per_frame);
    println!(
        "push: {:.1} ms a frame (median of {runs}: {})",
        per_frame[median],
        runs_text.join(" ")
    );
    let middle = timings[median];
    let ms = |d: std::time::Duration| 1000.0 * d.as_secs_f64() / n as f64;
    println!(
        "split (ms a frame): prepare {:.1}, flow {:.1}, blend {:.1}, restart {:.1}",
        ms(middle.prepare),
        ms(middle.flow),
        ms(middle.blend),
        ms(middle.restart)
    );
    let hex: String = digests[0].iter().map(|b| format!("{b:02x}")).collect();
    println!("digest {hex}");
    Ok(())
}
