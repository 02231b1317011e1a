//! Decoding an exact range of frames to packed RGB24, without decoding from the start.
//!
//! The decode seeks (input `-ss`) to the last keyframe at or before the range's first frame,
//! keeps timestamps as they are in the file (`-copyts`), and lets a `select` filter pass only
//! the frames whose pts lies between the range's first and last pts, compared as integers in
//! the stream's time base. `-fps_mode passthrough` stops ffmpeg from duplicating or dropping
//! frames and `-frames:v` stops it after the range. So the seek only has to land early enough;
//! which frames come out is decided by exact timestamps, for VFR, B-frames and long GOPs alike.
//! The count of frames read back is checked; a short read (an open GOP whose leading pictures
//! need the keyframe before) is retried once from the keyframe before that.

use std::ops::Range;
use std::path::Path;

use super::command::FfCommand;
use super::time::{format_micros, micros_floor};
use super::{MediaError, Probe};

/// Decodes frames `frames` (indices into `probe.frames`, presentation order) of `source` into
/// packed RGB24 buffers of `width * height * 3` bytes each, in stored orientation (the
/// display rotation is not applied).
pub async fn decode_frames(
    source: &Path,
    probe: &Probe,
    frames: Range<u64>,
) -> Result<Vec<Vec<u8>>, MediaError> {
    let (start, end) = (frames.start as usize, frames.end as usize);
    if start >= end || end > probe.frames.len() {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "frame range {frames:?} is empty or outside the video's {} frames",
                probe.frames.len()
            ),
        });
    }
    let keyframe = keyframe_at_or_before(probe, start);
    match decode_from(source, probe, start..end, keyframe).await {
        Err(MediaError::FrameCount { .. }) if keyframe > 0 => {
            let earlier = probe.frames[..keyframe]
                .iter()
                .rposition(|f| f.keyframe)
                .unwrap_or(0);
            tracing::debug!(
                ?frames,
                keyframe,
                earlier,
                "short decode, seeking to an earlier keyframe"
            );
            decode_from(source, probe, start..end, earlier).await
        }
        result => result,
    }
}

/// The last keyframe at or before frame `index` (frame 0 when there is none): where a decode
/// of a range starting at `index` has to start.
pub(super) fn keyframe_at_or_before(probe: &Probe, index: usize) -> usize {
    probe.frames[..=index]
        .iter()
        .rposition(|f| f.keyframe)
        .unwrap_or(0)
}

/// One decode attempt that starts reading at frame `seek_frame`.
async fn decode_from(
    source: &Path,
    probe: &Probe,
    range: Range<usize>,
    seek_frame: usize,
) -> Result<Vec<Vec<u8>>, MediaError> {
    let v = &probe.video;
    let count = range.len();
    let captured = decode_command(source, probe, range, seek_frame)
        .run()
        .await?;

    let frame_len = v.width as usize * v.height as usize * 3;
    let out = captured.stdout;
    if out.len() != frame_len * count {
        return Err(MediaError::FrameCount {
            step: "decode frames",
            expected: count as u64,
            actual: (out.len() / frame_len) as u64,
        });
    }
    Ok(out.chunks_exact(frame_len).map(<[u8]>::to_vec).collect())
}

/// The ffmpeg command that writes frames `range` of `source` to stdout as packed RGB24, reading
/// from frame `seek_frame` (a keyframe at or before the range).
pub(crate) fn decode_command(
    source: &Path,
    probe: &Probe,
    range: Range<usize>,
    seek_frame: usize,
) -> FfCommand {
    let v = &probe.video;
    let tb = v.time_base;
    let count = range.len();
    let first = probe.frames[range.start].pts;
    let last = probe.frames[range.end - 1].pts;

    let mut cmd = FfCommand::ffmpeg("decode frames").args(["-noautorotate", "-copyts"]);
    // `-ss` counts from the container's start time; flooring to the microsecond keeps the
    // seek point at or before the keyframe, and the select filter drops anything earlier.
    let seek_us =
        micros_floor(probe.frames[seek_frame].pts, tb) - probe.format.start_time_us.unwrap_or(0);
    if seek_frame > 0 && seek_us > 0 {
        cmd = cmd.args(["-ss", &format_micros(seek_us)]);
    }
    cmd.arg("-i")
        .arg(source)
        .args(["-map", &format!("0:{}", v.index)])
        .args(["-vf", &format!("select='between(pts,{first},{last})'")])
        .args(["-fps_mode", "passthrough", "-frames:v", &count.to_string()])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
}
