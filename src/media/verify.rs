//! Checking a chunk or the stitched output against the source, with ffprobe (packets only).
//!
//! Timestamps are compared relative to the first frame, exactly, across time bases (rational
//! arithmetic on integers). The output must have the source's frame count, per-frame pts,
//! stored size and rotation; every audio and subtitle stream of the source must be present
//! with the same codec (copied, not re-encoded; text subtitles as `mov_text`); and each audio stream must start and last as
//! long, relative to the video, as in the source, within one audio frame.

use std::ops::Range;
use std::path::Path;

use super::probe::StreamInfo;
use super::time::{Rational, same_instant, seconds_between};
use super::{MediaError, Probe};

/// Checks the stitched `output` against the `source` it was made from.
pub async fn verify(source: &Probe, output: &Path) -> Result<(), MediaError> {
    let output = super::probe(output).await?;
    compare(source, &output)
}

/// Checks that `chunk` holds exactly the source frames `range`, with their timestamps
/// relative to the range's first frame.
pub async fn verify_chunk(
    source: &Probe,
    range: Range<u64>,
    chunk: &Path,
) -> Result<(), MediaError> {
    let chunk_probe = super::probe(chunk).await?;
    compare_chunk(source, range, &chunk_probe)
}

/// [`verify_chunk`] on a chunk probed already.
pub fn compare_chunk(
    source: &Probe,
    range: Range<u64>,
    chunk_probe: &Probe,
) -> Result<(), MediaError> {
    let (start, end) = (
        range.start as usize,
        range.end.min(source.frame_count()) as usize,
    );
    compare_frames(
        &source.frames[start.min(end)..end],
        source.video.time_base,
        chunk_probe,
    )
}

/// Compares a probed output with its source; the first difference is the error.
pub fn compare(source: &Probe, output: &Probe) -> Result<(), MediaError> {
    compare_frames(&source.frames, source.video.time_base, output)?;
    let (s, o) = (&source.video, &output.video);
    if (s.width, s.height) != (o.width, o.height) {
        return mismatch(format!(
            "the output is {}x{}, the source {}x{}",
            o.width, o.height, s.width, s.height
        ));
    }
    if s.rotation != o.rotation {
        return mismatch(format!(
            "the output is rotated {}°, the source {}°",
            o.rotation, s.rotation
        ));
    }

    let mut outputs = output.carried_streams();
    for stream in source.carried_streams() {
        let Some(copy) = outputs.next() else {
            return mismatch(format!(
                "the source's {} stream #{} ({}) is missing from the output",
                stream.codec_type,
                stream.index,
                stream.codec_name.as_deref().unwrap_or("unknown codec")
            ));
        };
        let expected = stream.mp4_codec().or(stream.codec_name.as_deref());
        if (&copy.codec_type, copy.codec_name.as_deref()) != (&stream.codec_type, expected) {
            return mismatch(format!(
                "the source's {} stream #{} ({}) became {} ({}) in the output",
                stream.codec_type,
                stream.index,
                stream.codec_name.as_deref().unwrap_or("unknown codec"),
                copy.codec_type,
                copy.codec_name.as_deref().unwrap_or("unknown codec")
            ));
        }
        if stream.codec_type == "audio" {
            compare_audio(source, stream, output, copy)?;
        }
    }
    if let Some(extra) = outputs.next() {
        return mismatch(format!(
            "the output has an extra {} stream #{}",
            extra.codec_type, extra.index
        ));
    }
    Ok(())
}

/// Frame count and per-frame relative pts of `output` against `expected`.
fn compare_frames(
    expected: &[super::FrameTime],
    tb: Rational,
    output: &Probe,
) -> Result<(), MediaError> {
    if expected.len() != output.frames.len() {
        return mismatch(format!(
            "the output has {} video frames, the source {}",
            output.frames.len(),
            expected.len()
        ));
    }
    let (Some(e0), Some(o0)) = (expected.first(), output.frames.first()) else {
        return Ok(());
    };
    let otb = output.video.time_base;
    for (i, (e, o)) in expected.iter().zip(&output.frames).enumerate() {
        if !same_instant(e.pts - e0.pts, tb, o.pts - o0.pts, otb) {
            return mismatch(format!(
                "frame {i} is at {} in the output but at {} in the source (relative to the first frame)",
                show_time(o.pts - o0.pts, otb),
                show_time(e.pts - e0.pts, tb)
            ));
        }
    }
    Ok(())
}

/// Audio start and duration, relative to the video, within one audio frame.
fn compare_audio(
    source: &Probe,
    s: &StreamInfo,
    output: &Probe,
    o: &StreamInfo,
) -> Result<(), MediaError> {
    let (Some(stb), Some(otb)) = (s.time_base, o.time_base) else {
        return Ok(());
    };
    // One audio frame: the average packet duration of the source stream.
    let frame = match (s.duration_ts, s.nb_frames) {
        (Some(d), Some(n)) if n > 0 => (d as f64 / n as f64) * stb.as_f64(),
        _ => 0.1,
    }
    .max(1e-3);
    let (Some(sv), Some(ov)) = (source.frames.first(), output.frames.first()) else {
        return Ok(());
    };
    let (vtb_s, vtb_o) = (source.video.time_base, output.video.time_base);
    if let (Some(sa), Some(oa)) = (s.start_pts, o.start_pts) {
        let lead_s = ratio(seconds_between(sa, stb, sv.pts, vtb_s));
        let lead_o = ratio(seconds_between(oa, otb, ov.pts, vtb_o));
        if (lead_s - lead_o).abs() > frame {
            return mismatch(format!(
                "audio stream #{} starts {lead_o:+.6} s from the video in the output, {lead_s:+.6} s in the source",
                o.index
            ));
        }
    }
    if let (Some(sd), Some(od)) = (s.duration_ts, o.duration_ts) {
        let (sd, od) = (sd as f64 * stb.as_f64(), od as f64 * otb.as_f64());
        if (sd - od).abs() > frame {
            return mismatch(format!(
                "audio stream #{} lasts {od:.6} s in the output, {sd:.6} s in the source",
                o.index
            ));
        }
    }
    Ok(())
}

fn ratio((num, den): (i128, i128)) -> f64 {
    num as f64 / den as f64
}

fn show_time(ticks: i64, tb: Rational) -> String {
    format!("{ticks}*{tb} s ({:.6} s)", ticks as f64 * tb.as_f64())
}

fn mismatch<T>(reason: String) -> Result<T, MediaError> {
    Err(MediaError::Mismatch { reason })
}
