//! Size limits on accepted videos, and the check that refuses a video over them.

use serde::{Deserialize, Serialize};

use super::{MediaError, Probe};

/// The largest video the system accepts. Width and height are as stored (before rotation),
/// so a portrait 4K phone video (2160x3840 stored) needs `max_height >= 3840`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// File size in bytes.
    pub max_bytes: u64,
    /// Stored width in pixels.
    pub max_width: u32,
    /// Stored height in pixels.
    pub max_height: u32,
    /// Pixels per frame (width * height).
    pub max_pixels: u64,
    /// Duration of the video stream in seconds.
    pub max_duration_s: f64,
    /// Number of video frames.
    pub max_frames: u64,
}

impl Default for Limits {
    /// 8K in either orientation, 4 hours, a million frames, 16 GiB.
    fn default() -> Self {
        Self {
            max_bytes: 16 << 30,
            max_width: 7680,
            max_height: 7680,
            max_pixels: 7680 * 4320,
            max_duration_s: 4.0 * 3600.0,
            max_frames: 1_000_000,
        }
    }
}

/// Refuses a probed video that is over any of `limits`, naming the limit, or whose audio or
/// subtitles the mp4 output cannot carry without re-encoding them (so that the job fails
/// before any frame is styled rather than at the stitch).
pub fn check(probe: &Probe, limits: &Limits) -> Result<(), MediaError> {
    if let Some(s) = probe.carried_streams().find(|s| s.mp4_codec().is_none()) {
        return Err(MediaError::Unsupported {
            reason: format!(
                "the {} stream #{} is {}, which an mp4 cannot carry without re-encoding it",
                s.codec_type,
                s.index,
                s.codec_name.as_deref().unwrap_or("an unknown codec")
            ),
        });
    }
    let too_large = |what, actual: String, limit: String| {
        Err(MediaError::TooLarge {
            what,
            actual,
            limit,
        })
    };
    let v = &probe.video;
    if probe.format.size > limits.max_bytes {
        return too_large(
            "file size",
            format!("{} bytes", probe.format.size),
            format!("{} bytes", limits.max_bytes),
        );
    }
    if v.width > limits.max_width {
        return too_large(
            "width",
            format!("{} pixels", v.width),
            format!("{} pixels", limits.max_width),
        );
    }
    if v.height > limits.max_height {
        return too_large(
            "height",
            format!("{} pixels", v.height),
            format!("{} pixels", limits.max_height),
        );
    }
    let pixels = u64::from(v.width) * u64::from(v.height);
    if pixels > limits.max_pixels {
        return too_large(
            "frame size",
            format!("{}x{} = {pixels} pixels", v.width, v.height),
            format!("{} pixels", limits.max_pixels),
        );
    }
    let duration = probe.video_duration_s();
    if duration > limits.max_duration_s {
        return too_large(
            "duration",
            format!("{duration:.3} s"),
            format!("{} s", limits.max_duration_s),
        );
    }
    if probe.frame_count() > limits.max_frames {
        return too_large(
            "frame count",
            probe.frame_count().to_string(),
            limits.max_frames.to_string(),
        );
    }
    Ok(())
}
