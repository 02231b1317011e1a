//! Single pictures: one frame of a video as the viewer sees it (a preview of the user's own
//! footage), and what a few frames cost once encoded (an estimate of the output's size).

use std::path::Path;

use super::codec::encoder_args;
use super::command::FfCommand;
use super::{EncoderSettings, MediaError, Probe, decode_frames};

/// One decoded frame, packed RGB24.
#[derive(Debug, Clone, PartialEq)]
pub struct Still {
    /// Width in pixels, as displayed.
    pub width: u32,
    /// Height in pixels, as displayed.
    pub height: u32,
    /// `R G B R G B ...`, row after row.
    pub data: Vec<u8>,
    /// The frame's index in presentation order.
    pub index: u64,
    /// The frame's start, in seconds from the video's first frame.
    pub time_s: f64,
}

/// The index of the frame shown `seconds` after the first frame starts (the middle of the
/// video when `None`), or why there is none.
pub fn frame_index_at(probe: &Probe, seconds: Option<f64>) -> Result<u64, MediaError> {
    let duration = probe.video_duration_s();
    let Some(first) = probe.frames.first() else {
        return Err(MediaError::InvalidRequest {
            reason: "the video has no frames".into(),
        });
    };
    let seconds = seconds.unwrap_or(duration / 2.0);
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(MediaError::InvalidRequest {
            reason: format!("{seconds} s is not a time in the video"),
        });
    }
    if seconds >= duration {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "{seconds} s is past the end of the video, which is {duration:.2} s long"
            ),
        });
    }
    let tb = probe.video.time_base.as_f64();
    let at = |f: &super::FrameTime| (f.pts - first.pts) as f64 * tb;
    // The last frame that has started by then.
    let index = probe
        .frames
        .iter()
        .rposition(|f| at(f) <= seconds)
        .unwrap_or(0);
    Ok(index as u64)
}

/// Decodes the frame of `source` shown `seconds` after its first frame starts (the middle when
/// `None`), turned as the video is displayed (its rotation applied).
pub async fn frame_at(
    source: &Path,
    probe: &Probe,
    seconds: Option<f64>,
) -> Result<Still, MediaError> {
    let index = frame_index_at(probe, seconds)?;
    let mut frames = decode_frames(source, probe, index..index + 1).await?;
    let data = frames.pop().ok_or(MediaError::FrameCount {
        step: "decode a still",
        expected: 1,
        actual: 0,
    })?;
    let (w, h) = (probe.video.width, probe.video.height);
    let (width, height, data) = rotate(w, h, &data, probe.video.rotation);
    let first = probe.frames.first().map_or(0, |f| f.pts);
    let time_s = (probe.frames[index as usize].pts - first) as f64 * probe.video.time_base.as_f64();
    Ok(Still {
        width,
        height,
        data,
        index,
        time_s,
    })
}

/// Turns a packed RGB24 picture `degrees` clockwise (0, 90, 180 or 270; anything else is left
/// as it is), returning the new width, height and pixels.
pub fn rotate(width: u32, height: u32, data: &[u8], degrees: u16) -> (u32, u32, Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    let px = |x: usize, y: usize| &data[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let mut out = Vec::with_capacity(data.len());
    match degrees {
        90 => {
            // Row y of the result is column y of the source, read bottom to top.
            for y in 0..w {
                for x in 0..h {
                    out.extend_from_slice(px(y, h - 1 - x));
                }
            }
            (height, width, out)
        }
        180 => {
            for y in (0..h).rev() {
                for x in (0..w).rev() {
                    out.extend_from_slice(px(x, y));
                }
            }
            (width, height, out)
        }
        270 => {
            for y in 0..w {
                for x in 0..h {
                    out.extend_from_slice(px(w - 1 - y, x));
                }
            }
            (height, width, out)
        }
        _ => (width, height, data.to_vec()),
    }
}

/// The bytes `frames` (packed RGB24, `width` x `height`) take once encoded with `settings` in
/// one stream, container included: encoding one frame and then two tells what a keyframe and
/// what a following frame cost.
pub async fn encoded_size(
    frames: &[Vec<u8>],
    width: u32,
    height: u32,
    settings: &EncoderSettings,
) -> Result<u64, MediaError> {
    let captured = FfCommand::ffmpeg("encode sample frames")
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args(["-s", &format!("{width}x{height}"), "-framerate", "25"])
        .args(["-i", "pipe:0"])
        .args(encoder_args(
            settings.encoder().await,
            &settings.preset,
            settings.crf,
        ))
        .args(["-pix_fmt", settings.pix_fmt_for(width, height)])
        // Matroska streams to a pipe with any codec, with a few hundred bytes of overhead.
        .args(["-an", "-f", "matroska", "pipe:1"])
        .run_with_input(frames)
        .await?;
    Ok(captured.stdout.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_turns_clockwise() {
        // 3x2: a b c / d e f, one byte a pixel repeated three times.
        let pic: Vec<u8> = b"abcdef".iter().flat_map(|&c| [c, c, c]).collect();
        let letters = |d: &[u8]| d.chunks(3).map(|p| p[0] as char).collect::<String>();
        let (w, h, d) = rotate(3, 2, &pic, 90);
        assert_eq!((w, h, letters(&d).as_str()), (2, 3, "daebfc"));
        let (w, h, d) = rotate(3, 2, &pic, 180);
        assert_eq!((w, h, letters(&d).as_str()), (3, 2, "fedcba"));
        let (w, h, d) = rotate(3, 2, &pic, 270);
        assert_eq!((w, h, letters(&d).as_str()), (2, 3, "cfbead"));
        assert_eq!(rotate(3, 2, &pic, 0).2, pic);
    }
}
