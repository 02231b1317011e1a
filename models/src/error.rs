//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while parsing a style, loading a network or styling frames.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A style name that is not in the table.
    #[error(
        "unknown style {name:?}{}; `stylefleet styles` lists all of them",
        suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownStyle {
        /// The name as given.
        name: String,
        /// The built-in style whose name is closest to it, when one is close enough.
        suggestion: Option<&'static str>,
    },
    /// A style index past the last style.
    #[error("style index {index} is out of range; valid indices are 0 to {max}")]
    StyleIndexOutOfRange {
        /// The index as given.
        index: usize,
        /// The largest valid index.
        max: usize,
    },
    /// A blend that does not parse, or whose weights cannot be normalised.
    #[error(
        "bad style blend {spec:?}: {reason}; use e.g. 3, starry-blue, 3:0.7,12:0.3 or a path to an image"
    )]
    BadBlend {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A strength outside 0..=1.
    #[error("strength must be between 0 and 1, got {0}")]
    BadStrength(f32),
    /// A frame below the network's minimum size.
    #[error("frame {width}x{height} is smaller than the {min}x{min} minimum")]
    FrameTooSmall {
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// The minimum side.
        min: u32,
    },
    /// Frames of one batch differ in size, or a frame's buffer does not match its size.
    #[error("frame size mismatch: {0}")]
    SizeMismatch(String),
    /// A style that this build cannot serve yet.
    #[error("{0} is not yet supported")]
    Unsupported(String),
    /// No GPU although one was required.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// An image file that cannot be read or written.
    #[error("image file {path}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the image crate said.
        #[source]
        source: image::ImageError,
    },
    /// A thread pool that could not be built.
    #[error("cannot build a thread pool of {threads} threads")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// What rayon said.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// An error from Candle (tensor shapes, weights, device).
    #[error("candle: {context}")]
    Candle {
        /// What was being done.
        context: &'static str,
        /// Candle's error.
        #[source]
        source: candle_core::Error,
    },
}

/// Attach a context to a Candle result.
pub(crate) trait CandleContext<T> {
    /// Map a Candle error into [`ModelError::Candle`] with `context`.
    fn ctx(self, context: &'static str) -> Result<T, ModelError>;
}

impl<T> CandleContext<T> for Result<T, candle_core::Error> {
    fn ctx(self, context: &'static str) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Candle { context, source })
    }
}
