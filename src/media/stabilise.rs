//! The stitch with temporal stabilisation: the styled chunks and the source are decoded side by
//! side, frame by frame, in display order; each styled frame goes through the
//! [`Stabiliser`](crate::temporal::Stabiliser) with its source frame, and the result is encoded as
//! one video carrying the source's timestamps (the same command as a chunk's encode, over the
//! whole range), which the plain [`stitch`](super::stitch()) then joins with the source's audio
//! and subtitles.
//!
//! Memory stays at a few frames whatever the length of the video: three ffmpeg processes stream
//! through pipes (one chunk decoder at a time, the source decoder, the encoder). The filter is
//! one chain over the whole video, so the frame pairs at batch boundaries are treated like every
//! other pair. The styled frames go through one more encode (the same encoder and quality as the
//! chunks).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::command::{FfCommand, Streaming};
use super::decode::decode_command;
use super::encode::{encode_command, sibling};
use super::verify::verify_chunk;
use super::{EncoderSettings, MediaError, Probe};
use crate::temporal::{Restart, Stabiliser, TemporalSettings};

/// What the stabilised stitch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StabiliseReport {
    /// Frames stabilised.
    pub frames: u64,
    /// Restarts of the filter at cuts, fades and luma jumps (the first frame not counted).
    pub restarts: u64,
    /// Mean fraction of reliable pixels over the blended frames.
    pub reliable: f64,
    /// Seconds spent in the flow and the blend (not in decoding or encoding).
    pub filter_seconds: f64,
    /// Seconds spent checking the stabilised video against the source (ffprobe).
    pub probe_seconds: f64,
    /// Seconds spent joining the stabilised video with the source's other streams.
    pub join_seconds: f64,
}

/// Stitches `chunks` into `out` like [`stitch_checked`](super::stitch::stitch_checked), with
/// every frame stabilised against the ones before it under `temporal`. `counts[i]` is the frame
/// count of `chunks[i]` (the plan's): nothing is probed before the pass, and the pass itself
/// checks each count as it decodes the chunk (a chunk that ends early or holds more frames fails
/// the stitch).
pub async fn stitch_stabilised(
    source: &Path,
    probe: &Probe,
    chunks: &[PathBuf],
    counts: &[usize],
    out: &Path,
    settings: &EncoderSettings,
    temporal: &TemporalSettings,
) -> Result<StabiliseReport, MediaError> {
    let total = probe.frames.len();
    if chunks.is_empty() || total == 0 || chunks.len() != counts.len() {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "{} chunks and {} counts to stitch a {total}-frame video",
                chunks.len(),
                counts.len()
            ),
        });
    }
    let mut probe_seconds = 0.0;
    let styled_frames: usize = counts.iter().sum();
    if styled_frames != total {
        return Err(MediaError::FrameCount {
            step: "stabilise the chunks",
            expected: total as u64,
            actual: styled_frames as u64,
        });
    }

    let video = sibling(out, "stabilised.mp4");
    let (encode, script) = encode_command(probe, 0..total as u64, &video, settings).await?;
    let result = stabilise_into(source, probe, chunks, counts, encode, temporal).await;
    let _ = tokio::fs::remove_file(&script).await;
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = tokio::fs::remove_file(&video).await;
            return Err(e);
        }
    };
    // The stabilised video is checked once, here; the join takes its frame count from that
    // check instead of probing it again (its codec is the job's: it was encoded just now).
    let stitched = async {
        let checking = Instant::now();
        verify_chunk(probe, 0..total as u64, &video).await?;
        probe_seconds += checking.elapsed().as_secs_f64();
        let joining = Instant::now();
        super::stitch::stitch_checked(source, probe, std::slice::from_ref(&video), &[total], out)
            .await?;
        Ok::<_, MediaError>(joining.elapsed().as_secs_f64())
    }
    .await;
    let _ = tokio::fs::remove_file(&video).await;
    report.probe_seconds = probe_seconds;
    report.join_seconds = stitched?;
    Ok(report)
}

/// Runs the three streams: the source decoder, one chunk decoder after another, the encoder.
async fn stabilise_into(
    source: &Path,
    probe: &Probe,
    chunks: &[PathBuf],
    counts: &[usize],
    encode: FfCommand,
    temporal: &TemporalSettings,
) -> Result<StabiliseReport, MediaError> {
    let v = &probe.video;
    let frame_len = v.width as usize * v.height as usize * 3;
    let total = probe.frames.len();
    let mut encoder = encode.spawn(true)?;
    let mut decoder = decode_command(source, probe, 0..total, 0).spawn(false)?;
    let mut stabiliser = Some(Stabiliser::new(temporal.clone(), v.width, v.height));
    let mut report = StabiliseReport::default();
    let mut reliable_sum = 0.0f64;
    let mut blended = 0u64;
    let mut src = vec![0u8; frame_len];
    let mut styled = vec![0u8; frame_len];
    for (chunk, &count) in chunks.iter().zip(counts) {
        let mut reader = FfCommand::ffmpeg("decode a chunk")
            .args(["-noautorotate", "-i"])
            .arg(chunk)
            .args(["-map", "0:v:0", "-fps_mode", "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .spawn(false)?;
        for _ in 0..count {
            if let Err(e) = read_frame(&mut reader, &mut styled).await {
                return Err(reader.broken(e).await);
            }
            if let Err(e) = read_frame(&mut decoder, &mut src).await {
                return Err(decoder.broken(e).await);
            }
            let Some(mut filter) = stabiliser.take() else {
                break;
            };
            let (s, st) = (std::mem::take(&mut src), std::mem::take(&mut styled));
            let started = Instant::now();
            let (filter, s, st, (frame, step)) = tokio::task::spawn_blocking(move || {
                let result = filter.push(&s, &st);
                (filter, s, st, result)
            })
            .await
            .map_err(|e| MediaError::Spawn {
                program: "the stabiliser",
                step: "stabilise frames",
                source: std::io::Error::other(e.to_string()),
            })?;
            report.filter_seconds += started.elapsed().as_secs_f64();
            (src, styled, stabiliser) = (s, st, Some(filter));
            report.frames += 1;
            match step.restart {
                None => {
                    reliable_sum += f64::from(step.reliable);
                    blended += 1;
                }
                Some(Restart::First) => {}
                Some(kind) => {
                    tracing::debug!(
                        frame = report.frames - 1,
                        ?kind,
                        "temporal filter restarted"
                    );
                    report.restarts += 1;
                }
            }
            let written = match encoder.stdin.as_mut() {
                Some(stdin) => stdin.write_all(&frame).await,
                None => Err(std::io::Error::other("the encoder has no input")),
            };
            if let Err(e) = written {
                return Err(encoder.broken(e).await);
            }
        }
        // The chunk must end here: one more byte means it holds more frames than its count.
        let mut beyond = [0u8; 1];
        let more = match reader.stdout.as_mut() {
            Some(stdout) => stdout.read(&mut beyond).await,
            None => Ok(0),
        };
        match more {
            Ok(0) => reader.finish().await?,
            Ok(_) => {
                return Err(MediaError::FrameCount {
                    step: "decode a chunk",
                    expected: count as u64,
                    actual: count as u64 + 1,
                });
            }
            Err(e) => return Err(reader.broken(e).await),
        }
    }
    decoder.finish().await?;
    encoder.finish().await?;
    report.reliable = if blended == 0 {
        0.0
    } else {
        reliable_sum / blended as f64
    };
    Ok(report)
}

/// Reads exactly one frame from the tool's stdout.
async fn read_frame(tool: &mut Streaming, frame: &mut [u8]) -> std::io::Result<()> {
    match tool.stdout.as_mut() {
        Some(stdout) => stdout.read_exact(frame).await.map(drop),
        None => Err(std::io::Error::other("the decoder has no output")),
    }
}
