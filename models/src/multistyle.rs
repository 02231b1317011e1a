//! The 26-style network (conditional instance norm), as specified in the model spec.
//!
//! Two implementations of one forward pass: the CPU path runs the fused kernels of
//! [`crate::kernel`] (reflect pad folded into the conv packing, one-pass norm statistics fused
//! with the affine, activation and residual add); every other device runs plain Candle ops
//! (`conv2d`, `upsample_nearest2d`, reductions), in f16 on CUDA with the norm statistics in f32.
//! On CUDA the layers run by default on fused kernels around Candle's convs (`cuda.rs`:
//! upsample + reflect pad in one gather, norm + activation + residual add in one pass);
//! [`MultiStyle::with_plain_ops`] turns them off.
//! Both are checked against onnxruntime by `tests/golden.rs`.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{CandleContext, ModelError};
use crate::kernel;
use crate::styles::NUM_STYLES;

#[cfg(feature = "cuda")]
mod cuda;

/// The converted weights (see `NOTICE` and `convert/convert.py`), embedded so that loading
/// never touches the file system or the network.
static WEIGHTS: &[u8] = include_bytes!("../weights/multistyle26.safetensors");

/// Instance-norm epsilon of the exported graph.
pub(crate) const EPS: f64 = 1e-5;

/// The network downsamples by 4: inputs are reflect-padded bottom/right to a multiple of this.
pub const MULTIPLE: usize = 4;

/// Smallest frame side the network accepts: the padded side must be at least 8 so that the
/// deepest (quarter-size) activation is 2 pixels wide, enough for a reflect pad of 1.
pub const MIN_SIDE: u32 = 5;

/// What follows a conv + conditional instance norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Nothing (the second conv of a residual block, before the add).
    None,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
}

/// One layer: optional nearest x2 upsample, reflect pad `k/2`, conv without bias, conditional
/// instance norm with the blended `gamma`/`beta`, activation.
#[derive(Debug)]
struct ConvNorm {
    /// `[c_out, c_in, k, k]` on the device, in the compute dtype.
    weight: Tensor,
    /// Blended `gamma`, `[c_out]`, f32.
    gamma: Tensor,
    /// Blended `beta`, `[c_out]`, f32.
    beta: Tensor,
    /// The same layer as host data for the CPU kernels (only on CPU).
    cpu: Option<kernel::ConvLayer>,
    kernel: usize,
    stride: usize,
    upsample: bool,
    activation: Activation,
}

impl ConvNorm {
    #[allow(clippy::too_many_arguments)] // one call per row of the spec's layer table
    fn load(
        vb: &VarBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        upsample: bool,
        activation: Activation,
        style: &Tensor,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let vb = vb.pp(name);
        let weight = vb
            .get((c_out, c_in, kernel, kernel), "w")
            .ctx("loading a conv weight")?;
        let norm = vb.pp("norm");
        // gamma = s @ G, beta = s @ B: blending styles is a linear blend of the norm parameters.
        let blend = |key: &str| -> Result<Tensor, ModelError> {
            let table = norm
                .get((NUM_STYLES, c_out), key)
                .ctx("loading a norm table")?;
            style
                .matmul(&table)
                .and_then(|t| t.squeeze(0))
                .ctx("blending norm parameters")
        };
        let gamma = blend("gamma")?;
        let beta = blend("beta")?;
        let cpu = if weight.device().is_cpu() {
            Some(kernel::ConvLayer::new(
                weight
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .ctx("copying a conv weight")?,
                gamma.to_vec1().ctx("copying gamma")?,
                beta.to_vec1().ctx("copying beta")?,
                kernel::ConvSpec {
                    c_in,
                    c_out,
                    kernel,
                    stride,
                },
                upsample,
            ))
        } else {
            None
        };
        Ok(Self {
            weight: weight.to_dtype(dtype).ctx("casting a conv weight")?,
            gamma,
            beta,
            cpu,
            kernel,
            stride,
            upsample,
            activation,
        })
    }

    /// Upsample, pad, conv and normalise (no activation): plain Candle ops.
    fn conv_norm(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = if self.upsample {
            let (_, _, h, w) = x.dims4().ctx("upsample input")?;
            x.upsample_nearest2d(2 * h, 2 * w).ctx("upsample")?
        } else {
            x.clone()
        };
        let x = reflect_pad(&x, self.kernel / 2)?;
        let y = x.conv2d(&self.weight, 0, self.stride, 1, 1).ctx("conv2d")?;
        instance_norm(&y, &self.gamma, &self.beta)
    }

    fn activate(&self, x: Tensor) -> Result<Tensor, ModelError> {
        match self.activation {
            Activation::None => Ok(x),
            Activation::Relu => x.relu().ctx("relu"),
            Activation::Sigmoid => candle_nn::ops::sigmoid(&x).ctx("sigmoid"),
        }
    }
}

/// Mirror padding without repeating the edge (`[a b c d]` by 1 is `[b a b c d c]`) on H and W.
fn reflect_pad(x: &Tensor, pad: usize) -> Result<Tensor, ModelError> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4().ctx("reflect pad input")?;
    let index = |n: usize| -> Result<Tensor, ModelError> {
        let idx: Vec<u32> = (0..n + 2 * pad)
            .map(|i| kernel::reflect(i as isize - pad as isize, n) as u32)
            .collect();
        Tensor::new(idx, x.device()).ctx("reflect pad index")
    };
    let (iw, ih) = (index(w)?, index(h)?);
    x.index_select(&iw, 3)
        .and_then(|t| t.index_select(&ih, 2))
        .ctx("reflect pad")
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` per frame and channel over H*W, statistics in
/// f32 whatever the compute dtype.
fn instance_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor, ModelError> {
    let dtype = x.dtype();
    let (n, c, h, w) = x.dims4().ctx("norm input")?;
    let run = || -> candle_core::Result<Tensor> {
        let xf = x.to_dtype(DType::F32)?.reshape((n, c, h * w))?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let centred = xf.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let scale = (var + EPS)?
            .sqrt()?
            .recip()?
            .broadcast_mul(&gamma.reshape((1, c, 1))?)?;
        centred
            .broadcast_mul(&scale)?
            .broadcast_add(&beta.reshape((1, c, 1))?)?
            .reshape((n, c, h, w))?
            .to_dtype(dtype)
    };
    run().ctx("instance norm")
}

/// The multistyle network, conditioned on one style blend, on one device.
#[derive(Debug)]
pub struct MultiStyle {
    contract: [ConvNorm; 3],
    res: Vec<[ConvNorm; 2]>,
    expand: [ConvNorm; 3],
    device: Device,
    dtype: DType,
    /// Run the fused CUDA kernels of `cuda.rs` instead of plain Candle ops (CUDA only).
    fused: bool,
}

impl MultiStyle {
    /// Load the embedded weights onto `device` and blend the norm parameters for `style_weights`
    /// (26 weights, normalised to sum 1 by the caller). CUDA computes in f16, CPU in f32.
    pub fn new(style_weights: &[f32; NUM_STYLES], device: &Device) -> Result<Self, ModelError> {
        let dtype = if device.is_cuda() {
            DType::F16
        } else {
            DType::F32
        };
        Self::with_dtype(style_weights, device, dtype)
    }

    /// As [`MultiStyle::new`], with an explicit compute dtype for the plain-op path.
    pub fn with_dtype(
        style_weights: &[f32; NUM_STYLES],
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_buffered_safetensors(WEIGHTS.to_vec(), DType::F32, device)
            .ctx("reading the embedded weights")?;
        let style = Tensor::new(style_weights.as_slice(), device)
            .and_then(|t| t.reshape((1, NUM_STYLES)))
            .ctx("style weights")?;
        use Activation::{None as Plain, Relu, Sigmoid};
        let layer = |name: &str, c_in, c_out, k, stride, up, act| {
            ConvNorm::load(&vb, name, c_in, c_out, k, stride, up, act, &style, dtype)
        };
        let contract = [
            layer("contract.0", 3, 32, 9, 1, false, Relu)?,
            layer("contract.1", 32, 32, 3, 2, false, Relu)?,
            layer("contract.2", 32, 32, 3, 2, false, Relu)?,
        ];
        let mut res = Vec::with_capacity(6);
        for i in 0..6 {
            res.push([
                layer(&format!("res.{i}.0"), 32, 32, 3, 1, false, Relu)?,
                layer(&format!("res.{i}.1"), 32, 32, 3, 1, false, Plain)?,
            ]);
        }
        let expand = [
            layer("expand.0", 32, 8, 3, 1, true, Relu)?,
            layer("expand.1", 8, 4, 3, 1, true, Relu)?,
            layer("expand.2", 4, 3, 9, 1, false, Sigmoid)?,
        ];
        Ok(Self {
            contract,
            res,
            expand,
            device: device.clone(),
            dtype,
            fused: cfg!(feature = "cuda") && device.is_cuda(),
        })
    }

    /// Run plain Candle ops on the GPU instead of the fused kernels (to compare the two).
    pub fn with_plain_ops(mut self) -> Self {
        self.fused = false;
        self
    }

    /// Whether the forward pass runs the fused CUDA kernels.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Style `x`, `[N, 3, h, w]` f32 RGB in [0, 1] with `h, w >= 5`: reflect-pad bottom/right
    /// to a multiple of 4, run, crop back to `h x w`. Returns f32 in (0, 1), before any
    /// quantisation. Uses the fused kernels on CPU.
    pub fn run_f32(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.run(x, self.cpu_fast_path())
    }

    /// As [`MultiStyle::run_f32`] but always with plain Candle ops (the path CUDA takes): slow on
    /// CPU, kept to check the kernels against it.
    pub fn run_f32_reference(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.run(x, false)
    }

    fn cpu_fast_path(&self) -> bool {
        self.device.is_cpu() && self.contract[0].cpu.is_some()
    }

    fn run(&self, x: &Tensor, fast: bool) -> Result<Tensor, ModelError> {
        let (_, c, h, w) = x.dims4().ctx("network input")?;
        if c != 3 {
            return Err(ModelError::SizeMismatch(format!(
                "the network takes 3 channels, got {c}"
            )));
        }
        check_min_side(w, h)?;
        let x = x.to_dtype(DType::F32).ctx("input to f32")?;
        let (ph, pw) = (h.next_multiple_of(MULTIPLE), w.next_multiple_of(MULTIPLE));
        let y = if fast {
            let x = x.contiguous().ctx("contiguous input")?;
            x.apply_op1_no_bwd(&kernel::NetOp { net: self })
                .ctx("multistyle forward (cpu kernels)")?
        } else {
            let x = pad_bottom_right(&x, ph - h, pw - w)?;
            self.forward_device(&x.to_dtype(self.dtype).ctx("input to compute dtype")?)?
                .to_dtype(DType::F32)
                .ctx("output to f32")?
        };
        if (ph, pw) == (h, w) {
            return Ok(y);
        }
        y.narrow(2, 0, h)
            .and_then(|t| t.narrow(3, 0, w))
            .ctx("crop")
    }

    /// The network on an input already padded to a multiple of 4: fused kernels on CUDA unless
    /// turned off, plain Candle ops otherwise.
    fn forward_device(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        #[cfg(feature = "cuda")]
        if self.fused {
            return self.forward_fused(x);
        }
        self.forward_plain(x)
    }

    /// The network on an input already padded to a multiple of 4, with plain Candle ops.
    fn forward_plain(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut x = x.clone();
        for layer in &self.contract {
            x = layer.activate(layer.conv_norm(&x)?)?;
        }
        for [first, second] in &self.res {
            let y = first.activate(first.conv_norm(&x)?)?;
            x = (x + second.conv_norm(&y)?).ctx("residual add")?;
        }
        for layer in &self.expand {
            x = layer.activate(layer.conv_norm(&x)?)?;
        }
        Ok(x)
    }

    /// The layers in execution order, for the CPU kernels.
    pub(crate) fn cpu_layers(&self) -> Option<CpuLayers<'_>> {
        fn get(l: &ConvNorm) -> Option<(&kernel::ConvLayer, Activation)> {
            l.cpu.as_ref().map(|c| (c, l.activation))
        }
        let mut contract = Vec::with_capacity(3);
        for l in &self.contract {
            contract.push(get(l)?);
        }
        let mut res = Vec::with_capacity(self.res.len());
        for [a, b] in &self.res {
            res.push([get(a)?, get(b)?]);
        }
        let mut expand = Vec::with_capacity(3);
        for l in &self.expand {
            expand.push(get(l)?);
        }
        Some(CpuLayers {
            contract,
            res,
            expand,
        })
    }
}

/// Host-side layers with their activations, in execution order.
pub(crate) struct CpuLayers<'a> {
    pub(crate) contract: Vec<(&'a kernel::ConvLayer, Activation)>,
    pub(crate) res: Vec<[(&'a kernel::ConvLayer, Activation); 2]>,
    pub(crate) expand: Vec<(&'a kernel::ConvLayer, Activation)>,
}

/// Reject frames below the minimum.
pub(crate) fn check_min_side(width: usize, height: usize) -> Result<(), ModelError> {
    if width < MIN_SIDE as usize || height < MIN_SIDE as usize {
        return Err(ModelError::FrameTooSmall {
            width: width as u32,
            height: height as u32,
            min: MIN_SIDE,
        });
    }
    Ok(())
}

/// Reflect-pad the bottom and right edges only (as the source package does before the network).
pub(crate) fn pad_bottom_right(
    x: &Tensor,
    pad_h: usize,
    pad_w: usize,
) -> Result<Tensor, ModelError> {
    if pad_h == 0 && pad_w == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4().ctx("pad input")?;
    let index = |n: usize, pad: usize| -> Result<Tensor, ModelError> {
        let idx: Vec<u32> = (0..n + pad)
            .map(|i| kernel::reflect(i as isize, n) as u32)
            .collect();
        Tensor::new(idx, x.device()).ctx("pad index")
    };
    let (iw, ih) = (index(w, pad_w)?, index(h, pad_h)?);
    x.index_select(&iw, 3)
        .and_then(|t| t.index_select(&ih, 2))
        .ctx("pad bottom/right")
}
