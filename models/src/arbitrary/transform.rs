//! The style transform: a fully convolutional net conditioned on a 100-d style vector.
//!
//! contract: three reflect-padded convs with bias and ReLU (9x9 3->8, 3x3/2 8->16, 3x3/2 16->32);
//! five residual blocks `x + SN(conv(ReLU(SN(conv(x)))))` of 32 channels; expand: nearest x2 +
//! 3x3 32->16, SN, ReLU; nearest x2 + 3x3 16->8, SN, ReLU; 9x9 8->3, SN, sigmoid. SN is the style
//! norm: instance-norm statistics per frame and channel (biased variance, eps 1e-5), with gamma
//! and beta given by two dense layers of the style vector.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::STYLE_DIM;
use super::cpu::{HostLayer, HostTransform, TransformOp};
use crate::ModelError;
use crate::error::CandleContext;
use crate::kernel::Activation;

/// The converted weights, embedded so loading never touches the file system.
static WEIGHTS: &[u8] = include_bytes!("../../weights/arbitrary_transform.safetensors");

/// The smallest frame side: the 9x9 convs reflect-pad by 4, which needs at least 5 pixels.
pub(crate) const MIN_SIDE: u32 = 5;

/// Frames are padded to a multiple of this (two stride-2 convs, two x2 upsamples).
pub(super) const MULTIPLE: usize = 4;

/// Variance epsilon of the style norm.
const EPS: f64 = 1e-5;

/// Mirror padding without repeating the edge (`[a b c d]` by 1 is `[b a b c d c]`) of the last
/// two dims: `top`/`left` before, `bottom`/`right` after.
fn reflect_pad(
    x: &Tensor,
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = x.index_select(&reflect_indices(h, top, bottom, x.device())?, 2)?;
    x.index_select(&reflect_indices(w, left, right, x.device())?, 3)
}

/// Source index of every output position of a reflect pad of one dimension.
fn reflect_indices(
    n: usize,
    before: usize,
    after: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    if before >= n || after >= n {
        candle_core::bail!("cannot reflect-pad a dimension of {n} by {before}/{after}")
    }
    let idx: Vec<u32> = (0..before)
        .map(|i| before - i)
        .chain(0..n)
        .chain((0..after).map(|i| n - 2 - i))
        .map(|i| i as u32)
        .collect();
    Tensor::new(idx, device)
}

/// Reflect pad by `k/2`, conv with bias.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl Conv {
    fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((c_out, c_in, kernel, kernel), "weight")?,
            bias: vb.get(c_out, "bias")?.reshape((1, c_out, 1, 1))?,
            stride,
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.weight.dim(3)? / 2;
        reflect_pad(x, p, p, p, p)?
            .conv2d(&self.weight, 0, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// The two dense layers that give one style norm its gamma and beta.
#[derive(Debug, Clone)]
struct StyleParams {
    gamma: Linear,
    beta: Linear,
}

impl StyleParams {
    fn load(vb: VarBuilder, channels: usize) -> candle_core::Result<Self> {
        let dense = |name: &str| -> candle_core::Result<Linear> {
            let vb = vb.pp(name);
            Ok(Linear::new(
                vb.get((channels, STYLE_DIM), "weight")?,
                Some(vb.get(channels, "bias")?),
            ))
        };
        Ok(Self {
            gamma: dense("gamma")?,
            beta: dense("beta")?,
        })
    }

    /// The norm for one style vector `[1, 100]`.
    fn norm(&self, style: &Tensor) -> candle_core::Result<StyleNorm> {
        let c = self.gamma.weight().dim(0)?;
        Ok(StyleNorm {
            gamma: self.gamma.forward(style)?.reshape((1, c, 1, 1))?,
            beta: self.beta.forward(style)?.reshape((1, c, 1, 1))?,
        })
    }
}

/// Instance norm with fixed gamma and beta `[1, C, 1, 1]`.
#[derive(Debug, Clone)]
struct StyleNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl Module for StyleNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim((2, 3))?)?;
        let var = centred.sqr()?.mean_keepdim((2, 3))?;
        let scale = (var + EPS)?.sqrt()?.recip()?.broadcast_mul(&self.gamma)?;
        centred.broadcast_mul(&scale)?.broadcast_add(&self.beta)
    }
}

/// A conv followed by a style norm, with the dense layers that condition it.
#[derive(Debug, Clone)]
struct NormedConv {
    conv: Conv,
    params: StyleParams,
}

impl NormedConv {
    /// `conv` is the layer's key (`transformer.residual.residual1.conv1`); its style params live
    /// under `style_params.<conv>`.
    fn load(
        vb: &VarBuilder,
        conv: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv: Conv::load(vb.pp(conv), c_in, c_out, kernel, 1)?,
            params: StyleParams::load(vb.pp("style_params").pp(conv), c_out)?,
        })
    }

    fn with_style(&self, style: &Tensor) -> candle_core::Result<StyledConv> {
        Ok(StyledConv {
            conv: self.conv.clone(),
            norm: self.params.norm(style)?,
        })
    }
}

/// A conv and its style norm with gamma and beta fixed.
#[derive(Debug, Clone)]
struct StyledConv {
    conv: Conv,
    norm: StyleNorm,
}

impl Module for StyledConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?)
    }
}

/// The transform's weights, not yet conditioned on a style.
#[derive(Debug, Clone)]
pub struct Transform {
    contract: [Conv; 3],
    residual: Vec<[NormedConv; 2]>,
    expand: [NormedConv; 3],
    device: Device,
}

impl Transform {
    /// Load the embedded weights onto `device`.
    pub fn load(device: &Device) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_buffered_safetensors(WEIGHTS.to_vec(), DType::F32, device)
            .ctx("loading the style transform weights")?;
        Self::from_var_builder(&vb, device).ctx("loading the style transform weights")
    }

    fn from_var_builder(vb: &VarBuilder, device: &Device) -> candle_core::Result<Self> {
        let contract = vb.pp("transformer").pp("contract");
        let contract = [
            Conv::load(contract.pp("conv1"), 3, 8, 9, 1)?,
            Conv::load(contract.pp("conv2"), 8, 16, 3, 2)?,
            Conv::load(contract.pp("conv3"), 16, 32, 3, 2)?,
        ];
        let residual = (1..=5)
            .map(|i| {
                let block = format!("transformer.residual.residual{i}");
                Ok([
                    NormedConv::load(vb, &format!("{block}.conv1"), 32, 32, 3)?,
                    NormedConv::load(vb, &format!("{block}.conv2"), 32, 32, 3)?,
                ])
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let expand = [
            NormedConv::load(vb, "transformer.expand.conv1.conv", 32, 16, 3)?,
            NormedConv::load(vb, "transformer.expand.conv2.conv", 16, 8, 3)?,
            NormedConv::load(vb, "transformer.expand.conv3.conv", 8, 3, 9)?,
        ];
        Ok(Self {
            contract,
            residual,
            expand,
            device: device.clone(),
        })
    }

    /// Condition on a style vector (`[1, 100]` or `[100]`): computes every layer's gamma and beta
    /// once, so frames pay only for the convolutions and norms.
    pub fn with_style(&self, style: &Tensor) -> Result<StyledTransform, ModelError> {
        if style.elem_count() != STYLE_DIM {
            return Err(ModelError::SizeMismatch(format!(
                "a style vector has {STYLE_DIM} values, got shape {:?}",
                style.dims()
            )));
        }
        let build = || -> candle_core::Result<StyledTransform> {
            let style = style
                .to_device(&self.device)?
                .to_dtype(DType::F32)?
                .reshape((1, STYLE_DIM))?;
            let residual = self
                .residual
                .iter()
                .map(|[a, b]| Ok([a.with_style(&style)?, b.with_style(&style)?]))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let [e1, e2, e3] = &self.expand;
            let mut styled = StyledTransform {
                contract: self.contract.clone(),
                residual,
                expand: [
                    e1.with_style(&style)?,
                    e2.with_style(&style)?,
                    e3.with_style(&style)?,
                ],
                host: None,
            };
            if self.device.is_cpu() {
                styled.host = Some(styled.host_layers()?);
            }
            Ok(styled)
        };
        build().ctx("conditioning the style transform")
    }
}

/// The transform with its style fixed.
#[derive(Debug, Clone)]
pub struct StyledTransform {
    contract: [Conv; 3],
    residual: Vec<[StyledConv; 2]>,
    expand: [StyledConv; 3],
    /// The same layers as host data for the CPU kernels (only on CPU).
    host: Option<HostTransform>,
}

impl StyledTransform {
    /// Style a batch `[N, 3, h, w]` of f32 frames in `[0, 1]`: reflect-pad bottom/right to a
    /// multiple of 4, run, crop back to `h x w`. Frames smaller than 5x5 are rejected. Uses the
    /// fused kernels on CPU.
    pub fn run_f32(&self, frames: &Tensor) -> Result<Tensor, ModelError> {
        self.run(frames, true)
    }

    /// As [`StyledTransform::run_f32`] but always with plain Candle ops (the path other devices
    /// take): slow on CPU, kept to check the kernels against it.
    pub fn run_f32_reference(&self, frames: &Tensor) -> Result<Tensor, ModelError> {
        self.run(frames, false)
    }

    /// Copy the layers to the host for the CPU kernels.
    fn host_layers(&self) -> candle_core::Result<HostTransform> {
        let [c1, c2, c3] = &self.contract;
        let contract = [c1, c2, c3]
            .into_iter()
            .map(|c| HostLayer::new(&c.weight, &c.bias, None, c.stride, false, Activation::Relu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let styled = |l: &StyledConv, upsample, activation| {
            HostLayer::new(
                &l.conv.weight,
                &l.conv.bias,
                Some((&l.norm.gamma, &l.norm.beta)),
                l.conv.stride,
                upsample,
                activation,
            )
        };
        let residual = self
            .residual
            .iter()
            .map(|[a, b]| {
                Ok([
                    styled(a, false, Activation::Relu)?,
                    styled(b, false, Activation::None)?,
                ])
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let [e1, e2, e3] = &self.expand;
        Ok(HostTransform {
            contract,
            residual,
            expand: vec![
                styled(e1, true, Activation::Relu)?,
                styled(e2, true, Activation::Relu)?,
                styled(e3, false, Activation::Sigmoid)?,
            ],
        })
    }

    fn run(&self, frames: &Tensor, fast: bool) -> Result<Tensor, ModelError> {
        let (h, w) = match frames.dims() {
            &[_, 3, h, w] => (h, w),
            dims => {
                return Err(ModelError::SizeMismatch(format!(
                    "the style transform takes [N, 3, h, w] frames, got {dims:?}"
                )));
            }
        };
        if h < MIN_SIDE as usize || w < MIN_SIDE as usize {
            return Err(ModelError::FrameTooSmall {
                width: w as u32,
                height: h as u32,
                min: MIN_SIDE,
            });
        }
        let run = || -> candle_core::Result<Tensor> {
            let frames = frames.to_dtype(DType::F32)?.contiguous()?;
            if let (true, Some(host)) = (fast, &self.host) {
                return frames.apply_op1_no_bwd(&TransformOp(host));
            }
            let (ph, pw) = (
                h.next_multiple_of(MULTIPLE) - h,
                w.next_multiple_of(MULTIPLE) - w,
            );
            let x = if ph + pw > 0 {
                reflect_pad(&frames, 0, ph, 0, pw)?
            } else {
                frames
            };
            let y = self.forward(&x)?;
            if ph + pw > 0 {
                y.narrow(2, 0, h)?.narrow(3, 0, w)
            } else {
                Ok(y)
            }
        };
        run().ctx("running the style transform")
    }
}

impl Module for StyledTransform {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.contract {
            h = conv.forward(&h)?.relu()?;
        }
        for [a, b] in &self.residual {
            h = (&h + b.forward(&a.forward(&h)?.relu()?)?)?;
        }
        let [e1, e2, e3] = &self.expand;
        for conv in [e1, e2] {
            let (_, _, hh, ww) = h.dims4()?;
            h = conv
                .forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?
                .relu()?;
        }
        candle_nn::ops::sigmoid(&e3.forward(&h)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::reflect_indices;
    use candle_core::Device;

    #[test]
    fn reflect_indices_mirror_without_the_edge() {
        let idx = reflect_indices(4, 1, 1, &Device::Cpu).unwrap();
        assert_eq!(idx.to_vec1::<u32>().unwrap(), [1, 0, 1, 2, 3, 2]);
        let idx = reflect_indices(5, 4, 3, &Device::Cpu).unwrap();
        assert_eq!(
            idx.to_vec1::<u32>().unwrap(),
            [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
        );
        assert!(reflect_indices(4, 4, 0, &Device::Cpu).is_err());
    }
}
