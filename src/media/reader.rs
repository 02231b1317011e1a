//! A decoder kept open across the batches of one source that a worker takes in order.
//!
//! [`decode_frames`](super::decode_frames) starts an ffmpeg per range and, since a decoder can
//! only start at a keyframe, decodes every frame from the keyframe at or before the range: with
//! the keyframes of common encodes (x264's default is one every 250 frames; the Big Buck Bunny
//! clip has one in 132) a 16-frame batch decodes on average some hundred frames it throws away,
//! and the batches of a job together decode the video many times over. A [`FrameReader`] keeps
//! the ffmpeg of the last range open, blocked on its output pipe, and serves the next range of
//! the same source by reading on: the frames in between are decoded once and dropped, and no
//! second ffmpeg starts. A range behind it, or so far ahead that seeking to its keyframe decodes
//! fewer frames, is served by a new reader. An idle reader is an ffmpeg blocked on its pipe
//! (about 80 MB resident at 720p, measured with ffmpeg 5.1): it ends when the last frame of the
//! video is read, when the worker takes a batch of another source, or when the worker stops.
//!
//! Frame-exactness does not rest on counting: the reader's filter chain ends in `showinfo`, whose
//! per-frame line on stderr carries the frame's pts, and every frame read (dropped ones too) must
//! carry the pts of the source frame it is taken for (`probe.frames[i].pts`, exactly). Any other
//! frame (a picture the decoder lost, an open GOP's leading picture missing after the seek, a
//! tool that stopped) is an error, and [`decode_frames_with`] then decodes the range the
//! per-range way, which has its own checks and retry.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedReceiver;

use super::command::{FfCommand, Streaming};
use super::decode::keyframe_at_or_before;
use super::time::{format_micros, micros_floor};
use super::{MediaError, Probe};

/// An ffmpeg decoding one source from some frame on, to packed RGB24, frame by frame on demand.
/// Killed when dropped.
pub struct FrameReader {
    /// The source file.
    source: PathBuf,
    /// The source's frame count and first pts: with the path, which probe the reader serves.
    identity: (usize, i64),
    /// Index (into `probe.frames`) of the next frame the pipe delivers.
    next: usize,
    /// The ffmpeg; its stdout carries the frames.
    process: Streaming,
    /// The `showinfo` lines of the frames, in output order.
    reports: UnboundedReceiver<String>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("source", &self.source)
            .field("next", &self.next)
            .finish()
    }
}

/// Decodes frames `frames` of `source` like [`decode_frames`](super::decode_frames), reading
/// on with the open `reader` where it serves the range (see the module docs), else with a new
/// reader left in `reader` for the next range. Any failure of the reader drops it, and the range
/// is decoded by [`decode_frames`](super::decode_frames) instead.
pub async fn decode_frames_with(
    reader: &mut Option<FrameReader>,
    source: &Path,
    probe: &Probe,
    frames: Range<u64>,
) -> Result<Vec<Vec<u8>>, MediaError> {
    let (start, end) = (frames.start as usize, frames.end as usize);
    if start >= end || end > probe.frames.len() {
        return super::decode_frames(source, probe, frames).await;
    }
    if !reader
        .as_ref()
        .is_some_and(|r| r.serves(source, probe, start))
    {
        *reader = None;
        match FrameReader::open(source, probe, start) {
            Ok(opened) => *reader = Some(opened),
            Err(e) => {
                tracing::debug!(error = %e, "no frame reader; decoding the range on its own");
                return super::decode_frames(source, probe, frames).await;
            }
        }
    }
    let Some(open) = reader.as_mut() else {
        return super::decode_frames(source, probe, frames).await;
    };
    match open.read(probe, start..end).await {
        Ok(decoded) => {
            if open.next >= probe.frames.len() {
                // Nothing left to read: let the ffmpeg exit now rather than wait for the next job.
                *reader = None;
            }
            Ok(decoded)
        }
        Err(e) => {
            *reader = None;
            tracing::debug!(error = %e, ?frames, "the frame reader failed; decoding the range on its own");
            super::decode_frames(source, probe, frames).await
        }
    }
}

impl FrameReader {
    /// Starts an ffmpeg that delivers the frames of `source` from frame `start` on, seeking
    /// to the keyframe at or before it.
    pub fn open(source: &Path, probe: &Probe, start: usize) -> Result<Self, MediaError> {
        let v = &probe.video;
        let keyframe = keyframe_at_or_before(probe, start);
        let mut cmd =
            FfCommand::ffmpeg_reporting("decode frames").args(["-noautorotate", "-copyts"]);
        // As in `decode`: the seek lands at or before the keyframe; `select` drops the rest.
        let seek_us = micros_floor(probe.frames[keyframe].pts, v.time_base)
            - probe.format.start_time_us.unwrap_or(0);
        if keyframe > 0 && seek_us > 0 {
            cmd = cmd.args(["-ss", &format_micros(seek_us)]);
        }
        let first = probe.frames[start].pts;
        let cmd = cmd
            .arg("-i")
            .arg(source)
            .args(["-map", &format!("0:{}", v.index)])
            .args([
                "-vf",
                &format!("select='gte(pts,{first})',showinfo=checksum=0"),
            ])
            .args(["-fps_mode", "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
        let (process, reports) = cmd.spawn_reporting(is_frame_report)?;
        Ok(Self {
            source: source.to_owned(),
            identity: identity(probe),
            next: start,
            process,
            reports,
        })
    }

    /// Whether reading on to frame `start` of this source decodes fewer frames than a new
    /// reader seeking to the keyframe at or before it would.
    pub fn serves(&self, source: &Path, probe: &Probe, start: usize) -> bool {
        self.source == source
            && self.identity == identity(probe)
            && self.next <= start
            && start - self.next <= start - keyframe_at_or_before(probe, start)
    }

    /// Reads the frames `range` (from the reader's position on; the frames before the range
    /// are read and dropped), checking each frame's pts. A range behind the reader's position
    /// is an error ([`serves`](Self::serves) says which ranges it can read).
    pub async fn read(
        &mut self,
        probe: &Probe,
        range: Range<usize>,
    ) -> Result<Vec<Vec<u8>>, MediaError> {
        let v = &probe.video;
        if range.start < self.next || range.end > probe.frames.len() {
            return Err(MediaError::InvalidRequest {
                reason: format!(
                    "frames {range:?} cannot be read by a reader at frame {} of {}",
                    self.next,
                    probe.frames.len()
                ),
            });
        }
        let frame_len = v.width as usize * v.height as usize * 3;
        let mut dropped = vec![0u8; frame_len];
        while self.next < range.start {
            self.read_frame(probe, &mut dropped).await?;
        }
        let mut frames = Vec::with_capacity(range.len());
        for _ in range {
            let mut frame = vec![0u8; frame_len];
            self.read_frame(probe, &mut frame).await?;
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Reads the next frame into `frame` and checks that it is `probe.frames[self.next]`.
    async fn read_frame(&mut self, probe: &Probe, frame: &mut [u8]) -> Result<(), MediaError> {
        let expected = probe.frames[self.next].pts;
        let read = match self.process.stdout.as_mut() {
            Some(stdout) => stdout.read_exact(frame).await.map(drop),
            None => Err(std::io::Error::other("the decoder has no output")),
        };
        if let Err(e) = read {
            return Err(MediaError::Mismatch {
                reason: format!(
                    "the decoder stopped before frame {} (pts {expected}): {e}",
                    self.next
                ),
            });
        }
        let report = self.reports.recv().await;
        match report.as_deref().and_then(reported_pts) {
            Some(pts) if pts == expected => {
                self.next += 1;
                Ok(())
            }
            got => Err(MediaError::Mismatch {
                reason: format!(
                    "the decoder delivered pts {got:?} where frame {} has pts {expected}",
                    self.next
                ),
            }),
        }
    }
}

/// What, besides the path, tells the probe a reader serves. The path is enough for the content:
/// a worker's pinned copy of a source is named by the content's SHA-256
/// ([`crate::store::Fingerprint::file_name`]), so a re-upload under the same store name is
/// another file and never read on by the old reader.
fn identity(probe: &Probe) -> (usize, i64) {
    (
        probe.frames.len(),
        probe.frames.first().map_or(0, |f| f.pts),
    )
}

/// Whether a stderr line is `showinfo`'s line for one frame (`... n: 12 pts: 6144 ...`).
fn is_frame_report(line: &str) -> bool {
    line.contains("Parsed_showinfo") && line.contains(" n:") && line.contains(" pts:")
}

/// The pts of a `showinfo` frame line.
fn reported_pts(line: &str) -> Option<i64> {
    let (_, rest) = line.split_once(" pts:")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showinfo_lines_give_their_pts() {
        let line = "[Parsed_showinfo_1 @ 0x5599dbe30680] n:   1 pts:   7168 pts_time:0.56    pos:   238542 fmt:yuv420p sar:1/1 s:1280x720 i:P iskey:0 type:P";
        assert!(is_frame_report(line));
        assert_eq!(reported_pts(line), Some(7168));
        let negative = "[Parsed_showinfo_1 @ 0x1] n:   0 pts:  -1024 pts_time:-0.08";
        assert_eq!(reported_pts(negative), Some(-1024));
        let config = "[Parsed_showinfo_1 @ 0x1] config in time_base: 1/12800, frame_rate: 25/1";
        assert!(!is_frame_report(config));
        let colour = "[Parsed_showinfo_1 @ 0x1] color_range:unknown color_space:unknown";
        assert!(!is_frame_report(colour));
    }
}
