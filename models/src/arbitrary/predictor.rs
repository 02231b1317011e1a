//! The style predictor: MobileNetV2 (width 1.0) from a 256x256 style image to a 100-d vector.
//!
//! BatchNorm is folded into every conv's bias; activations are ReLU6; padding is TF "SAME" with
//! zeros, which for a stride-2 conv on an even input pads 0 top/left and 1 bottom/right.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{STYLE_DIM, STYLE_SIZE, style_input};
use crate::error::CandleContext;
use crate::{Frame, ModelError};

/// The converted weights, embedded so loading never touches the file system.
static WEIGHTS: &[u8] = include_bytes!("../../weights/arbitrary_predict.safetensors");

/// Inverted residual blocks: expansion ratio, output channels, repeats, stride of the first.
const BLOCKS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// TF "SAME" padding `(before, after)` for one spatial dimension.
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// A conv with its folded BatchNorm bias, zero "SAME" padding and an optional ReLU6.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    groups: usize,
    relu6: bool,
}

impl ConvBn {
    /// A full conv `c_in -> c_out` (`groups == 1`) or a depthwise one (`groups == c_in == c_out`).
    fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((c_out, c_in / groups, kernel, kernel), "weight")?,
            bias: vb.get(c_out, "bias")?.reshape((1, c_out, 1, 1))?,
            stride,
            groups,
            relu6,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_padding(h, kh, self.stride);
        let (left, right) = same_padding(w, kw, self.stride);
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        let y = x
            .conv2d(&self.weight, 0, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)?;
        if self.relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
        }
    }
}

/// MobileNetV2's inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection.
#[derive(Debug, Clone)]
struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl InvertedResidual {
    fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        ratio: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let hidden = c_in * ratio;
        let expand = if ratio == 1 {
            None
        } else {
            Some(ConvBn::load(vb.pp("expand"), c_in, hidden, 1, 1, 1, true)?)
        };
        Ok(Self {
            expand,
            depthwise: ConvBn::load(vb.pp("depthwise"), hidden, hidden, 3, stride, hidden, true)?,
            project: ConvBn::load(vb.pp("project"), hidden, c_out, 1, 1, 1, false)?,
            residual: stride == 1 && c_in == c_out,
        })
    }
}

impl Module for InvertedResidual {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(expand) => expand.forward(x)?,
            None => x.clone(),
        };
        let h = self.project.forward(&self.depthwise.forward(&h)?)?;
        if self.residual { h + x } else { Ok(h) }
    }
}

/// MobileNetV2 from a `[1, 3, 256, 256]` style image to its `[1, 100]` style vector.
#[derive(Debug, Clone)]
pub struct StylePredictor {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
    bottleneck: Linear,
    device: Device,
}

impl StylePredictor {
    /// Load the embedded weights onto `device`.
    pub fn load(device: &Device) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_buffered_safetensors(WEIGHTS.to_vec(), DType::F32, device)
            .ctx("loading the style predictor weights")?;
        Self::from_var_builder(vb, device).ctx("loading the style predictor weights")
    }

    fn from_var_builder(vb: VarBuilder, device: &Device) -> candle_core::Result<Self> {
        let net = vb.pp("mobilenetv2");
        let stem = ConvBn::load(net.pp("conv"), 3, 32, 3, 2, 1, true)?;
        let mut blocks = Vec::with_capacity(17);
        let mut c_in = 32;
        for (ratio, c_out, repeats, first_stride) in BLOCKS {
            for r in 0..repeats {
                // TF names the first block `expanded_conv`, the next `expanded_conv_1`, ...
                let name = match blocks.len() {
                    0 => "expanded_conv".to_owned(),
                    i => format!("expanded_conv_{i}"),
                };
                let stride = if r == 0 { first_stride } else { 1 };
                blocks.push(InvertedResidual::load(
                    net.pp(name),
                    c_in,
                    c_out,
                    ratio,
                    stride,
                )?);
                c_in = c_out;
            }
        }
        let head = ConvBn::load(net.pp("conv_1"), c_in, 1280, 1, 1, 1, true)?;
        let dense = vb.pp("mobilenet_conv").pp("conv");
        let bottleneck = Linear::new(
            dense.get((STYLE_DIM, 1280), "weight")?,
            Some(dense.get(STYLE_DIM, "bias")?),
        );
        Ok(Self {
            stem,
            blocks,
            head,
            bottleneck,
            device: device.clone(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The style vector `[1, 100]` of a prepared `[1, 3, 256, 256]` f32 image in `[0, 1]`.
    pub fn predict(&self, image: &Tensor) -> Result<Tensor, ModelError> {
        let n = STYLE_SIZE as usize;
        match image.dims() {
            &[1, 3, h, w] if h == n && w == n => {}
            dims => {
                return Err(ModelError::SizeMismatch(format!(
                    "the style predictor takes [1, 3, {n}, {n}], got {dims:?}"
                )));
            }
        }
        self.forward(image).ctx("running the style predictor")
    }

    /// The style vector `[1, 100]` of any picture: centre square crop, Lanczos resize to 256.
    pub fn style_vector(&self, image: &Frame) -> Result<Tensor, ModelError> {
        self.predict(&style_input(image, &self.device)?)
    }
}

impl Module for StylePredictor {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let pooled = self.head.forward(&h)?.mean(D::Minus1)?.mean(D::Minus1)?;
        self.bottleneck.forward(&pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn same_padding_matches_tensorflow() {
        // A 3x3 stride-2 conv on an even input pads only bottom/right.
        assert_eq!(same_padding(256, 3, 2), (0, 1));
        assert_eq!(same_padding(8, 3, 2), (0, 1));
        // On an odd input it pads both sides.
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        assert_eq!(same_padding(16, 3, 1), (1, 1));
        assert_eq!(same_padding(16, 1, 1), (0, 0));
    }
}
