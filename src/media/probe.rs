//! ffprobe, parsed into the [`Probe`] that the job manifest stores, and the refusals of files
//! that are not videos this system can style.
//!
//! Probing never decodes: frame timestamps and keyframe flags come from the video stream's
//! packets (`-show_entries packet=...`), sorted by pts into presentation order. Packets the
//! demuxer marks as discarded (an edit list's pre-roll) are not frames of the video.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MediaError;
use super::command::FfCommand;
use super::time::{Rational, parse_micros};

/// What ffprobe says about a video: the container, the video stream, every frame's timestamp,
/// and the other streams. Stored in the job manifest; everything later works from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The container.
    pub format: FormatInfo,
    /// The video stream that is styled (the first one that is not cover art).
    pub video: VideoStream,
    /// Every frame of the video stream in presentation order.
    pub frames: Vec<FrameTime>,
    /// Every other stream (audio, subtitles, data, further video), in file order.
    pub other_streams: Vec<StreamInfo>,
}

/// The container, as ffprobe's `format` section reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatInfo {
    /// ffprobe's demuxer name, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format_name: String,
    /// Container duration in seconds, when known.
    pub duration: Option<f64>,
    /// File size in bytes.
    pub size: u64,
    /// Overall bit rate in bits per second, when known.
    pub bit_rate: Option<u64>,
    /// The container's start time in microseconds (ffmpeg's `start_time`: the earliest
    /// timestamp of any stream), when known. ffmpeg's `-ss` counts from here.
    pub start_time_us: Option<i64>,
}

/// The styled video stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoStream {
    /// Stream index in the file.
    pub index: u32,
    /// Codec, e.g. `h264`.
    pub codec_name: String,
    /// Width as stored (before rotation).
    pub width: u32,
    /// Height as stored (before rotation).
    pub height: u32,
    /// Pixel format, e.g. `yuv420p`.
    pub pix_fmt: Option<String>,
    /// Display rotation in degrees: 0, 90, 180 or 270, in the convention of the legacy
    /// `rotate` tag that ffmpeg writes back (`-metadata:s:v rotate=N`).
    pub rotation: u16,
    /// The time base of `frames[].pts`.
    pub time_base: Rational,
    /// Average frame rate (`0/0` when unknown).
    pub avg_frame_rate: Rational,
    /// ffprobe's "real base" frame rate (`0/0` when unknown).
    pub r_frame_rate: Rational,
}

/// One frame's timing, from its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameTime {
    /// Presentation timestamp in the video stream's time base.
    pub pts: i64,
    /// Duration in the same time base: the packet's, or the gap to the next frame when the
    /// container does not say.
    pub duration: i64,
    /// Whether decoding can start at this frame.
    pub keyframe: bool,
}

/// A stream other than the styled video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Stream index in the file.
    pub index: u32,
    /// `audio`, `subtitle`, `data`, `attachment` or `video`.
    pub codec_type: String,
    /// Codec, when ffprobe knows it.
    pub codec_name: Option<String>,
    /// The time base of `start_pts` and `duration_ts`.
    pub time_base: Option<Rational>,
    /// First timestamp, when known.
    pub start_pts: Option<i64>,
    /// Duration in `time_base` ticks, when known.
    pub duration_ts: Option<i64>,
    /// Number of packets the container declares, when known.
    pub nb_frames: Option<u64>,
    /// Whether this is cover art (a picture attached to an audio file).
    pub attached_pic: bool,
}

impl Probe {
    /// Number of frames of the video.
    pub fn frame_count(&self) -> u64 {
        self.frames.len() as u64
    }

    /// The presentation span of the video in seconds, first frame's start to last frame's end.
    pub fn video_duration_s(&self) -> f64 {
        match (self.frames.first(), self.frames.last()) {
            (Some(first), Some(last)) => {
                (last.pts + last.duration - first.pts) as f64 * self.video.time_base.as_f64()
            }
            _ => 0.0,
        }
    }

    /// The streams [`stitch`](super::stitch()) carries over from the source: audio and
    /// subtitles, in file order. Cover art and data streams (timecodes, chapters' text
    /// tracks) are not carried.
    pub fn carried_streams(&self) -> impl Iterator<Item = &StreamInfo> {
        self.other_streams
            .iter()
            .filter(|s| !s.attached_pic && (s.codec_type == "audio" || s.codec_type == "subtitle"))
    }
}

/// Audio codecs the mp4 output can carry as stream copies.
const MP4_AUDIO: &[&str] = &[
    "aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac", "dts",
];

impl StreamInfo {
    /// The codec ffprobe reports for this stream in the mp4 output: its own, except that text
    /// subtitles (SubRip, ASS, WebVTT) become mp4's `mov_text`, the one text format mp4
    /// holds, and that MPEG audio layer 2, copied unchanged, reads back as `mp3` (mp4 has one
    /// tag for all MPEG-1 audio layers). `None` when mp4 cannot hold the stream without
    /// re-encoding it.
    pub fn mp4_codec(&self) -> Option<&str> {
        let codec = self.codec_name.as_deref()?;
        match self.codec_type.as_str() {
            "audio" if codec == "mp2" => Some("mp3"),
            "audio" if MP4_AUDIO.contains(&codec) => Some(codec),
            "subtitle" if matches!(codec, "mov_text" | "dvd_subtitle") => Some(codec),
            "subtitle" if matches!(codec, "subrip" | "ass" | "ssa" | "webvtt" | "text") => {
                Some("mov_text")
            }
            _ => None,
        }
    }
}

/// Probes `path` without decoding it, or says why it is not a video this system can style.
pub async fn probe(path: &Path) -> Result<Probe, MediaError> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|source| MediaError::Io {
            step: "read",
            path: path.to_owned(),
            source,
        })?
        .len();
    if size == 0 {
        return Err(invalid("the file is empty (0 bytes)"));
    }

    // One ffprobe run reads the header and every packet: a second run would cost a process
    // start (as much as reading a chunk's packets). Packets of all streams come back; only the
    // video stream's are kept. Only when it fails does a header-only run tell an unreadable
    // file from an unreadable video stream.
    let probed = match FfCommand::ffprobe("probe the video")
        .args(["-show_format", "-show_streams"])
        .args([
            "-show_entries",
            "packet=stream_index,pts,duration,flags,pos,size",
        ])
        .arg(path)
        .run()
        .await
    {
        Ok(probed) => probed,
        Err(packets_error) => {
            FfCommand::ffprobe("probe the container")
                .args(["-show_format", "-show_streams"])
                .arg(path)
                .run()
                .await
                .map_err(|e| unreadable(e, "not a media file ffmpeg can read"))?;
            return Err(unreadable(packets_error, "the video stream cannot be read"));
        }
    };
    let header: ProbeJson =
        serde_json::from_slice(&probed.stdout).map_err(|source| MediaError::ProbeOutput {
            path: path.to_owned(),
            source,
        })?;
    let Some(format) = header.format else {
        return Err(invalid(
            "not a media file ffmpeg can read (no container found)",
        ));
    };
    if is_image_format(&format.format_name) {
        return Err(MediaError::Unsupported {
            reason: format!("a still image (format {}), not a video", format.format_name),
        });
    }

    let Some(video) = header
        .streams
        .iter()
        .find(|s| s.is_video() && !s.disposition.is_attached_pic())
    else {
        let has_audio = header
            .streams
            .iter()
            .any(|s| s.codec_type.as_deref() == Some("audio"));
        return Err(if has_audio {
            MediaError::Unsupported {
                reason: "audio only: the file has no video stream".into(),
            }
        } else {
            invalid("the file has no video stream")
        });
    };
    let video_stream = video_stream(video)?;

    let partial = probed.stderr.contains("partial file");
    let packets: Vec<PacketJson> = header
        .packets
        .into_iter()
        .filter(|p| p.stream_index == Some(video.index))
        .collect();
    check_complete(&packets, video, size, partial)?;
    let frames = frame_times(&packets)?;
    if frames.len() == 1 && is_image_codec(&video_stream.codec_name) {
        return Err(MediaError::Unsupported {
            reason: format!(
                "a still image ({} picture), not a video",
                video_stream.codec_name
            ),
        });
    }

    let other_streams = header
        .streams
        .iter()
        .filter(|s| s.index != video.index)
        .map(StreamJson::info)
        .collect();
    Ok(Probe {
        format: FormatInfo {
            format_name: format.format_name.clone(),
            duration: format.duration.as_deref().and_then(|d| d.parse().ok()),
            size,
            bit_rate: format.bit_rate.as_deref().and_then(|b| b.parse().ok()),
            start_time_us: format.start_time.as_deref().and_then(parse_micros),
        },
        video: video_stream,
        frames,
        other_streams,
    })
}

fn invalid(reason: impl Into<String>) -> MediaError {
    MediaError::Invalid {
        reason: reason.into(),
        source: None,
    }
}

/// Turns a failed ffprobe run into a refusal that quotes ffprobe's last words.
fn unreadable(error: MediaError, what: &str) -> MediaError {
    match error {
        MediaError::Ffmpeg { ref stderr, .. } => {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            // ffprobe prefixes its messages with the file name; the user knows which file.
            let last = last.rsplit_once(": ").map_or(last, |(_, m)| m);
            MediaError::Invalid {
                reason: format!("{what}: {last}"),
                source: Some(Box::new(error)),
            }
        }
        other => other,
    }
}

/// Demuxers that read single pictures.
fn is_image_format(format_name: &str) -> bool {
    format_name
        .split(',')
        .any(|f| f == "image2" || f.ends_with("_pipe"))
}

/// Codecs that usually hold one picture; a one-frame stream of these is a still image.
fn is_image_codec(codec: &str) -> bool {
    matches!(
        codec,
        "png" | "mjpeg" | "bmp" | "gif" | "webp" | "tiff" | "jpeg2000" | "apng"
    )
}

fn video_stream(s: &StreamJson) -> Result<VideoStream, MediaError> {
    let codec_name = s
        .codec_name
        .clone()
        .ok_or_else(|| MediaError::Unsupported {
            reason: "the video stream's codec is unknown to ffmpeg".into(),
        })?;
    let (width, height) = match (s.width, s.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(invalid("the video stream has no picture size")),
    };
    let time_base = s
        .time_base
        .as_deref()
        .and_then(Rational::parse)
        .filter(|tb| tb.is_valid())
        .ok_or_else(|| invalid("the video stream has no time base"))?
        .reduced();
    let rate = |r: &Option<String>| {
        r.as_deref()
            .and_then(Rational::parse)
            .unwrap_or(Rational::new(0, 0))
    };
    Ok(VideoStream {
        index: s.index,
        codec_name,
        width,
        height,
        pix_fmt: s.pix_fmt.clone(),
        rotation: s.rotation()?,
        time_base,
        avg_frame_rate: rate(&s.avg_frame_rate),
        r_frame_rate: rate(&s.r_frame_rate),
    })
}

/// Refuses a file whose video packets stop before the container says they should.
fn check_complete(
    packets: &[PacketJson],
    video: &StreamJson,
    size: u64,
    partial: bool,
) -> Result<(), MediaError> {
    let declared: Option<u64> = video.nb_frames.as_deref().and_then(|n| n.parse().ok());
    let beyond_end = packets.iter().any(|p| {
        let pos: Option<u64> = p.pos.as_deref().and_then(|v| v.parse().ok());
        let len: Option<u64> = p.size.as_deref().and_then(|v| v.parse().ok());
        matches!((pos, len), (Some(pos), Some(len)) if pos + len > size)
    });
    match declared {
        Some(n) if (packets.len() as u64) < n => Err(invalid(format!(
            "the file is truncated: the container lists {n} video frames but only {} are present",
            packets.len()
        ))),
        _ if beyond_end || partial => Err(invalid(
            "the file is truncated: video data runs past its end",
        )),
        _ if packets.is_empty() => Err(invalid("the video stream has no frames")),
        _ => Ok(()),
    }
}

/// Frames in presentation order from the packets, with durations filled in.
fn frame_times(packets: &[PacketJson]) -> Result<Vec<FrameTime>, MediaError> {
    let mut frames = Vec::with_capacity(packets.len());
    for p in packets {
        let flags = p.flags.as_deref().unwrap_or("");
        if flags.contains('D') {
            continue;
        }
        let Some(pts) = p.pts else {
            return Err(MediaError::Unsupported {
                reason: "the video packets carry no timestamps (a raw stream without a container?)"
                    .into(),
            });
        };
        frames.push(FrameTime {
            pts,
            duration: p.duration.unwrap_or(0),
            keyframe: flags.contains('K'),
        });
    }
    if frames.is_empty() {
        return Err(invalid("the video stream has no frames"));
    }
    frames.sort_by_key(|f| f.pts);
    if let Some(w) = frames.windows(2).find(|w| w[0].pts == w[1].pts) {
        return Err(invalid(format!(
            "two video frames share the timestamp {}",
            w[0].pts
        )));
    }
    // A missing duration is the gap to the next frame; the last frame keeps the one before.
    let mut previous = 1;
    for i in 0..frames.len() {
        if frames[i].duration <= 0 {
            frames[i].duration = frames
                .get(i + 1)
                .map_or(previous, |next| next.pts - frames[i].pts);
        }
        previous = frames[i].duration;
    }
    Ok(frames)
}

/// ffprobe's JSON for `-show_format -show_streams -show_entries packet=...`.
#[derive(Debug, Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
    #[serde(default)]
    packets: Vec<PacketJson>,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    format_name: String,
    duration: Option<String>,
    bit_rate: Option<String>,
    start_time: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamJson {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    time_base: Option<String>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    start_pts: Option<i64>,
    duration_ts: Option<i64>,
    nb_frames: Option<String>,
    #[serde(default)]
    disposition: DispositionJson,
    #[serde(default)]
    tags: HashMap<String, String>,
    #[serde(default)]
    side_data_list: Vec<SideDataJson>,
}

#[derive(Debug, Default, Deserialize)]
struct DispositionJson {
    #[serde(default)]
    attached_pic: i64,
}

impl DispositionJson {
    fn is_attached_pic(&self) -> bool {
        self.attached_pic != 0
    }
}

#[derive(Debug, Deserialize)]
struct SideDataJson {
    rotation: Option<f64>,
}

impl StreamJson {
    fn is_video(&self) -> bool {
        self.codec_type.as_deref() == Some("video")
    }

    /// Rotation from the display matrix, else from the legacy `rotate` tag, as 0/90/180/270.
    fn rotation(&self) -> Result<u16, MediaError> {
        let degrees = self
            .side_data_list
            .iter()
            .find_map(|d| d.rotation)
            .or_else(|| self.tags.get("rotate").and_then(|r| r.parse().ok()))
            .unwrap_or(0.0);
        let rounded = degrees.round() as i64;
        if (degrees - rounded as f64).abs() > 0.01 || rounded % 90 != 0 {
            return Err(MediaError::Unsupported {
                reason: format!(
                    "the video is rotated by {degrees} degrees; only multiples of 90 are supported"
                ),
            });
        }
        Ok(rounded.rem_euclid(360) as u16)
    }

    fn info(&self) -> StreamInfo {
        StreamInfo {
            index: self.index,
            codec_type: self.codec_type.clone().unwrap_or_else(|| "unknown".into()),
            codec_name: self.codec_name.clone(),
            time_base: self
                .time_base
                .as_deref()
                .and_then(Rational::parse)
                .filter(|tb| tb.is_valid()),
            start_pts: self.start_pts,
            duration_ts: self.duration_ts,
            nb_frames: self.nb_frames.as_deref().and_then(|n| n.parse().ok()),
            attached_pic: self.disposition.is_attached_pic(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PacketJson {
    stream_index: Option<u32>,
    pts: Option<i64>,
    duration: Option<i64>,
    flags: Option<String>,
    pos: Option<String>,
    size: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pts: i64, duration: Option<i64>, flags: &str) -> PacketJson {
        PacketJson {
            stream_index: Some(0),
            pts: Some(pts),
            duration,
            flags: Some(flags.into()),
            pos: None,
            size: None,
        }
    }

    #[test]
    fn frames_come_in_presentation_order_without_discarded_packets() {
        let packets = [
            packet(-512, Some(512), "KD"),
            packet(0, Some(512), "K_"),
            packet(1024, None, "__"),
            packet(512, None, "__"),
            packet(2000, None, "__"),
        ];
        let frames = frame_times(&packets).expect("frames");
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, [0, 512, 1024, 2000]);
        let durations: Vec<i64> = frames.iter().map(|f| f.duration).collect();
        assert_eq!(durations, [512, 512, 976, 976]);
        assert!(frames[0].keyframe && !frames[1].keyframe);
    }

    #[test]
    fn duplicate_or_missing_timestamps_are_refused() {
        assert!(frame_times(&[packet(0, None, "K_"), packet(0, None, "__")]).is_err());
        let no_pts = PacketJson {
            stream_index: Some(0),
            pts: None,
            duration: None,
            flags: None,
            pos: None,
            size: None,
        };
        assert!(matches!(
            frame_times(&[no_pts]),
            Err(MediaError::Unsupported { .. })
        ));
    }

    #[test]
    fn image_formats_are_recognised() {
        assert!(is_image_format("png_pipe"));
        assert!(is_image_format("image2"));
        assert!(!is_image_format("mov,mp4,m4a,3gp,3g2,mj2"));
    }
}
