//! CPU kernels for the style networks, on contiguous f32 NCHW slices (one frame at a time).
//!
//! - [`Conv`]: reflect pad `k/2` (and an optional nearest x2 upsample, and the bottom/right pad to
//!   a multiple of 4 of the network input) folded into the packing, then `gemm`. A tile of output
//!   rows packs each input row it needs once per `(ci, kx)` and runs one gemm per `ky` (per output
//!   row for stride 2), reading the packed rows `ky` rows further down: `k` times less packing
//!   than a full im2col. Tiles run in parallel on the current rayon pool; scratch buffers stay
//!   with their thread between layers and frames.
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

    /// For a stride-2 conv: every row of every channel split into its even columns followed by
    /// its odd columns, so that strided reads become contiguous copies.
    fn stride_split(&self, input: &[f32], c_in: usize, out: &mut Vec<f32>) {
        let w = self.w;
        let half = w.div_ceil(2);
        out.resize(c_in * self.h * w, 0.0);
        out.par_chunks_mut(w)
            .zip(input[..c_in * self.h * w].par_chunks(w))
            .for_each(|(d, r)| {
                let (even, odd) = d.split_at_mut(half);
                for (e, v) in even.iter_mut().zip(r.iter().step_by(2)) {
                    *e = *v;
                }
                for (o, v) in odd.iter_mut().zip(r.iter().skip(1).step_by(2)) {
                    *o = *v;
                }
            });
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
    ///
    /// Stride 1 packs each input row once per `(ci, kx)` and runs one gemm per `ky` over the
    /// tile, reading the packed rows `ky` rows further down: `k` times less packing than a full
    /// im2col. Other strides pack the full patch matrix of the tile, from a copy of the input
    /// whose rows are split into even and odd columns so that every packed run is contiguous.
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
        let plane = ho * wo;
        // The first gemm of a tile overwrites its part of `out` (it does not read dst): skip
        // the zero-fill when the buffer already has the size.
        out.resize(self.c_out * plane, 0.0);
        let k = self.k;
        let ck = self.c_in * k;
        with_scratch(|split| {
            split.clear();
            if self.stride == 2 && !view.upsample {
                view.stride_split(input, self.c_in, split);
            }
            let s = self.stride;
            // Split rows (even columns, then odd) for stride 2, so that packing copies runs.
            let (source, halves) = if split.is_empty() {
                (input, false)
            } else {
                (&split[..], true)
            };
            // [ky][c_out][ci*k + kx]: the gemm's right-hand side for one ky.
            let weight: Vec<f32> = (0..k)
                .flat_map(|ky| {
                    (0..self.c_out).flat_map(move |co| {
                        (0..self.c_in).flat_map(move |ci| {
                            (0..k).map(move |kx| ((co * self.c_in + ci) * k + ky) * k + kx)
                        })
                    })
                })
                .map(|i| self.weight[i])
                .collect();
            // Packed rows of a tile of T output rows: (T - 1) * s + k; aim for T several times the
            // halo.
            let tile_rows = ((TILE_BYTES / (ck * wo * 4)).saturating_sub(k) / s).clamp(1, ho);
            let tiles = ho.div_ceil(tile_rows);
            let dst = OutPtr(out.as_mut_ptr());
            let ctx = PackContext {
                view,
                cols: &cols,
                wo,
            };
            let plane_in = view.h * view.w;
            let partial: Vec<Vec<(f64, f64)>> = (0..tiles)
                .into_par_iter()
                .map(|t| {
                    with_scratch(|buf| {
                        let r0 = t * tile_rows;
                        let r1 = (r0 + tile_rows).min(ho);
                        let n = (r1 - r0) * wo;
                        // Virtual input rows r0*s .. r0*s + v, packed as [ci*k + kx][row][x].
                        let v = (r1 - r0 - 1) * s + k;
                        grow(buf, ck * v * wo);
                        for ci in 0..self.c_in {
                            let src = &source[ci * plane_in..][..plane_in];
                            for kx in 0..k {
                                let j = ci * k + kx;
                                for dv in 0..v {
                                    let row = &src[rows[r0 * s + dv] * view.w..][..view.w];
                                    let d = &mut buf[(j * v + dv) * wo..][..wo];
                                    ctx.pack_row(d, row, kx, s, halves.then_some(row));
                                }
                            }
                        }
                        // Stride 1: one gemm per ky over the whole tile (pixel stride 1 holds across
                        // rows). Stride 2: one per output row and ky.
                        let (chunk_rows, chunks) = if s == 1 { (r1 - r0, 1) } else { (1, r1 - r0) };
                        for c in 0..chunks {
                            for ky in 0..k {
                                // SAFETY: `dst + (r0 + c)*wo` with channel stride `plane` addresses
                                // `chunk_rows*wo` pixels of each of the `c_out` planes, inside this
                                // tile's rows: inside `out` and disjoint from other tiles. The
                                // left-hand side reads `chunk_rows*wo` pixels of `ck` packed rows
                                // (stride `v*wo`) starting at packed row `c*s + ky`, inside `buf`
                                // (`ck * v * wo`); the right-hand side is the `ck x c_out` block of
                                // `weight` for this ky.
                                unsafe {
                                    gemm::gemm(
                                        chunk_rows * wo,
                                        self.c_out,
                                        ck,
                                        dst.get().add((r0 + c) * wo),
                                        plane as isize,
                                        1,
                                        ky > 0,
                                        buf.as_ptr().add((c * s + ky) * wo),
                                        (v * wo) as isize,
                                        1,
                                        weight.as_ptr().add(ky * self.c_out * ck),
                                        ck as isize,
                                        1,
                                        if ky > 0 { 1.0f32 } else { 0.0 },
                                        1.0f32,
                                        false,
                                        false,
                                        false,
                                        gemm::Parallelism::None,
                                    );
                                }
                            }
                        }
                        // Bias and statistics while the tile is hot.
                        (0..self.c_out)
                            .map(|c| {
                                // SAFETY: the same disjoint range the gemm wrote.
                                let row = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        dst.get().add(c * plane + r0 * wo),
                                        n,
                                    )
                                };
                                if let Some(&b) = self.bias.get(c) {
                                    row.iter_mut().for_each(|v| *v += b);
                                }
                                row_stats(row)
                            })
                            .collect::<Vec<_>>()
                    })
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
        })
    }
}

/// Grow a scratch buffer without zero-filling what is already there (packing writes it all).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// What packing one row needs.
struct PackContext<'a> {
    view: &'a InputView,
    cols: &'a [usize],
    wo: usize,
}

impl PackContext<'_> {
    /// Fill `d` (`wo` values) with the input columns that kernel column `kx` reads, from real
    /// row `row` (`w` values; for stride 2, the row split into even then odd columns).
    fn pack_row(&self, d: &mut [f32], row: &[f32], kx: usize, s: usize, split: Option<&[f32]>) {
        let (view, cols, wo) = (self.view, self.cols, self.wo);
        let pad = (cols.len() - view.virtual_size().1) / 2;
        let w = view.w;
        let colmap = |x: usize| cols[x * s + kx];
        // Inside `lo..hi` the columns follow a simple rule (contiguous, every other, or each
        // twice) and are copied without the table; only the few edge columns use it.
        let (lo, hi) = if view.upsample {
            (
                pad.saturating_sub(kx),
                (2 * w + pad).saturating_sub(kx).min(wo),
            )
        } else {
            (
                pad.saturating_sub(kx).div_ceil(s),
                (w + pad).saturating_sub(kx).div_ceil(s).min(wo),
            )
        };
        let hi = hi.max(lo);
        let edge = |x: usize| -> f32 {
            let c = colmap(x);
            match split {
                // even column c is at c/2, odd at ceil(w/2) + c/2
                Some(sp) if s == 2 => {
                    sp[if c % 2 == 0 {
                        c / 2
                    } else {
                        w.div_ceil(2) + c / 2
                    }]
                }
                _ => row[c],
            }
        };
        for x in (0..lo).chain(hi..wo) {
            d[x] = edge(x);
        }
        if hi == lo {
            return;
        }
        let mid = &mut d[lo..hi];
        let first = colmap(lo);
        if view.upsample {
            // real = (x + kx - pad) / 2: each source value twice
            let odd = (lo + kx - pad) % 2 == 1;
            let (head, rest) = if odd {
                mid[0] = row[first];
                (1, &mut mid[1..])
            } else {
                (0, &mut mid[..])
            };
            let mut pairs = rest.chunks_exact_mut(2);
            for (pair, &v) in (&mut pairs).zip(&row[first + head..]) {
                pair[0] = v;
                pair[1] = v;
            }
            if let Some(t) = pairs.into_remainder().first_mut() {
                *t = row[colmap(hi - 1)];
            }
        } else if s == 1 {
            mid.copy_from_slice(&row[first..first + mid.len()]);
        } else if let Some(sp) = split.filter(|_| s == 2) {
            let start = if first % 2 == 0 {
                first / 2
            } else {
                w.div_ceil(2) + first / 2
            };
            mid.copy_from_slice(&sp[start..start + mid.len()]);
        } else {
            for (v, &x) in mid.iter_mut().zip(row[first..].iter().step_by(s)) {
                *v = x;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let n = 5;
        let got: Vec<usize> = (-4..9).map(|i| reflect(i, n)).collect();
        assert_eq!(got, [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn row_stats_match_a_plain_f64_sum() {
        // Lengths around the 8-lane and 256-value blocks, values of mixed sign and size.
        for len in [0, 1, 7, 8, 9, 255, 256, 257, 1000] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            let sq: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let (s, q) = row_stats(&row);
            assert!(
                (s - sum).abs() <= 1e-3 * (1.0 + sum.abs()),
                "{len}: {s} vs {sum}"
            );
            assert!((q - sq).abs() <= 1e-5 * (1.0 + sq), "{len}: {q} vs {sq}");
        }
    }

    /// `pack_row` against the definition: value `x` of the packed row is the input column that
    /// kernel column `kx` reads for output column `x`, through the padding table.
    #[test]
    fn pack_row_reads_the_columns_the_padding_table_names() {
        for w in [5, 6, 9, 12] {
            for (k, stride, upsample, multiple) in [
                (3, 1, false, 1),
                (9, 1, false, 4),
                (3, 2, false, 1),
                (3, 2, false, 4),
                (3, 1, true, 1),
            ] {
                let view = InputView {
                    h: 1,
                    w,
                    upsample,
                    multiple,
                };
                let pad = k / 2;
                let (_, vw) = view.virtual_size();
                let cols = view.map(w, vw, pad);
                let wo = (vw + 2 * pad - k) / stride + 1;
                let row: Vec<f32> = (0..w).map(|i| 10.0 + i as f32).collect();
                let mut halves = Vec::new();
                if stride == 2 {
                    view.stride_split(&row, 1, &mut halves);
                }
                let ctx = PackContext {
                    view: &view,
                    cols: &cols,
                    wo,
                };
                for kx in 0..k {
                    let want: Vec<f32> = (0..wo).map(|x| row[cols[x * stride + kx]]).collect();
                    let mut got = vec![f32::NAN; wo];
                    ctx.pack_row(&mut got, &row, kx, stride, None);
                    assert_eq!(got, want, "w {w} k {k} s {stride} up {upsample} kx {kx}");
                    if stride == 2 {
                        let mut got = vec![f32::NAN; wo];
                        ctx.pack_row(&mut got, &row, kx, stride, Some(&halves));
                        assert_eq!(got, want, "split rows: w {w} k {k} kx {kx}");
                    }
                }
            }
        }
    }
}
