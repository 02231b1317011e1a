//! The error type of the media layer, classified for the caller as transient or permanent.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can go wrong while probing, decoding, encoding, stitching or verifying.
///
/// Refusals of the input ([`Invalid`](Self::Invalid), [`Unsupported`](Self::Unsupported),
/// [`TooLarge`](Self::TooLarge)) carry a reason a user can read; failures of the tools keep
/// ffmpeg's own words in `stderr`.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// ffmpeg or ffprobe is not installed (or not on `PATH`).
    #[error("{program} is not installed or not on PATH (install the ffmpeg package)")]
    ProgramMissing {
        /// `ffmpeg` or `ffprobe`.
        program: &'static str,
        /// The error from starting it.
        #[source]
        source: std::io::Error,
    },
    /// The program exists but could not be started or talked to.
    #[error("could not run {program} to {step}")]
    Spawn {
        /// `ffmpeg` or `ffprobe`.
        program: &'static str,
        /// What it was asked to do.
        step: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ffmpeg or ffprobe ran and failed.
    #[error("ffmpeg failed to {step} ({status}): {stderr}")]
    Ffmpeg {
        /// What it was asked to do.
        step: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// The tail of what it printed on stderr.
        stderr: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {step} {}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ffprobe printed something that is not the JSON we expect.
    #[error("unexpected ffprobe output for {}", path.display())]
    ProbeOutput {
        /// The probed file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is not a usable video: empty, not media, truncated, corrupt.
    #[error("{reason}")]
    Invalid {
        /// Why, in words a user understands.
        reason: String,
        /// The tool failure behind the refusal, when there is one.
        #[source]
        source: Option<Box<MediaError>>,
    },
    /// The file is media, but not something this system styles (audio only, a still image...).
    #[error("{reason}")]
    Unsupported {
        /// Why, in words a user understands.
        reason: String,
    },
    /// The video is over one of the configured [`Limits`](super::Limits).
    #[error("the video's {what} is {actual}, over the limit of {limit}")]
    TooLarge {
        /// Which limit.
        what: &'static str,
        /// The video's value.
        actual: String,
        /// The limit.
        limit: String,
    },
    /// A step produced a different number of frames than it had to.
    #[error("{step}: expected {expected} frames, got {actual}")]
    FrameCount {
        /// What was being done.
        step: &'static str,
        /// Frames expected.
        expected: u64,
        /// Frames produced.
        actual: u64,
    },
    /// The caller passed arguments that cannot be right (a range outside the video, frames of
    /// the wrong size).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// An output (a chunk or the stitched video) does not match its source.
    #[error("{reason}")]
    Mismatch {
        /// The first difference found.
        reason: String,
    },
}

impl MediaError {
    /// Whether trying the same step again may succeed: I/O trouble and a tool killed by a
    /// signal (out of memory, shutdown) are transient; refusals, mismatches and tool errors on
    /// the same bytes are not.
    pub fn is_transient(&self) -> bool {
        match self {
            MediaError::Spawn { .. } | MediaError::Io { .. } => true,
            MediaError::Ffmpeg { status, .. } => status.code().is_none(),
            _ => false,
        }
    }
}
