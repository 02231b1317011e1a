//! One conv layer on the CPU: [`ConvSpec`] (its shape), [`InputView`] (how it reads its input),
//! [`Conv::forward`] in tiles of output rows ([`ConvPass::tile`] draws the packing), with the
//! reflect pad, the nearest x2 upsample and the pad to a multiple folded into the gather.

#![allow(unsafe_code)] // gemm takes raw pointers; each use carries a SAFETY note

use std::ops::Range;

use rayon::prelude::*;

use super::with_scratch;

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

/// Where column `column` of a `width`-wide row lands once the row is split into its even columns
/// followed by its odd ones ([`InputView::stride_split`]).
fn split_index(column: usize, width: usize) -> usize {
    if column.is_multiple_of(2) {
        column / 2
    } else {
        width.div_ceil(2) + column / 2
    }
}

/// Grow a scratch buffer without zero-filling what is already there (packing writes it all).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// Bytes of packed rows a tile aims for: comfortably inside a core's L2.
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
    /// its odd columns ([`split_index`]), so that strided reads become contiguous copies.
    fn stride_split(&self, input: &[f32], c_in: usize, out: &mut Vec<f32>) {
        let w = self.w;
        let half = w.div_ceil(2);
        out.resize(c_in * self.h * w, 0.0);
        out.par_chunks_mut(w)
            .zip(input[..c_in * self.h * w].par_chunks(w))
            .for_each(|(split, row)| {
                let (even, odd) = split.split_at_mut(half);
                for (to, from) in even.iter_mut().zip(row.iter().step_by(2)) {
                    *to = *from;
                }
                for (to, from) in odd.iter_mut().zip(row.iter().skip(1).step_by(2)) {
                    *to = *from;
                }
            });
    }

    /// Rows and columns the conv sees before its own reflect pad.
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

    /// The padding table of one axis: the real index (`0 .. real`) for each padded virtual
    /// coordinate `0 .. virt + 2*pad`.
    fn padding_table(&self, real: usize, virt: usize, pad: usize) -> Vec<usize> {
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

/// The shape of a conv layer, as its checkpoint gives it (the conv's counterpart of candle's
/// `MBConvConfig`). The padding is always reflect `kernel / 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvSpec {
    /// Input channels.
    pub(crate) c_in: usize,
    /// Output channels.
    pub(crate) c_out: usize,
    /// Kernel height and width (odd).
    pub(crate) kernel: usize,
    /// Step between output pixels, in virtual input pixels (1 or 2).
    pub(crate) stride: usize,
}

impl ConvSpec {
    /// Reflect padding on each side.
    fn pad(&self) -> usize {
        self.kernel / 2
    }

    /// Packed rows per virtual input row, one per `(ci, kx)`: the depth of the gemm (its `K`).
    fn depth(&self) -> usize {
        self.c_in * self.kernel
    }

    /// Output length of an axis of `virtual_len` values (before the reflect pad).
    fn output_len(&self, virtual_len: usize) -> usize {
        (virtual_len + 2 * self.pad() - self.kernel) / self.stride + 1
    }

    /// Output `(rows, columns)` for an input view.
    fn output_size(&self, view: &InputView) -> (usize, usize) {
        let (virtual_h, virtual_w) = view.virtual_size();
        (self.output_len(virtual_h), self.output_len(virtual_w))
    }

    /// Output rows per tile: as many as keep a tile's packed rows (`(rows - 1) * stride + kernel`
    /// virtual rows of `depth x out_w` values) within [`TILE_BYTES`], at least 1, at most `out_h`.
    fn tile_rows(&self, out_h: usize, out_w: usize) -> usize {
        let packed_row_bytes = self.depth() * out_w * size_of::<f32>();
        let packed_rows = TILE_BYTES / packed_row_bytes;
        (packed_rows.saturating_sub(self.kernel) / self.stride).clamp(1, out_h)
    }
}

/// A 2-D convolution with reflect padding `kernel / 2` and optional bias.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    /// `[c_out][c_in][kernel][kernel]`, as in the checkpoint.
    pub(crate) weight: Vec<f32>,
    /// `[c_out]`, or empty for none.
    pub(crate) bias: Vec<f32>,
    pub(crate) spec: ConvSpec,
}

/// What [`Conv::forward`] derives from the layer's [`ConvSpec`] and the [`InputView`], once per
/// call.
#[derive(Debug)]
struct ConvGeometry<'a> {
    spec: ConvSpec,
    view: &'a InputView,
    /// Output rows.
    out_h: usize,
    /// Output columns.
    out_w: usize,
    /// Real input row for each padded virtual row (`0 .. virtual_h + 2 * pad`): the reflect pad,
    /// the upsample or the pad to a multiple, as one table.
    row_map: Vec<usize>,
    /// Real input column for each padded virtual column, likewise.
    col_map: Vec<usize>,
    /// Stride 2 without upsample: the input rows are split into even then odd columns first.
    split_rows: bool,
    /// Output rows per tile ([`ConvSpec::tile_rows`]); the last tile may have fewer.
    tile_rows: usize,
}

impl<'a> ConvGeometry<'a> {
    fn new(spec: ConvSpec, view: &'a InputView) -> Self {
        let (virtual_h, virtual_w) = view.virtual_size();
        let (out_h, out_w) = spec.output_size(view);
        Self {
            spec,
            view,
            out_h,
            out_w,
            row_map: view.padding_table(view.h, virtual_h, spec.pad()),
            col_map: view.padding_table(view.w, virtual_w, spec.pad()),
            split_rows: spec.stride == 2 && !view.upsample,
            tile_rows: spec.tile_rows(out_h, out_w),
        }
    }

    /// Values per output channel.
    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Number of tiles.
    fn tiles(&self) -> usize {
        self.out_h.div_ceil(self.tile_rows)
    }

    /// Output rows of tile `index`.
    fn tile(&self, index: usize) -> Range<usize> {
        let start = index * self.tile_rows;
        start..(start + self.tile_rows).min(self.out_h)
    }

    /// Virtual input rows that `out_rows` consecutive output rows read: the packed rows of a tile.
    fn packed_rows(&self, out_rows: usize) -> usize {
        (out_rows - 1) * self.spec.stride + self.spec.kernel
    }

    /// The gather of one packed row.
    fn packer(&self) -> RowPacker<'_> {
        RowPacker {
            view: self.view,
            col_map: &self.col_map,
            pad: self.spec.pad(),
            stride: self.spec.stride,
            split: self.split_rows,
            out_w: self.out_w,
        }
    }

    /// Gather the virtual input rows that output rows `rows` read from `source` (the input
    /// planes, split when [`Self::split_rows`]) into `packed`, as
    /// `[ci * kernel + kx][packed row][out_w]` ([`ConvPass::tile`] draws it). Returns the number
    /// of packed rows.
    fn pack(&self, source: &[f32], rows: &Range<usize>, packed: &mut Vec<f32>) -> usize {
        let ConvSpec {
            c_in,
            kernel,
            stride,
            ..
        } = self.spec;
        let (in_w, out_w) = (self.view.w, self.out_w);
        let in_plane = self.view.h * in_w;
        let packed_rows = self.packed_rows(rows.len());
        let block_len = packed_rows * out_w;
        let first_virtual_row = rows.start * stride;
        grow(packed, self.spec.depth() * block_len);
        let packer = self.packer();
        for ci in 0..c_in {
            let plane = &source[ci * in_plane..][..in_plane];
            for kx in 0..kernel {
                let block = &mut packed[(ci * kernel + kx) * block_len..][..block_len];
                for (virtual_row, packed_row) in
                    (first_virtual_row..).zip(block.chunks_exact_mut(out_w))
                {
                    let row = &plane[self.row_map[virtual_row] * in_w..][..in_w];
                    packer.pack_row(packed_row, row, kx);
                }
            }
        }
        packed_rows
    }
}

/// Raw output pointer shared by tiles that write disjoint rows.
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
    /// Convolve `input` (`[c_in][h][w]` as `view` describes) into `out` (`[c_out][out_h][out_w]`,
    /// resized here). Returns `(out_h, out_w)` and, per output channel, the f64 sum and sum of
    /// squares (taken while each tile is in cache, for the instance norm that follows).
    ///
    /// The output rows are cut into tiles that run in parallel; [`ConvPass::tile`] describes one.
    pub(crate) fn forward(
        &self,
        input: &[f32],
        view: &InputView,
        out: &mut Vec<f32>,
    ) -> ((usize, usize), Vec<(f64, f64)>) {
        let geometry = ConvGeometry::new(self.spec, view);
        let out_size = (geometry.out_h, geometry.out_w);
        // The first gemm of a tile overwrites its part of `out` (it does not read it): skip the
        // zero-fill when the buffer already has the size.
        out.resize(self.spec.c_out * geometry.out_plane(), 0.0);
        let out = OutPtr(out.as_mut_ptr());
        with_scratch(|split| {
            let source = if geometry.split_rows {
                view.stride_split(input, self.spec.c_in, split);
                &split[..]
            } else {
                input
            };
            let pass = ConvPass {
                weights: self.weights_by_kernel_row(),
                bias: &self.bias,
                source,
                out,
                geometry,
            };
            let per_tile: Vec<Vec<(f64, f64)>> = (0..pass.geometry.tiles())
                .into_par_iter()
                .map(|index| with_scratch(|packed| pass.tile(pass.geometry.tile(index), packed)))
                .collect();
            (out_size, sum_per_channel(self.spec.c_out, per_tile))
        })
    }

    /// The weight regrouped as the gemm's right-hand sides, `[ky][c_out][ci * kernel + kx]`: for
    /// each kernel row a `depth x c_out` matrix (from the checkpoint's `[c_out][ci][ky][kx]`).
    fn weights_by_kernel_row(&self) -> Vec<f32> {
        let ConvSpec {
            c_in,
            c_out,
            kernel,
            ..
        } = self.spec;
        let mut regrouped = Vec::with_capacity(self.weight.len());
        for ky in 0..kernel {
            // `co * c_in + ci` in order: the checkpoint's `kernel x kernel` filters in order.
            for filter in 0..c_out * c_in {
                regrouped
                    .extend_from_slice(&self.weight[(filter * kernel + ky) * kernel..][..kernel]);
            }
        }
        regrouped
    }
}

/// Per-channel sums of the tiles' `(sum, sum of squares)`.
fn sum_per_channel(channels: usize, per_tile: Vec<Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    let mut stats = vec![(0.0, 0.0); channels];
    for tile in per_tile {
        for (total, (sum, squares)) in stats.iter_mut().zip(tile) {
            total.0 += sum;
            total.1 += squares;
        }
    }
    stats
}

/// One [`Conv::forward`] call, as its tiles share it.
struct ConvPass<'a> {
    geometry: ConvGeometry<'a>,
    /// [`Conv::weights_by_kernel_row`].
    weights: Vec<f32>,
    /// `[c_out]`, or empty for none.
    bias: &'a [f32],
    /// The input planes `[c_in][h][w]`, each row split into even then odd columns when
    /// `geometry.split_rows`.
    source: &'a [f32],
    /// The output `[c_out][out_h][out_w]`: each tile writes its own rows of every plane.
    out: OutPtr,
}

impl ConvPass<'_> {
    /// Output rows `rows` of every output channel, with `packed` as scratch: gather the input
    /// they read, multiply it with the weights, then add the bias and take each channel's sum and
    /// sum of squares while the tile is in cache (returned per output channel).
    ///
    /// # Packing: one gemm per kernel row, the pixels as `M`
    ///
    /// `T` output rows read `V = (T - 1) * stride + kernel` virtual input rows (virtual: after the
    /// upsample or the pad to a multiple, and the conv's reflect pad). Each of them is gathered
    /// once per `(ci, kx)` into a packed row of `out_w` values: value `x` is the input column that
    /// kernel column `kx` reads for output column `x`. The padding tables give the real row and
    /// column of each virtual one, so padding and upsampling cost no more than the gather:
    ///
    /// ```text
    ///   packed: depth = c_in * kernel blocks of V rows x out_w values
    ///
    ///                     x = 0 1 2 ... out_w-1
    ///   block 0          [ virtual row 0     ]  plane ci, row row_map[first * stride + dv],
    ///   (ci 0, kx 0)     [ virtual row 1     ]  columns col_map[x * stride + kx]
    ///                    [ ...               ]
    ///                    [ virtual row V-1   ]
    ///   block 1          [ ...               ]  (ci 0, kx 1)
    ///   ...
    ///   block depth-1    [ ...               ]  (ci c_in-1, kx kernel-1)
    /// ```
    ///
    /// Output row `r` of the tile, kernel row `ky`, reads packed row `r * stride + ky` of every
    /// block, so each kernel row is one matrix product over the whole tile:
    ///
    /// ```text
    ///   out[pixels x c_out]  (+)=  packed[pixels x depth]  x  weights[ky][depth x c_out]
    ///        M x N                   M x K: column j is block j from row ky on
    /// ```
    ///
    /// With stride 1, output row `r + 1` starts `out_w` values after row `r` in every block, so
    /// the pixels of the whole tile are evenly spaced and one gemm per `ky` covers it
    /// (`M = T * out_w`: `kernel` gemms, `kernel` times less packing than a full im2col). With
    /// stride 2 the next output row starts two packed rows further: one gemm per output row and
    /// `ky` (`M = out_w`). The first kernel row overwrites the output, the others add to it.
    ///
    /// # Stride 2: even/odd split rows
    ///
    /// Output column `x` reads virtual column `2x + kx - pad`: every other column. The input rows
    /// are first split into their even columns followed by their odd ones
    /// ([`InputView::stride_split`]), so that inside the row (away from the padded edges) a packed
    /// row is one contiguous copy from the half that `kx - pad` picks:
    ///
    /// ```text
    ///   input row   a0 a1 a2 a3 a4 a5 a6
    ///   split row   a0 a2 a4 a6 | a1 a3 a5
    ///               even half     odd half
    /// ```
    fn tile(&self, rows: Range<usize>, packed: &mut Vec<f32>) -> Vec<(f64, f64)> {
        let packed_rows = self.geometry.pack(self.source, &rows, packed);
        self.multiply(&rows, packed, packed_rows);
        self.bias_and_stats(&rows)
    }

    /// The gemms of a tile (see [`Self::tile`]): `out (+)= packed x weights[ky]` for each `ky`.
    fn multiply(&self, rows: &Range<usize>, packed: &[f32], packed_rows: usize) {
        let ConvSpec {
            c_out,
            kernel,
            stride,
            ..
        } = self.geometry.spec;
        let (out_w, depth) = (self.geometry.out_w, self.geometry.spec.depth());
        let packed = &packed[..depth * packed_rows * out_w];
        let weights_per_row = depth * c_out;
        // Stride 1: one gemm per ky over the whole tile; stride 2: one per output row and ky.
        let (rows_per_gemm, gemms) = if stride == 1 {
            (rows.len(), 1)
        } else {
            (1, rows.len())
        };
        for gemm_index in 0..gemms {
            let first_row = gemm_index * rows_per_gemm;
            for ky in 0..kernel {
                let product = PatchGemm {
                    pixels: rows_per_gemm * out_w,
                    channels: c_out,
                    depth,
                    out: self.out,
                    first_pixel: (rows.start + first_row) * out_w,
                    out_stride: self.geometry.out_plane(),
                    accumulate: ky > 0,
                    patches: &packed[(first_row * stride + ky) * out_w..],
                    patch_stride: packed_rows * out_w,
                    weights: &self.weights[ky * weights_per_row..][..weights_per_row],
                };
                // SAFETY: the product writes `rows_per_gemm * out_w` pixels from output row
                // `rows.start + first_row` on, in each of the `c_out` planes: inside `out`
                // (`c_out * out_plane` values, resized by `forward`), inside this tile's rows, so
                // no other tile touches them.
                unsafe { product.run() };
            }
        }
    }

    /// Add the bias to the tile's rows of every output plane and return each plane's
    /// `(sum, sum of squares)` over them.
    fn bias_and_stats(&self, rows: &Range<usize>) -> Vec<(f64, f64)> {
        let (plane, out_w) = (self.geometry.out_plane(), self.geometry.out_w);
        (0..self.geometry.spec.c_out)
            .map(|channel| {
                // SAFETY: this tile's rows of plane `channel`: inside `out`, the same range the
                // gemms of this tile wrote, and no other tile's.
                let values = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.out.get().add(channel * plane + rows.start * out_w),
                        rows.len() * out_w,
                    )
                };
                if let Some(&bias) = self.bias.get(channel) {
                    values.iter_mut().for_each(|v| *v += bias);
                }
                row_stats(values)
            })
            .collect()
    }
}

/// One call of [`gemm::gemm`] with its arguments named: `out (+)= patches x weights`, an
/// `M x K` by `K x N` product with M = `pixels`, N = `channels`, K = `depth`. In all three
/// matrices a row is one step (a pixel, or a `(ci, kx)` for the weights) and a column is a plane
/// or block `*_stride` values long.
struct PatchGemm<'a> {
    /// M: output pixels, consecutive in every output plane.
    pixels: usize,
    /// N: output channels.
    channels: usize,
    /// K: packed rows per pixel, one per `(ci, kx)`.
    depth: usize,
    /// The output buffer; this product writes `pixels` values from `first_pixel` on in each of
    /// `channels` planes `out_stride` apart.
    out: OutPtr,
    first_pixel: usize,
    out_stride: usize,
    /// Add to what `out` holds (for every kernel row after the first) instead of overwriting it.
    accumulate: bool,
    /// The left-hand side: `depth` packed blocks `patch_stride` apart, `pixels` values read from
    /// the start of each.
    patches: &'a [f32],
    patch_stride: usize,
    /// The right-hand side: `channels` columns of `depth` values each.
    weights: &'a [f32],
}

impl PatchGemm<'_> {
    /// Run the product.
    ///
    /// # Safety
    ///
    /// `out + first_pixel` must be valid for writes of `pixels` values in each of `channels`
    /// planes `out_stride` apart, and nothing else may access those values during the call.
    unsafe fn run(&self) {
        // The slices cover everything gemm reads from them.
        assert!(
            self.depth > 0
                && self.patches.len() >= (self.depth - 1) * self.patch_stride + self.pixels
        );
        assert!(self.weights.len() >= self.depth * self.channels);
        // SAFETY: `out` as the caller promises; the left- and right-hand sides read inside the
        // slices, as asserted above.
        unsafe {
            gemm::gemm(
                self.pixels,
                self.channels,
                self.depth,
                self.out.get().add(self.first_pixel),
                self.out_stride as isize, // dst column stride: one plane per channel
                1,                        // dst row stride: the pixels are consecutive
                self.accumulate,          // read dst
                self.patches.as_ptr(),
                self.patch_stride as isize, // lhs column stride: one packed block per (ci, kx)
                1,                          // lhs row stride
                self.weights.as_ptr(),
                self.depth as isize, // rhs column stride: one `depth` run per output channel
                1,                   // rhs row stride
                if self.accumulate { 1.0 } else { 0.0 }, // alpha: factor of dst
                1.0,                 // beta: factor of lhs x rhs
                false,               // no conjugation (real numbers)
                false,
                false,
                gemm::Parallelism::None, // the tiles are the parallelism
            );
        }
    }
}

/// The gather of packed rows: for one input row and one kernel column `kx`, the `out_w` values
/// that kernel column reads for each output column, through the padding table.
struct RowPacker<'a> {
    view: &'a InputView,
    /// Real input column for each padded virtual column ([`ConvGeometry::col_map`]).
    col_map: &'a [usize],
    /// The conv's reflect pad.
    pad: usize,
    stride: usize,
    /// Rows come split into even then odd columns ([`InputView::stride_split`]; stride 2).
    split: bool,
    out_w: usize,
}

impl RowPacker<'_> {
    /// Fill `packed` (`out_w` values) with `row[col_map[x * stride + kx]]` for each output
    /// column `x`; `row` is a real input row (`w` values), split when [`Self::split`].
    ///
    /// Inside [`Self::direct_span`] the columns follow a simple rule (contiguous, every other
    /// one, or each twice) and are copied without the table; only the few edge columns use it.
    fn pack_row(&self, packed: &mut [f32], row: &[f32], kx: usize) {
        let direct = self.direct_span(kx);
        for x in (0..direct.start).chain(direct.end..self.out_w) {
            packed[x] = self.read(row, self.column(x, kx));
        }
        if direct.is_empty() {
            return;
        }
        let first = self.column(direct.start, kx);
        let last = self.column(direct.end - 1, kx);
        let span = &mut packed[direct.clone()];
        if self.view.upsample {
            // Output column x reads real column (x + kx - pad) / 2: each value twice, the first
            // once when the span starts on its second copy.
            let starts_on_second_copy = (direct.start + kx - self.pad) % 2 == 1;
            let (singles, rest) = if starts_on_second_copy {
                span[0] = row[first];
                (1, &mut span[1..])
            } else {
                (0, &mut span[..])
            };
            let mut pairs = rest.chunks_exact_mut(2);
            for (pair, &value) in (&mut pairs).zip(&row[first + singles..]) {
                pair[0] = value;
                pair[1] = value;
            }
            if let Some(tail) = pairs.into_remainder().first_mut() {
                *tail = row[last];
            }
        } else if self.stride == 1 {
            span.copy_from_slice(&row[first..first + span.len()]);
        } else if self.split {
            let start = split_index(first, self.view.w);
            span.copy_from_slice(&row[start..start + span.len()]);
        } else {
            for (value, &source) in span
                .iter_mut()
                .zip(row[first..].iter().step_by(self.stride))
            {
                *value = source;
            }
        }
    }

    /// The output columns whose input column is inside the real row (no padding): the real
    /// column is `x * stride + kx - pad`, or `(x + kx - pad) / 2` after an upsample.
    fn direct_span(&self, kx: usize) -> Range<usize> {
        let (pad, stride, w) = (self.pad, self.stride, self.view.w);
        let (start, end) = if self.view.upsample {
            (
                pad.saturating_sub(kx),
                (2 * w + pad).saturating_sub(kx).min(self.out_w),
            )
        } else {
            (
                pad.saturating_sub(kx).div_ceil(stride),
                (w + pad)
                    .saturating_sub(kx)
                    .div_ceil(stride)
                    .min(self.out_w),
            )
        };
        start..end.max(start)
    }

    /// The real column that kernel column `kx` reads for output column `x`.
    fn column(&self, x: usize, kx: usize) -> usize {
        self.col_map[x * self.stride + kx]
    }

    /// Real column `column` of `row`, wherever the split put it.
    fn read(&self, row: &[f32], column: usize) -> f32 {
        if self.split {
            row[split_index(column, self.view.w)]
        } else {
            row[column]
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

    /// The layer shapes the packing tests run through: `(kernel, stride, upsample, multiple)`.
    const PACKINGS: [(usize, usize, bool, usize); 5] = [
        (3, 1, false, 1),
        (9, 1, false, 4),
        (3, 2, false, 1),
        (3, 2, false, 4),
        (3, 1, true, 1),
    ];

    fn spec(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            c_in,
            c_out,
            kernel,
            stride,
        }
    }

    fn view(h: usize, w: usize, upsample: bool, multiple: usize) -> InputView {
        InputView {
            h,
            w,
            upsample,
            multiple,
        }
    }

    /// Distinct values, so that a value read from the wrong place shows.
    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|i| 10.0 + i as f32).collect()
    }

    #[test]
    fn padding_table_reflects_then_pads_or_upsamples() {
        // 5 real columns, reflect pad 1.
        assert_eq!(
            view(1, 5, false, 1).padding_table(5, 5, 1),
            [1, 0, 1, 2, 3, 4, 3]
        );
        // Padded to 8 first (5 6 7 reflect to 3 2 1), then the reflect pad of 1.
        assert_eq!(
            view(1, 5, false, 4).padding_table(5, 8, 1),
            [1, 0, 1, 2, 3, 4, 3, 2, 1, 2]
        );
        // Upsampled to 6 (each column twice), then the reflect pad of 1.
        assert_eq!(
            view(1, 3, true, 1).padding_table(3, 6, 1),
            [0, 0, 0, 1, 1, 2, 2, 2]
        );
    }

    #[test]
    fn split_index_finds_each_column_in_the_split_row() {
        for w in [1, 2, 5, 6] {
            let row = ramp(w);
            let mut split = Vec::new();
            view(1, w, false, 1).stride_split(&row, 1, &mut split);
            for (column, &value) in row.iter().enumerate() {
                assert_eq!(
                    split[split_index(column, w)],
                    value,
                    "w {w} column {column}"
                );
            }
        }
    }

    #[test]
    fn output_size_follows_the_conv_arithmetic() {
        // Reflect pad k/2 keeps the size at stride 1 and halves it (rounding up) at stride 2.
        assert_eq!(
            spec(3, 8, 9, 1).output_size(&view(7, 10, false, 1)),
            (7, 10)
        );
        assert_eq!(spec(3, 8, 3, 2).output_size(&view(7, 10, false, 1)), (4, 5));
        // The pad to a multiple of 4 and the upsample come first.
        assert_eq!(
            spec(3, 8, 9, 1).output_size(&view(7, 10, false, 4)),
            (8, 12)
        );
        assert_eq!(
            spec(3, 8, 3, 1).output_size(&view(7, 10, true, 1)),
            (14, 20)
        );
    }

    #[test]
    fn tiles_cover_the_output_rows_within_the_budget() {
        for (conv, out_h, out_w) in [
            (spec(3, 32, 9, 1), 360, 640),
            (spec(32, 32, 3, 2), 180, 320),
            (spec(32, 32, 3, 1), 90, 160),
            (spec(64, 8, 9, 1), 7, 4000),
            (spec(3, 3, 3, 1), 2, 2),
        ] {
            let view = InputView::plain(out_h * conv.stride, out_w * conv.stride);
            let geometry = ConvGeometry::new(conv, &view);
            assert_eq!((geometry.out_h, geometry.out_w), (out_h, out_w));
            let rows: Vec<Range<usize>> = (0..geometry.tiles()).map(|t| geometry.tile(t)).collect();
            // In order, without gaps or overlaps, from the first output row to the last.
            assert_eq!(rows.first().map(|r| r.start), Some(0));
            assert_eq!(rows.last().map(|r| r.end), Some(out_h));
            assert!(rows.windows(2).all(|pair| pair[0].end == pair[1].start));
            assert!(rows.iter().all(|r| !r.is_empty()));
            // A tile of several rows keeps its packed rows within the budget.
            let packed_bytes = |r: &Range<usize>| {
                geometry.packed_rows(r.len()) * conv.depth() * out_w * size_of::<f32>()
            };
            for r in &rows {
                assert!(
                    r.len() == 1 || packed_bytes(r) <= TILE_BYTES,
                    "{conv:?} {r:?}"
                );
            }
        }
    }

    #[test]
    fn weights_by_kernel_row_regroup_the_checkpoint_layout() {
        let conv = Conv {
            weight: ramp(4 * 3 * 5 * 5),
            bias: Vec::new(),
            spec: spec(3, 4, 5, 1),
        };
        let regrouped = conv.weights_by_kernel_row();
        assert_eq!(regrouped.len(), conv.weight.len());
        let (depth, c_out) = (conv.spec.depth(), conv.spec.c_out);
        for ky in 0..5 {
            for co in 0..c_out {
                for ci in 0..3 {
                    for kx in 0..5 {
                        assert_eq!(
                            regrouped[(ky * c_out + co) * depth + ci * 5 + kx],
                            conv.weight[((co * 3 + ci) * 5 + ky) * 5 + kx]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn direct_span_needs_no_padding_table() {
        for w in [5, 6, 9, 12] {
            for (kernel, stride, upsample, multiple) in PACKINGS {
                let view = view(1, w, upsample, multiple);
                let geometry = ConvGeometry::new(spec(1, 1, kernel, stride), &view);
                let packer = geometry.packer();
                let pad = kernel / 2;
                for kx in 0..kernel {
                    let span = packer.direct_span(kx);
                    assert!(span.end <= geometry.out_w);
                    for x in span {
                        let virtual_column = x * stride + kx - pad;
                        let real = if upsample {
                            virtual_column / 2
                        } else {
                            virtual_column
                        };
                        assert!(real < w, "w {w} k {kernel} s {stride} kx {kx} x {x}");
                        assert_eq!(packer.column(x, kx), real);
                    }
                }
            }
        }
    }

    /// `pack_row` against the definition: value `x` of the packed row is the input column that
    /// kernel column `kx` reads for output column `x`, through the padding table.
    #[test]
    fn pack_row_reads_the_columns_the_padding_table_names() {
        for w in [5, 6, 9, 12] {
            for (k, stride, upsample, multiple) in PACKINGS {
                let view = view(1, w, upsample, multiple);
                let geometry = ConvGeometry::new(spec(1, 1, k, stride), &view);
                let cols = &geometry.col_map;
                let wo = geometry.out_w;
                let row = ramp(w);
                let mut halves = Vec::new();
                view.stride_split(&row, 1, &mut halves);
                let plain = RowPacker {
                    split: false,
                    ..geometry.packer()
                };
                let split = RowPacker {
                    split: true,
                    ..geometry.packer()
                };
                for kx in 0..k {
                    let want: Vec<f32> = (0..wo).map(|x| row[cols[x * stride + kx]]).collect();
                    let mut got = vec![f32::NAN; wo];
                    plain.pack_row(&mut got, &row, kx);
                    assert_eq!(got, want, "w {w} k {k} s {stride} up {upsample} kx {kx}");
                    if stride == 2 {
                        let mut got = vec![f32::NAN; wo];
                        split.pack_row(&mut got, &halves, kx);
                        assert_eq!(got, want, "split rows: w {w} k {k} kx {kx}");
                    }
                }
            }
        }
    }

    /// `pack` against the definition: packed row `dv` of block `(ci, kx)` holds, at `x`, plane
    /// `ci` of the input at the tile's virtual row `dv` and the column kernel column `kx` reads.
    #[test]
    fn pack_lays_out_blocks_of_virtual_rows() {
        let (c_in, h, w) = (2, 6, 7);
        let input = ramp(c_in * h * w);
        for (kernel, stride, upsample, multiple) in PACKINGS {
            let view = view(h, w, upsample, multiple);
            let geometry = ConvGeometry::new(spec(c_in, 1, kernel, stride), &view);
            let mut source = Vec::new();
            if geometry.split_rows {
                view.stride_split(&input, c_in, &mut source);
            } else {
                source.clone_from(&input);
            }
            let out_w = geometry.out_w;
            for rows in [0..1, 1..3, 0..geometry.out_h] {
                let mut packed = vec![f32::NAN; 3];
                let packed_rows = geometry.pack(&source, &rows, &mut packed);
                assert_eq!(packed_rows, (rows.len() - 1) * stride + kernel);
                for ci in 0..c_in {
                    for kx in 0..kernel {
                        for dv in 0..packed_rows {
                            let y = geometry.row_map[rows.start * stride + dv];
                            for x in 0..out_w {
                                let want =
                                    input[(ci * h + y) * w + geometry.col_map[x * stride + kx]];
                                let got =
                                    packed[((ci * kernel + kx) * packed_rows + dv) * out_w + x];
                                assert_eq!(
                                    got, want,
                                    "k {kernel} s {stride} up {upsample} ci {ci} kx {kx} dv {dv} x {x}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The convolution by its definition, one output value at a time, without padding tables:
    /// the virtual input (upsampled, or reflect-padded to the multiple), reflect-padded by
    /// `kernel / 2`, convolved.
    fn direct_conv(conv: &Conv, input: &[f32], view: &InputView) -> Vec<f32> {
        let ConvSpec {
            c_in,
            c_out,
            kernel,
            stride,
        } = conv.spec;
        let (virtual_h, virtual_w) = view.virtual_size();
        let (out_h, out_w) = conv.spec.output_size(view);
        let real = |v: usize, n: usize| {
            if view.upsample {
                v / 2
            } else {
                reflect(v as isize, n)
            }
        };
        let mut out = Vec::with_capacity(c_out * out_h * out_w);
        for co in 0..c_out {
            for y in 0..out_h {
                for x in 0..out_w {
                    let mut sum = f64::from(conv.bias.get(co).copied().unwrap_or(0.0));
                    for ci in 0..c_in {
                        for ky in 0..kernel {
                            for kx in 0..kernel {
                                let pad = (kernel / 2) as isize;
                                let vy = reflect((y * stride + ky) as isize - pad, virtual_h);
                                let vx = reflect((x * stride + kx) as isize - pad, virtual_w);
                                let value = input
                                    [(ci * view.h + real(vy, view.h)) * view.w + real(vx, view.w)];
                                let weight =
                                    conv.weight[((co * c_in + ci) * kernel + ky) * kernel + kx];
                                sum += f64::from(value) * f64::from(weight);
                            }
                        }
                    }
                    out.push(sum as f32);
                }
            }
        }
        out
    }

    /// The whole forward pass (packing, gemm per kernel row, bias, statistics) against
    /// [`direct_conv`], on layer shapes of both networks; the last two have several tiles.
    #[test]
    fn forward_matches_the_direct_convolution() {
        for (conv_spec, view, bias) in [
            (spec(3, 4, 9, 1), view(7, 9, false, 4), false),
            (spec(3, 5, 3, 2), view(7, 9, false, 1), true),
            (spec(4, 3, 3, 2), view(6, 10, false, 4), false),
            (spec(2, 3, 3, 1), view(4, 5, true, 1), true),
            (spec(32, 5, 3, 1), view(10, 200, false, 1), true),
            (spec(32, 5, 3, 2), view(10, 400, false, 1), false),
        ] {
            let conv = Conv {
                weight: (0..conv_spec.c_out * conv_spec.depth() * conv_spec.kernel)
                    .map(|i| ((i * 29 % 53) as f32 - 26.0) / 100.0)
                    .collect(),
                bias: if bias {
                    (0..conv_spec.c_out).map(|c| c as f32 - 1.5).collect()
                } else {
                    Vec::new()
                },
                spec: conv_spec,
            };
            let input: Vec<f32> = (0..conv_spec.c_in * view.h * view.w)
                .map(|i| ((i * 17 % 31) as f32 - 15.0) / 8.0)
                .collect();
            let geometry = ConvGeometry::new(conv_spec, &view);
            let want = direct_conv(&conv, &input, &view);
            let mut out = vec![f32::NAN; 5];
            let ((out_h, out_w), stats) = conv.forward(&input, &view, &mut out);
            assert_eq!((out_h, out_w), (geometry.out_h, geometry.out_w));
            assert_eq!(out.len(), want.len());
            for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{conv_spec:?} {view:?} value {i}: {got} vs {want}"
                );
            }
            // The statistics are those of the output planes.
            for (plane, &(sum, squares)) in out.chunks_exact(out_h * out_w).zip(&stats) {
                let want_sum: f64 = plane.iter().map(|&v| f64::from(v)).sum();
                let want_squares: f64 = plane.iter().map(|&v| f64::from(v).powi(2)).sum();
                assert!((sum - want_sum).abs() <= 1e-3 * (1.0 + want_sum.abs()));
                assert!((squares - want_squares).abs() <= 1e-4 * (1.0 + want_squares));
            }
            assert_eq!(stats.len(), conv_spec.c_out);
        }
    }

    #[test]
    fn sum_per_channel_adds_the_tiles() {
        let per_tile = vec![
            vec![(1.0, 2.0), (3.0, 4.0)],
            vec![(10.0, 20.0), (30.0, 40.0)],
        ];
        assert_eq!(sum_per_channel(2, per_tile), [(11.0, 22.0), (33.0, 44.0)]);
    }
}
