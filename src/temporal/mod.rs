//! Temporal stabilisation of styled video: per-frame style transfer paints different strokes on
//! pictures that barely differ, so static parts shimmer. The styled frames are blended, in
//! display order, with the previous stabilised frame warped along the source's optical flow,
//! wherever that warp can be trusted. Training-free and style-independent: it works the same
//! for the built-in styles and for style images.
//!
//! # Layout
//!
//! - [`settings`]: [`TemporalSettings`], the job's strength and thresholds (in its manifest).
//! - [`plane`]: [`Plane`], a one-channel `f32` image (luma, a flow component).
//! - [`flow`]: [`dis_flow`], dense optical flow by Dense Inverse Search, and [`Flow`].
//! - [`reliability`]: forward-backward consistency, motion boundaries, the photometric weight,
//!   locally unchanged pixels.
//! - [`upsample`]: [`Upsampler`](upsample::Upsampler), the small flow and mask sampled at a
//!   full-size pixel.
//! - [`warp`]: the bicubic sample of the previous output where a pixel came from.
//! - [`stabiliser`]: [`Stabiliser`], the recursive blend with its restarts at cuts and fades.
//! - [`metric`]: flicker, warping error and the other measures of the benchmark and the tests.
//!
//! Where it runs: the aggregator, in one sequential pass over the whole video at stitch time
//! (see [`crate::media::stitch_stabilised`]), so batches keep being styled in parallel and their
//! seams are ordinary frame pairs of one continuous filter.

pub mod flow;
pub mod metric;
pub mod plane;
pub mod reliability;
pub mod settings;
pub mod stabiliser;
pub mod upsample;
pub mod warp;

pub use flow::{DisParams, Flow, dis_flow};
pub use plane::Plane;
pub use settings::TemporalSettings;
pub use stabiliser::{Restart, Stabiliser, Step, Timings};
