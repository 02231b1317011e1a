//! stylefleet: neural style transfer over every frame of a video, in parallel, frame-exact.
//!
//! # Layout
//!
//! - [`queue`]: the peek-lock queue trait, its SQLite backend and the conformance suite.
//! - [`media`]: ffprobe, decoding a range of frames, encoding a chunk, stitching the output.
//! - [`sas`]: short-lived single-blob upload/download URLs for outside users (user delegation SAS).
#![warn(missing_docs)]

pub mod media;
pub mod queue;
pub mod sas;
