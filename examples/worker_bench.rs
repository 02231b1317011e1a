//! One worker's pipeline on a real clip, measured stage by stage: for each batch of the plan the
//! worker would make, decode exactly its frames, style them in model batches, encode the chunk
//! with the source's timestamps (the library's own functions, the job's default encoder). The
//! measuring half of `scripts/bench-worker.sh`.
//!
//! With the style `none` the model is a pass-through (the decoded frames are encoded as they
//! are): what is left is the worker's non-model work, and its frames/s is the ceiling that the
//! decode and the encode put on any device. The pass-through exists here only; no command a
//! user runs can choose it.
//!
//! ```text
//! worker_bench <clip> <style|none> [frames] [batch frames] [model batch]
//! ```
//!
//! Prints one JSON line: frames, batches, wall seconds, and the seconds spent decoding, styling
//! and encoding (the stages run one after another here, so they add up to the wall time), and
//! how many frames the decoder decoded for them (`decoded_frames`, from the clip's keyframes).
//!
//! The batches are decoded the way a worker does, reading on with one open decoder
//! ([`media::decode_frames_with`]); `WORKER_BENCH_DECODE=per-range` decodes each batch with its
//! own ffmpeg from the keyframe at or before it ([`media::decode_frames`]), for comparison.

use std::time::Instant;

use anyhow::{Context as _, bail};
use stylefleet::job::plan_batches;
use stylefleet::media::{self, EncoderSettings};
use stylefleet_models::{Frame, StyleOptions, StyleSpec, Stylizer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (clip, style) = match args.as_slice() {
        [clip, style, ..] => (std::path::PathBuf::from(clip), style.as_str()),
        _ => bail!("usage: worker_bench <clip> <style|none> [frames] [batch frames] [model batch]"),
    };
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("argument {i}"))
        })
    };
    let probe = media::probe(&clip).await?;
    let frames = number(2, probe.frames.len() as u64)?.min(probe.frames.len() as u64);
    let batch_frames = number(3, stylefleet::settings::DEFAULT_BATCH_FRAMES)?;
    let model_batch = number(4, 4)?.max(1) as usize;
    let (width, height) = (probe.video.width, probe.video.height);

    let stylizer = match style {
        "none" => None,
        spec => {
            let spec: StyleSpec = spec.parse()?;
            let stylizer =
                Stylizer::new(&spec, StyleOptions::default(), &candle_core::Device::Cpu)?;
            // One small call first, so that start-up costs are not counted against a batch.
            stylizer.style_batch(&[Frame {
                width: 16,
                height: 16,
                data: vec![128; Frame::byte_len(16, 16)],
            }])?;
            Some(stylizer)
        }
    };
    let settings = EncoderSettings::default();
    let encoder = settings.encoder().await.to_owned();
    let work = tempfile::tempdir()?;
    let (mut decode, mut model, mut encode) = (0.0, 0.0, 0.0);
    let plan = plan_batches(frames, batch_frames, 1);
    let per_range = match std::env::var("WORKER_BENCH_DECODE").as_deref() {
        Ok("per-range") => true,
        Ok("reader") | Err(_) => false,
        Ok(other) => bail!("WORKER_BENCH_DECODE is per-range or reader, not {other}"),
    };
    let keyframe_before = |i: u64| {
        probe.frames[..=i as usize]
            .iter()
            .rposition(|f| f.keyframe)
            .unwrap_or(0) as u64
    };
    // Frames the decoder decodes: from the keyframe at or before each range (per range), or
    // from the reader's position when reading on is the cheaper (the reader's rule).
    let mut decoded_frames = 0u64;
    let mut position: Option<u64> = None;
    let mut reader = None;
    let started = Instant::now();
    for batch in &plan {
        let range = batch.frames[0]..batch.frames[1];
        let seek_from = keyframe_before(range.start);
        let from = match position {
            Some(p)
                if !per_range && p <= range.start && range.start - p <= range.start - seek_from =>
            {
                p
            }
            _ => seek_from,
        };
        decoded_frames += range.end - from;
        position = Some(range.end);
        let t = Instant::now();
        let decoded = if per_range {
            media::decode_frames(&clip, &probe, range.clone()).await?
        } else {
            media::decode_frames_with(&mut reader, &clip, &probe, range.clone()).await?
        };
        decode += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let styled = match &stylizer {
            None => decoded,
            Some(stylizer) => {
                let mut styled = Vec::with_capacity(decoded.len());
                for group in decoded.chunks(model_batch) {
                    let group: Vec<Frame> = group
                        .iter()
                        .map(|data| Frame {
                            width,
                            height,
                            data: data.clone(),
                        })
                        .collect();
                    styled.extend(stylizer.style_batch(&group)?.into_iter().map(|f| f.data));
                }
                styled
            }
        };
        model += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let chunk = work.path().join(format!("{:05}.mp4", batch.index));
        media::encode_chunk(&styled, &probe, range, &chunk, &settings).await?;
        encode += t.elapsed().as_secs_f64();
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "clip": clip.display().to_string(),
            "width": width,
            "height": height,
            "style": style,
            "frames": frames,
            "batches": plan.len(),
            "encoder": format!("{encoder} {} crf {}", settings.preset, settings.crf),
            "wall_s": wall,
            "decode_s": decode,
            "model_s": model,
            "encode_s": encode,
            "decode": if per_range { "per-range" } else { "reader" },
            "decoded_frames": decoded_frames,
        })
    );
    Ok(())
}
