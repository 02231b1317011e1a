//! CPU kernels for the style networks, on contiguous f32 NCHW slices (one frame at a time).
//!
//! # Layout
//!
//! - [`conv`]: [`Conv`], a conv layer ([`ConvSpec`]: channels, kernel, stride; reflect pad
//!   `kernel / 2`) read through an [`InputView`]. Its forward pass runs tiles of output rows in
//!   parallel on the current rayon pool: each tile gathers the input rows it reads once per
//!   `(ci, kx)`, with the reflect pad, the optional nearest x2 upsample and the bottom/right pad
//!   to a multiple of 4 of the network input folded into the gather, and runs one `gemm` per
//!   kernel row over them (`kernel` times less packing than a full im2col).
//! - here: [`norm_act`], instance norm from one pass of f64 statistics fused with the affine
//!   `gamma`/`beta`, the activation and the residual add; [`ConvLayer`] (conv + norm); [`NetOp`],
//!   the whole multistyle network as one Candle custom op; the per-thread scratch buffers, kept
//!   between layers and frames.
//!
//! The arbitrary-style transform reuses [`Conv`] (with a bias) and [`norm_act`].

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use crate::multistyle::{CpuLayers, MULTIPLE, MultiStyle};

mod conv;

pub(crate) use crate::multistyle::Activation;
pub(crate) use conv::{Conv, ConvSpec, InputView, reflect};

thread_local! {
    /// Scratch buffers kept per thread between layers and frames: the big activations would
    /// otherwise be mapped, zero-filled and faulted in again for every layer.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with a scratch buffer of this thread (any length, any content), then keep it.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    let r = f(&mut buf);
    SCRATCH.with(|s| s.borrow_mut().push(buf));
    r
}

/// Instance norm in place, fused with the affine, the activation and a residual add:
/// `x = act((x - mean) / sqrt(var + eps) * gamma + beta) + residual`, per channel plane, from
/// the statistics [`Conv::forward`] returned.
pub(crate) fn norm_act(
    x: &mut [f32],
    plane: usize,
    stats: &[(f64, f64)],
    gamma: &[f32],
    beta: &[f32],
    activation: Activation,
    residual: Option<&[f32]>,
) {
    let n = plane as f64;
    let coeffs: Vec<(f32, f32)> = stats
        .iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&(s, q), (&g, &b))| {
            let mean = s / n;
            let var = (q / n - mean * mean).max(0.0);
            let scale = f64::from(g) / (var + crate::multistyle::EPS).sqrt();
            (scale as f32, (f64::from(b) - mean * scale) as f32)
        })
        .collect();
    let apply = |c: usize, off: usize, xs: &mut [f32]| {
        let (a, b) = coeffs[c];
        let res = residual.map(|r| &r[c * plane + off..c * plane + off + xs.len()]);
        match (activation, res) {
            (Activation::None, None) => xs.iter_mut().for_each(|v| *v = *v * a + b),
            (Activation::None, Some(r)) => {
                xs.iter_mut().zip(r).for_each(|(v, r)| *v = *v * a + b + r)
            }
            (Activation::Relu, None) => xs.iter_mut().for_each(|v| *v = (*v * a + b).max(0.0)),
            (Activation::Relu, Some(r)) => xs
                .iter_mut()
                .zip(r)
                .for_each(|(v, r)| *v = (*v * a + b).max(0.0) + r),
            (Activation::Sigmoid, r) => {
                for (i, v) in xs.iter_mut().enumerate() {
                    let y = 1.0 / (1.0 + (-(*v * a + b)).exp());
                    *v = y + r.map_or(0.0, |r| r[i]);
                }
            }
        }
    };
    // Pieces of a channel plane, so that layers with few channels still split across threads.
    const PIECE: usize = 16 * 1024;
    x.par_chunks_mut(plane).enumerate().for_each(|(c, xs)| {
        xs.par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(i, part)| apply(c, i * PIECE, part));
    });
}

/// A conv layer of the multistyle network as host data.
#[derive(Debug)]
pub(crate) struct ConvLayer {
    pub(crate) conv: Conv,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) upsample: bool,
}

impl ConvLayer {
    pub(crate) fn new(
        weight: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        spec: ConvSpec,
        upsample: bool,
    ) -> Self {
        Self {
            conv: Conv {
                weight,
                bias: Vec::new(),
                spec,
            },
            gamma,
            beta,
            upsample,
        }
    }

    /// Conv + norm + activation (+ residual) of one frame; returns the new `(h, w)`.
    fn run(
        &self,
        input: &[f32],
        view: &InputView,
        activation: Activation,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) -> (usize, usize) {
        let ((ho, wo), stats) = self.conv.forward(input, view, out);
        norm_act(
            out,
            ho * wo,
            &stats,
            &self.gamma,
            &self.beta,
            activation,
            residual,
        );
        (ho, wo)
    }
}

/// One frame through the network: `x` is `[3][h][w]`, the result `[3][h][w]` (padded to a
/// multiple of 4 inside, cropped back).
fn forward_frame(layers: &CpuLayers<'_>, x: &[f32], h: usize, w: usize) -> Vec<f32> {
    with_scratch(|a| with_scratch(|b| with_scratch(|t| forward_in(layers, x, h, w, a, b, t))))
}

/// [`forward_frame`] with its three activation buffers.
fn forward_in(
    layers: &CpuLayers<'_>,
    x: &[f32],
    h: usize,
    w: usize,
    a: &mut Vec<f32>,
    b: &mut Vec<f32>,
    t: &mut Vec<f32>,
) -> Vec<f32> {
    let mut view = InputView {
        h,
        w,
        upsample: false,
        multiple: MULTIPLE,
    };
    let mut first = true;
    for &(layer, act) in &layers.contract {
        let src: &[f32] = if first { x } else { a };
        let (ho, wo) = layer.run(src, &view, act, None, b);
        first = false;
        std::mem::swap(a, b);
        view = InputView::plain(ho, wo);
    }
    for [(l0, a0), (l1, a1)] in &layers.res {
        let (ho, wo) = l0.run(a, &view, *a0, None, t);
        l1.run(t, &InputView::plain(ho, wo), *a1, Some(a), b);
        std::mem::swap(a, b);
    }
    for &(layer, act) in &layers.expand {
        let v = InputView {
            upsample: layer.upsample,
            ..view
        };
        let (ho, wo) = layer.run(a, &v, act, None, b);
        std::mem::swap(a, b);
        view = InputView::plain(ho, wo);
    }
    crop(a, 3, view.h, view.w, h, w)
}

/// Keep the top-left `h x w` of each of `c` planes of `ph x pw`.
fn crop(x: &[f32], c: usize, ph: usize, pw: usize, h: usize, w: usize) -> Vec<f32> {
    if (ph, pw) == (h, w) {
        return x.to_vec();
    }
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            let start = ch * ph * pw + y * pw;
            out.extend_from_slice(&x[start..start + w]);
        }
    }
    out
}

/// The multistyle network as a Candle custom op: `[N, 3, h, w]` f32 in, the same shape out.
pub(crate) struct NetOp<'a> {
    pub(crate) net: &'a MultiStyle,
}

impl CustomOp1 for NetOp<'_> {
    fn name(&self) -> &'static str {
        "multistyle-cpu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != 3 {
            candle_core::bail!("multistyle takes 3 channels, got {c}");
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("multistyle-cpu takes f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("multistyle-cpu takes a contiguous tensor");
        };
        let Some(layers) = self.net.cpu_layers() else {
            candle_core::bail!("multistyle-cpu: weights are not on the host");
        };
        let data = &data[start..end];
        let frame = 3 * h * w;
        let mut out = Vec::with_capacity(n * frame);
        for f in 0..n {
            out.extend(forward_frame(
                &layers,
                &data[f * frame..(f + 1) * frame],
                h,
                w,
            ));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}
