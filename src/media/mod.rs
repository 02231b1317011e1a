//! Everything that touches ffmpeg and ffprobe: probing a source, decoding an exact range of
//! frames, encoding a chunk with the source's timestamps, stitching chunks with the source's
//! audio, and verifying the result frame by frame.
//!
//! # Layout
//!
//! - `command`: the one ffmpeg/ffprobe command builder (private).
//! - [`probe()`]: ffprobe into a [`Probe`], refusing what is not a video.
//! - [`check`]: size limits ([`Limits`]).
//! - [`decode_frames`]: a frame range to RGB24, seeking to the nearest keyframe.
//! - [`reader`]: a decoder kept open across the ranges of one source taken in order
//!   ([`FrameReader`], [`decode_frames_with`]), each frame's pts checked.
//! - [`encode_chunk`]: RGB24 frames to an mp4 chunk with exact timestamps ([`EncoderSettings`]).
//! - [`codec`]: the codec and preset names, each encoder's arguments, and `auto` resolved once
//!   per process (`h264_nvenc` where a probe encode works, else `libx264`).
//! - [`stitch()`]: chunks plus the source's audio and subtitles into the output mp4.
//!   [`stitch::stitch_checked`] joins chunks checked already (their counts given) without probing them.
//! - [`stitch_stabilised`]: the same, with the frames temporally stabilised in one streaming pass.
//! - [`verify()`], [`verify_chunk`]: ffprobe checks of an output against its source.
//! - [`still`]: one frame as displayed ([`frame_at`]), and the encoded size of sample frames
//!   ([`encoded_size`]).
//! - [`jpeg_thumbnail`]: one decoded frame, upright, as a small JPEG (the fleet's web page).
//! - [`time`]: exact rational time arithmetic.
//!
//! # Frame-exactness
//!
//! The output has the source's frame count, per-frame timestamps (relative to the first
//! frame, VFR included), stored size and rotation; audio and subtitles are stream copies. The
//! module docs of [`decode`], [`encode`] and [`stitch`](mod@stitch) say how each step keeps that.

pub mod codec;
mod command;
pub mod decode;
pub mod encode;
mod error;
pub mod limits;
pub mod probe;
pub mod reader;
pub mod stabilise;
pub mod still;
pub mod stitch;
pub mod thumbnail;
pub mod time;
pub mod verify;

pub use codec::{Codec, Preset};
pub use command::{runnable_tools, tool_path};
pub use decode::decode_frames;
pub use encode::{EncoderSettings, encode_chunk};
pub use error::MediaError;
pub use limits::{Limits, check};
pub use probe::{FormatInfo, FrameTime, Probe, StreamInfo, VideoStream, probe};
pub use reader::{FrameReader, decode_frames_with};
pub use stabilise::{StabiliseReport, stitch_stabilised};
pub use still::{Still, encoded_size, frame_at, frame_index_at};
pub use stitch::stitch;
pub use thumbnail::jpeg_thumbnail;
pub use time::Rational;
pub use verify::{compare, verify, verify_chunk};
