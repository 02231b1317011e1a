//! stylefleet: neural style transfer over every frame of a video, in parallel, frame-exact.
//!
//! # Layout
//!
//! - [`queue`]: the peek-lock queue trait, its SQLite backend and the conformance suite.
//! - [`media`]: ffprobe, decoding a range of frames, encoding a chunk, stitching the output.
#![warn(missing_docs)]

pub mod media;
pub mod queue;
