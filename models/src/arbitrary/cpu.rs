//! The style transform on the CPU kernels of [`crate::kernel`], one frame at a time.
//!
//! The reflect pads, the nearest x2 upsamples and the bottom/right pad of the input to a multiple
//! of 4 are folded into each conv's packing; the style norm is fused with its activation and the
//! residual add. The plain Candle path in `transform.rs` computes the same thing (and is what
//! other devices run).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::transform::MULTIPLE;
use crate::kernel::{self, Activation, InputView};

/// One transform layer as host data.
#[derive(Debug, Clone)]
pub(super) struct HostLayer {
    /// Conv with its bias, reflect pad `k/2` done by the kernel.
    conv: kernel::Conv,
    /// Style-norm `gamma` and `beta`, or `None` for the contracting convs (no norm).
    norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Nearest x2 upsample before the conv.
    upsample: bool,
    activation: Activation,
}

impl HostLayer {
    /// Copy a layer off its (CPU) tensors: `weight [c_out, c_in, k, k]`, `bias`, `gamma`, `beta`
    /// (each `[c_out]` in any shape).
    pub(super) fn new(
        weight: &Tensor,
        bias: &Tensor,
        norm: Option<(&Tensor, &Tensor)>,
        stride: usize,
        upsample: bool,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        let (c_out, c_in, kernel, _) = weight.dims4()?;
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let norm = match norm {
            Some((gamma, beta)) => Some((host(gamma)?, host(beta)?)),
            None => None,
        };
        Ok(Self {
            conv: kernel::Conv {
                weight: host(weight)?,
                bias: host(bias)?,
                spec: kernel::ConvSpec {
                    c_in,
                    c_out,
                    kernel,
                    stride,
                },
            },
            norm,
            upsample,
            activation,
        })
    }

    /// Conv, then norm + activation (+ `residual`), into `out`; returns the output `(h, w)`.
    fn run(
        &self,
        input: &[f32],
        view: InputView,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) -> (usize, usize) {
        let view = InputView {
            upsample: self.upsample,
            ..view
        };
        let ((ho, wo), stats) = self.conv.forward(input, &view, out);
        match &self.norm {
            Some((gamma, beta)) => {
                kernel::norm_act(out, ho * wo, &stats, gamma, beta, self.activation, residual);
            }
            // The contracting convs: bias (added by the kernel) and ReLU, no norm, no residual.
            None => out.par_chunks_mut(16 * 1024).for_each(|part| {
                part.iter_mut().for_each(|v| *v = v.max(0.0));
            }),
        }
        (ho, wo)
    }
}

/// The conditioned transform as host data, in execution order.
#[derive(Debug, Clone)]
pub(super) struct HostTransform {
    pub(super) contract: Vec<HostLayer>,
    pub(super) residual: Vec<[HostLayer; 2]>,
    pub(super) expand: Vec<HostLayer>,
}

impl HostTransform {
    /// One frame `[3][h][w]` through the network; the result is `[3][h][w]`.
    fn forward_frame(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (mut a, mut b, mut t) = (Vec::new(), Vec::new(), Vec::new());
        // The first conv reads the frame through the bottom/right pad to a multiple of 4.
        let mut view = InputView {
            multiple: MULTIPLE,
            ..InputView::plain(h, w)
        };
        for (i, layer) in self.contract.iter().enumerate() {
            let src: &[f32] = if i == 0 { x } else { &a };
            let (ho, wo) = layer.run(src, view, None, &mut b);
            std::mem::swap(&mut a, &mut b);
            view = InputView::plain(ho, wo);
        }
        for [first, second] in &self.residual {
            let (ho, wo) = first.run(&a, view, None, &mut t);
            second.run(&t, InputView::plain(ho, wo), Some(&a), &mut b);
            std::mem::swap(&mut a, &mut b);
        }
        for layer in &self.expand {
            let (ho, wo) = layer.run(&a, view, None, &mut b);
            std::mem::swap(&mut a, &mut b);
            view = InputView::plain(ho, wo);
        }
        crop(a, view.h, view.w, h, w)
    }
}

/// Keep the top-left `h x w` of each of the 3 planes of `ph x pw`.
fn crop(x: Vec<f32>, ph: usize, pw: usize, h: usize, w: usize) -> Vec<f32> {
    if (ph, pw) == (h, w) {
        return x;
    }
    let mut out = Vec::with_capacity(3 * h * w);
    for plane in x.chunks_exact(ph * pw) {
        for row in plane.chunks_exact(pw).take(h) {
            out.extend_from_slice(&row[..w]);
        }
    }
    out
}

/// The transform as a Candle custom op: `[N, 3, h, w]` f32 in, the same shape out.
pub(super) struct TransformOp<'a>(pub(super) &'a HostTransform);

impl CustomOp1 for TransformOp<'_> {
    fn name(&self) -> &'static str {
        "arbitrary-transform-cpu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != 3 {
            candle_core::bail!("the style transform takes 3 channels, got {c}");
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("arbitrary-transform-cpu takes f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("arbitrary-transform-cpu takes a contiguous tensor");
        };
        let frame = 3 * h * w;
        let mut out = Vec::with_capacity(n * frame);
        for x in data[start..end].chunks_exact(frame) {
            out.extend(self.0.forward_frame(x, h, w));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}
