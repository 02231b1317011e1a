//! CPU kernels for the style networks, on contiguous f32 NCHW slices (one frame at a time).
//!
//! - [`Conv`]: reflect pad `k/2` (and an optional nearest x2 upsample, and the bottom/right pad to
//!   a multiple of 4 of the network input) folded into a tiled im2col, then `gemm`. Each tile of
//!   output rows packs its own patch matrix so that it stays in cache, and tiles run in parallel
//!   on the current rayon pool.
//! - [`norm_act`]: instance norm from one pass of f64 statistics, fused with the affine
//!   `gamma`/`beta`, the activation and the residual add.
//! - [`NetOp`]: the whole multistyle network as one Candle custom op.
//!
//! The arbitrary-style transform reuses [`Conv`] (with a bias) and [`norm_act`].

#![allow(unsafe_code)] // gemm takes raw pointers; each use carries a SAFETY note

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use crate::multistyle::{CpuLayers, MULTIPLE, MultiStyle};

pub(crate) use crate::multistyle::Activation;

/// Mirror index without repeating the edge: `-1 -> 1`, `n -> n - 2`. Needs `-n < i < 2n - 1`.
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r as usize
}

/// Bytes of patch matrix a tile aims for: comfortably inside a core's L2.
const TILE_BYTES: usize = 512 * 1024;

/// How an input plane is read: its real size, and the virtual size the conv sees before its own
/// reflect pad (twice the real size after a nearest x2 upsample, or the real size reflect-padded
/// bottom/right to a multiple of 4 for a network input).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputView {
    /// Real rows.
    pub(crate) h: usize,
    /// Real columns.
    pub(crate) w: usize,
    /// Nearest x2 upsample before the conv.
    pub(crate) upsample: bool,
    /// Reflect-pad bottom/right to this multiple first (1 = none).
    pub(crate) multiple: usize,
}

impl InputView {
    /// A plain `h x w` plane.
    pub(crate) fn plain(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            upsample: false,
            multiple: 1,
        }
    }

    fn virtual_size(&self) -> (usize, usize) {
        if self.upsample {
            (2 * self.h, 2 * self.w)
        } else {
            (
                self.h.next_multiple_of(self.multiple),
                self.w.next_multiple_of(self.multiple),
            )
        }
    }

    /// Real index for each padded virtual coordinate `0 .. virt + 2*pad`.
    fn map(&self, real: usize, virt: usize, pad: usize) -> Vec<usize> {
        (0..virt + 2 * pad)
            .map(|v| {
                let u = reflect(v as isize - pad as isize, virt);
                if self.upsample {
                    u / 2
                } else {
                    reflect(u as isize, real)
                }
            })
            .collect()
    }
}

/// A 2-D convolution with reflect padding `k/2` and optional bias.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    /// `[c_out][c_in * k * k]`, as in the checkpoint.
    pub(crate) weight: Vec<f32>,
    /// `[c_out]`, or empty for none.
    pub(crate) bias: Vec<f32>,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
}

/// Raw output pointer shared by tiles that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tiles write disjoint output ranges (distinct rows of every channel plane), and the
// buffer outlives the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the `Send` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Conv {
    /// Output size for an input view.
    pub(crate) fn output_size(&self, view: &InputView) -> (usize, usize) {
        let (vh, vw) = view.virtual_size();
        let pad = self.k / 2;
        let o = |n: usize| (n + 2 * pad - self.k) / self.stride + 1;
        (o(vh), o(vw))
    }

    /// Convolve `input` (`[c_in][h][w]` as `view` describes) into `out` (`[c_out][ho][wo]`,
    /// resized here). Returns `(ho, wo)` and, per output channel, the f64 sum and sum of squares
    /// (taken while each tile is in cache, for the instance norm that follows).
    pub(crate) fn forward(
        &self,
        input: &[f32],
        view: &InputView,
        out: &mut Vec<f32>,
    ) -> ((usize, usize), Vec<(f64, f64)>) {
        let (ho, wo) = self.output_size(view);
        let (vh, vw) = view.virtual_size();
        let pad = self.k / 2;
        let rows = view.map(view.h, vh, pad);
        let cols = view.map(view.w, vw, pad);
        let kk = self.c_in * self.k * self.k;
        let plane = ho * wo;
        // The gemm overwrites every element (it does not read dst): skip the zero-fill when the
        // buffer already has the size.
        if out.len() != self.c_out * plane {
            out.clear();
            out.resize(self.c_out * plane, 0.0);
        }
        let tile_rows = (TILE_BYTES / (kk * wo * 4)).clamp(1, ho);
        let tiles = ho.div_ceil(tile_rows);
        let dst = OutPtr(out.as_mut_ptr());
        let partial: Vec<Vec<(f64, f64)>> = (0..tiles)
            .into_par_iter()
            .map_init(Vec::new, |patches: &mut Vec<f32>, t| {
                let r0 = t * tile_rows;
                let r1 = (r0 + tile_rows).min(ho);
                let n = (r1 - r0) * wo;
                // Every element is written by `pack`: only grow, never zero-fill per tile.
                if patches.len() < kk * n {
                    patches.resize(kk * n, 0.0);
                }
                self.pack(input, view, &rows, &cols, r0, r1, wo, patches);
                // SAFETY: `dst.0 + r0*wo` plus channel strides of `plane` addresses columns
                // `r0*wo .. r1*wo` of each of the `c_out` planes: inside `out`, and disjoint
                // from every other tile. `weight` is `c_out x kk`, `patches` is `kk x n`.
                // Pixels are gemm's M (the long, vectorised side of its microkernel) and output
                // channels its N: with M = c_out = 32 an AVX-512 kernel would idle half its rows.
                unsafe {
                    gemm::gemm(
                        n,
                        self.c_out,
                        kk,
                        dst.get().add(r0 * wo),
                        plane as isize,
                        1,
                        false,
                        patches.as_ptr(),
                        n as isize,
                        1,
                        self.weight.as_ptr(),
                        kk as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                // Bias and statistics while the tile is hot.
                // SAFETY: the same disjoint range as the gemm above.
                (0..self.c_out)
                    .map(|c| {
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(dst.get().add(c * plane + r0 * wo), n)
                        };
                        if let Some(&b) = self.bias.get(c) {
                            row.iter_mut().for_each(|v| *v += b);
                        }
                        row_stats(row)
                    })
                    .collect()
            })
            .collect();
        let mut stats = vec![(0.0, 0.0); self.c_out];
        for tile in partial {
            for (acc, (s, q)) in stats.iter_mut().zip(tile) {
                acc.0 += s;
                acc.1 += q;
            }
        }
        ((ho, wo), stats)
    }

    /// im2col of output rows `r0..r1`: `patches[(ci*k + ky)*k + kx][(y - r0)*wo + x]`.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        input: &[f32],
        view: &InputView,
        rows: &[usize],
        cols: &[usize],
        r0: usize,
        r1: usize,
        wo: usize,
        patches: &mut [f32],
    ) {
        let (k, s) = (self.k, self.stride);
        let n = (r1 - r0) * wo;
        let plane_in = view.h * view.w;
        for ci in 0..self.c_in {
            let src_plane = &input[ci * plane_in..(ci + 1) * plane_in];
            for ky in 0..k {
                for kx in 0..k {
                    let row_idx = (ci * k + ky) * k + kx;
                    let dst = &mut patches[row_idx * n..(row_idx + 1) * n];
                    // Columns read for this kx: `cols[x*s + kx]`. Inside `lo..hi` they follow a
                    // simple rule (contiguous, every other, or each twice) that is copied without
                    // the table; only the few edge columns go through it.
                    let colmap = |x: usize| cols[x * s + kx];
                    let pad = k / 2;
                    let (vw, w) = (cols.len() - 2 * pad, view.w);
                    let (lo, hi) = if view.upsample {
                        // virtual x + kx - pad in [0, vw)
                        (
                            pad.saturating_sub(kx),
                            (vw + pad).saturating_sub(kx).min(wo),
                        )
                    } else {
                        // real x*s + kx - pad in [0, w)
                        let lo = pad.saturating_sub(kx).div_ceil(s);
                        let hi = ((w + pad).saturating_sub(kx)).div_ceil(s).min(wo);
                        (lo, hi)
                    };
                    let hi = hi.max(lo);
                    for (ty, y) in (r0..r1).enumerate() {
                        let src = &src_plane[rows[y * s + ky] * w..][..w];
                        let d = &mut dst[ty * wo..(ty + 1) * wo];
                        for x in (0..lo).chain(hi..wo) {
                            d[x] = src[colmap(x)];
                        }
                        if hi == lo {
                            continue;
                        }
                        let mid = &mut d[lo..hi];
                        let first = colmap(lo);
                        if view.upsample {
                            // s == 1: real = (x + kx - pad) / 2, so each source value twice.
                            let odd = (lo + kx - pad) % 2 == 1;
                            let (head, rest) = if odd {
                                mid[0] = src[first];
                                (1, &mut mid[1..])
                            } else {
                                (0, &mut mid[..])
                            };
                            let base = first + head;
                            let mut pairs = rest.chunks_exact_mut(2);
                            for (pair, &v) in (&mut pairs).zip(&src[base..]) {
                                pair[0] = v;
                                pair[1] = v;
                            }
                            let tail = pairs.into_remainder();
                            if let Some(t) = tail.first_mut() {
                                *t = src[colmap(hi - 1)];
                            }
                        } else if s == 1 {
                            mid.copy_from_slice(&src[first..first + mid.len()]);
                        } else {
                            for (v, &x) in mid.iter_mut().zip(src[first..].iter().step_by(s)) {
                                *v = x;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// f64 sum and sum of squares of a row, accumulated in f32 blocks for speed and folded into f64
/// often enough that rounding stays far below the norm's needs.
fn row_stats(row: &[f32]) -> (f64, f64) {
    let mut sum = 0.0f64;
    let mut sq = 0.0f64;
    for chunk in row.chunks(256) {
        let mut s = [0.0f32; 8];
        let mut q = [0.0f32; 8];
        let mut it = chunk.chunks_exact(8);
        for c in &mut it {
            for i in 0..8 {
                s[i] += c[i];
                q[i] += c[i] * c[i];
            }
        }
        for &v in it.remainder() {
            s[0] += v;
            q[0] += v * v;
        }
        sum += s.iter().map(|&v| f64::from(v)).sum::<f64>();
        sq += q.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (sum, sq)
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        weight: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        upsample: bool,
    ) -> Self {
        Self {
            conv: Conv {
                weight,
                bias: Vec::new(),
                c_in,
                c_out,
                k,
                stride,
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
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut view = InputView {
        h,
        w,
        upsample: false,
        multiple: MULTIPLE,
    };
    let mut first = true;
    for &(layer, act) in &layers.contract {
        let src: &[f32] = if first { x } else { &a };
        let (ho, wo) = layer.run(src, &view, act, None, &mut b);
        first = false;
        std::mem::swap(&mut a, &mut b);
        view = InputView::plain(ho, wo);
    }
    let mut t = Vec::new();
    for [(l0, a0), (l1, a1)] in &layers.res {
        let (ho, wo) = l0.run(&a, &view, *a0, None, &mut t);
        l1.run(&t, &InputView::plain(ho, wo), *a1, Some(&a), &mut b);
        std::mem::swap(&mut a, &mut b);
    }
    for &(layer, act) in &layers.expand {
        let v = InputView {
            upsample: layer.upsample,
            ..view
        };
        let (ho, wo) = layer.run(&a, &v, act, None, &mut b);
        std::mem::swap(&mut a, &mut b);
        view = InputView::plain(ho, wo);
    }
    crop(&a, 3, view.h, view.w, h, w)
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
