//! Encoding a batch of styled frames into a chunk that carries the source's exact timestamps.
//!
//! Raw RGB frames on a pipe have no timestamps of their own, so the chunk's timestamps are
//! written by a filter: `settb` switches to ticks of the source's time base denominator, then
//! `setpts` gives frame `N` its source pts relative to the range's first frame, looked up by a
//! binary search written as nested `if(lt(N,m),lower,upper)`. The encoder keeps that time base
//! (`-enc_time_base`), `-fps_mode passthrough` keeps every frame once, and the mp4 track uses
//! the same timescale (`-video_track_timescale`), so every tick survives into the file exactly,
//! VFR included. The expression goes through a filter script file next to the output, which
//! has no command-line length limit.
//!
//! Measured with ffmpeg 5.1 (160x120, libx264 ultrafast): the obvious flat table
//! `p0*eq(N,0)+p1*eq(N,1)+...` is refused by ffmpeg's expression parser from 100 frames on
//! (its expression trees may not be 100 deep, and a flat sum is a left-deep tree); the binary
//! search is `2 log2(n)` deep, costs `log2(n)` comparisons per frame, and a 3,000-frame chunk
//! encoded in 0.78 s against 0.89 s with a plain `N*1000` (no measurable cost). Rewriting
//! timestamps at stitch time instead (`setts` bitstream filter) would need the same table for
//! the whole video in one expression; a container carrying per-frame pts from the producer
//! (NUT) would mean writing a muxer here.
//!
//! Odd widths or heights cannot use 4:2:0 or 4:2:2 chroma (the chroma planes would need half
//! a pixel), so for those sizes the chunk is encoded 4:4:4 (`yuv444p`, H.264 High 4:4:4):
//! the output keeps the source's exact size without padding or cropping.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::codec::encoder_args;
use super::command::FfCommand;
use super::verify::compare_chunk;
use super::{MediaError, Probe};

/// How chunks are encoded. Stored in the job manifest, so every batch of a job uses the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncoderSettings {
    /// ffmpeg encoder name, or `auto` (see [`Codec`](super::Codec)).
    pub codec: String,
    /// Constant rate factor (lower is better quality).
    pub crf: u8,
    /// Encoder speed preset.
    pub preset: String,
    /// Pixel format; a chroma-subsampled format becomes `yuv444p` for odd sizes.
    pub pix_fmt: String,
}

impl Default for EncoderSettings {
    /// H.264 (`auto`: NVENC where the encoding process has it, else libx264), `veryfast` at CRF
    /// 16, `yuv420p`. Chosen by `scripts/bench-encoder.sh` (the network's real output, 60 frames
    /// of Big Buck Bunny at 1280x720, x264 on one thread, PSNR of the decoded chunk against the
    /// uncompressed styled frames; `bench/results/2026-12-02-encoder-cpu.md`): the fastest
    /// preset whose candidates stay within 0.5 dB and 1.35x the size of the previous default,
    /// `medium` CRF 18 (39.95 dB, 4.97 MB). `veryfast` CRF 16: +0.35 dB, 1.27x the size, 2.45x
    /// the frames/s in that (loaded, noisy) run, 2.6-3x on a quiet machine in the issue's; CRF
    /// 17 was as fast but only 0.08 dB inside the bound (-0.42 dB) and the
    /// loss depends on the pictures (the run on other frames found CRF 16 0.8 dB under),
    /// so CRF 16 keeps a margin on both bounds; CRF 15 is 1.44x the size, and `superfast` needs
    /// CRF 15 (1.58x) to keep the quality.
    fn default() -> Self {
        Self {
            codec: super::Codec::default().as_str().into(),
            crf: super::codec::DEFAULT_CRF,
            preset: super::codec::DEFAULT_PRESET.as_str().into(),
            pix_fmt: "yuv420p".into(),
        }
    }
}

impl EncoderSettings {
    /// The pixel format actually used for a `width` x `height` video: `pix_fmt`, unless the
    /// size is odd in a direction that format subsamples, in which case `yuv444p`.
    pub fn pix_fmt_for(&self, width: u32, height: u32) -> &str {
        let f = self.pix_fmt.as_str();
        let halves_width = f.starts_with("yuv420")
            || f.starts_with("yuvj420")
            || f.starts_with("yuv422")
            || f.starts_with("yuvj422")
            || f.starts_with("nv12")
            || f.starts_with("nv16");
        let halves_height =
            f.starts_with("yuv420") || f.starts_with("yuvj420") || f.starts_with("nv12");
        if (halves_width && width % 2 == 1) || (halves_height && height % 2 == 1) {
            "yuv444p"
        } else {
            f
        }
    }

    /// The ffmpeg encoder that runs for these settings in this process: `codec`, or for `auto`
    /// what [`resolve_auto`](super::codec::resolve_auto) found.
    pub async fn encoder(&self) -> &str {
        match self.codec.as_str() {
            "auto" => super::codec::resolve_auto().await.encoder,
            codec => codec,
        }
    }

    /// The codec name ffprobe reports for what this encoder writes, when known.
    pub(crate) fn codec_name(&self) -> Option<&'static str> {
        match self.codec.as_str() {
            "auto" | "libx264" | "h264" | "h264_nvenc" => Some("h264"),
            "libx265" | "hevc" | "hevc_nvenc" => Some("hevc"),
            "libsvtav1" | "libaom-av1" | "librav1e" | "av1_nvenc" => Some("av1"),
            "libvpx-vp9" => Some("vp9"),
            _ => None,
        }
    }
}

/// Encodes `frames` (packed RGB24, stored orientation), which are the source frames `range`,
/// into the mp4 `out`, with each frame's pts equal to the source's pts minus the range's first
/// pts. The chunk is checked with ffprobe before returning (frame count, timestamps and the
/// codec the settings say), so that the stitch can take a chunk with a done marker as checked.
pub async fn encode_chunk(
    frames: &[Vec<u8>],
    probe: &Probe,
    range: Range<u64>,
    out: &Path,
    settings: &EncoderSettings,
) -> Result<(), MediaError> {
    let v = &probe.video;
    let (start, end) = (range.start as usize, range.end as usize);
    if start >= end || end > probe.frames.len() || frames.len() != end - start {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "{} frames given for range {range:?} of a {}-frame video",
                frames.len(),
                probe.frames.len()
            ),
        });
    }
    let frame_len = v.width as usize * v.height as usize * 3;
    if let Some(bad) = frames.iter().position(|f| f.len() != frame_len) {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "frame {bad} has {} bytes, expected {frame_len} ({}x{} RGB24)",
                frames[bad].len(),
                v.width,
                v.height
            ),
        });
    }

    let (cmd, script) = encode_command(probe, range.clone(), out, settings).await?;
    let result = cmd.run_with_input(frames).await;
    let _ = tokio::fs::remove_file(&script).await;
    result?;
    let chunk = super::probe(out).await?;
    compare_chunk(probe, range, &chunk)?;
    match settings.codec_name() {
        Some(expected) if chunk.video.codec_name != expected => Err(MediaError::Mismatch {
            reason: format!(
                "the chunk is {}, but the job encodes with {} ({expected})",
                chunk.video.codec_name, settings.codec
            ),
        }),
        _ => Ok(()),
    }
}

/// The ffmpeg command that encodes packed RGB24 frames from stdin, which are the source frames
/// `range`, into the mp4 `out` with the source's timestamps, and the filter script it reads
/// (written here; the caller removes it after the run).
pub(crate) async fn encode_command(
    probe: &Probe,
    range: Range<u64>,
    out: &Path,
    settings: &EncoderSettings,
) -> Result<(FfCommand, PathBuf), MediaError> {
    let v = &probe.video;
    let (start, end) = (range.start as usize, range.end as usize);
    // Ticks of 1/den: a time base num/den becomes num ticks per source tick.
    let tb = v.time_base;
    let first = probe.frames[start].pts;
    let ticks: Vec<i64> = probe.frames[start..end]
        .iter()
        .map(|f| (f.pts - first) * tb.num)
        .collect();
    let mut setpts = String::with_capacity(32 * ticks.len());
    lookup_expr(&ticks, 0, &mut setpts);
    let script = sibling(out, "vf");
    let graph = format!("settb=1/{den},setpts='{setpts}'", den = tb.den);
    tokio::fs::write(&script, graph)
        .await
        .map_err(|source| MediaError::Io {
            step: "write the filter script",
            path: script.clone(),
            source,
        })?;

    let rate = [v.avg_frame_rate, v.r_frame_rate]
        .into_iter()
        .find(|r| r.is_valid())
        .unwrap_or(super::Rational::new(25, 1));
    let cmd = FfCommand::ffmpeg("encode a chunk")
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args([
            "-s",
            &format!("{}x{}", v.width, v.height),
            "-framerate",
            &rate.to_string(),
        ])
        .args(["-i", "pipe:0"])
        .arg("-filter_script:v")
        .arg(&script)
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            &format!("1/{}", tb.den),
        ])
        .args(encoder_args(
            settings.encoder().await,
            &settings.preset,
            settings.crf,
        ))
        .args(["-pix_fmt", settings.pix_fmt_for(v.width, v.height)])
        .args([
            "-video_track_timescale",
            &tb.den.to_string(),
            "-an",
            "-f",
            "mp4",
            "-y",
        ])
        .arg(out);
    Ok((cmd, script))
}

/// Appends to `expr` an ffmpeg expression that is `ticks[N - offset]` for frame number `N`:
/// a binary search of nested `if(lt(N,m),..,..)`, `2 log2(len)` deep.
fn lookup_expr(ticks: &[i64], offset: usize, expr: &mut String) {
    use std::fmt::Write;
    if let [only] = ticks {
        let _ = write!(expr, "{only}");
        return;
    }
    let mid = ticks.len() / 2;
    let _ = write!(expr, "if(lt(N,{}),", offset + mid);
    lookup_expr(&ticks[..mid], offset, expr);
    expr.push(',');
    lookup_expr(&ticks[mid..], offset + mid, expr);
    expr.push(')');
}

/// `path` with `.{ext}` appended to its file name.
pub(crate) fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_a_binary_search() {
        let mut e = String::new();
        lookup_expr(&[0], 0, &mut e);
        assert_eq!(e, "0");
        e.clear();
        lookup_expr(&[0, 1100, 2400], 0, &mut e);
        assert_eq!(e, "if(lt(N,1),0,if(lt(N,2),1100,2400))");
    }

    #[test]
    fn odd_sizes_get_full_chroma() {
        let s = EncoderSettings::default();
        assert_eq!(s.pix_fmt_for(64, 48), "yuv420p");
        assert_eq!(s.pix_fmt_for(65, 48), "yuv444p");
        assert_eq!(s.pix_fmt_for(64, 49), "yuv444p");
        let s422 = EncoderSettings {
            pix_fmt: "yuv422p".into(),
            ..EncoderSettings::default()
        };
        assert_eq!(s422.pix_fmt_for(64, 49), "yuv422p");
        assert_eq!(s422.pix_fmt_for(65, 48), "yuv444p");
    }
}
