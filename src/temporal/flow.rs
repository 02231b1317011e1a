//! Dense optical flow by Dense Inverse Search (Kroeger, Timofte, Dai, Van Gool, "Fast Optical
//! Flow using Dense Inverse Search", ECCV 2016), without its variational refinement.
//!
//! Coarse to fine over an image pyramid: at each level, square patches on a regular grid of the
//! reference image `I0` each find their displacement in `I1` by inverse-compositional
//! Gauss-Newton (the patch's gradients and Hessian are computed once, from `I0`; each
//! iteration only samples `I1`), starting from the coarser level's flow. Patches are
//! mean-normalised, so a change of brightness does not move them. A patch whose search ends
//! farther than a patch size from where it started, or with a larger error than it started with,
//! keeps its start. Densification: every pixel takes the mean of the displacements of the
//! patches that cover it, each weighted by `1 / max(1, |I1(x + u) - I0(x)|)`, so the patch that
//! explains the pixel best wins at motion boundaries.
//!
//! Work is split over rows of patches and rows of pixels with rayon; every sum is taken in a
//! fixed order, so the result does not depend on the number of threads.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::plane::Plane;

/// A displacement field: pixel `(x, y)` of the reference image is at `(x + u, y + v)` in the
/// other image.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// Horizontal displacement, pixels.
    pub u: Plane,
    /// Vertical displacement, pixels.
    pub v: Plane,
}

impl Flow {
    /// A zero field.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            u: Plane::zeros(width, height),
            v: Plane::zeros(width, height),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.u.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.u.height
    }

    /// The field resampled (bilinearly) to `width` x `height`, displacements scaled with it.
    pub fn resize(&self, width: usize, height: usize) -> Flow {
        let sx = self.width() as f32 / width as f32;
        let sy = self.height() as f32 / height as f32;
        let mut out = Flow::zeros(width, height);
        out.u
            .data
            .par_chunks_mut(width)
            .zip(out.v.data.par_chunks_mut(width))
            .enumerate()
            .for_each(|(y, (ru, rv))| {
                let fy = (y as f32 + 0.5) * sy - 0.5;
                for x in 0..width {
                    let fx = (x as f32 + 0.5) * sx - 0.5;
                    ru[x] = self.u.sample(fx, fy) / sx;
                    rv[x] = self.v.sample(fx, fy) / sy;
                }
            });
        out
    }
}

/// How hard the search works. [`DisParams::default`] is the run-time setting; [`DisParams::fine`]
/// the stronger one the benchmark measures against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DisParams {
    /// Side of the square patches, pixels.
    pub patch: usize,
    /// Distance between patch origins, pixels (less than `patch`: patches overlap).
    pub stride: usize,
    /// Gauss-Newton iterations per patch and level, at most.
    pub iterations: usize,
    /// Pyramid levels skipped at the fine end: 0 ends at the input's resolution, 1 at half of it
    /// (the flow is then upsampled).
    pub finest_level: usize,
}

impl Default for DisParams {
    fn default() -> Self {
        Self {
            patch: 8,
            stride: 4,
            iterations: 12,
            finest_level: 0,
        }
    }
}

impl DisParams {
    /// A slower, more accurate setting: larger overlapping patches, more iterations.
    pub fn fine() -> Self {
        Self {
            patch: 12,
            stride: 3,
            iterations: 32,
            finest_level: 0,
        }
    }
}

/// Weight of the prior towards a patch's start, per pixel of the patch (luma levels squared per
/// pixel of displacement squared).
const PRIOR: f32 = 4.0;

/// The flow from `i0` to `i1` (same size): `i0(x) ~ i1(x + flow(x))`.
pub fn dis_flow(i0: &Plane, i1: &Plane, params: &DisParams) -> Flow {
    let patch = params.patch.max(2);
    let stride = params.stride.clamp(1, patch);
    // The coarsest level still holds two patches in each direction.
    let mut pyramid0 = vec![i0.clone()];
    let mut pyramid1 = vec![i1.clone()];
    loop {
        let last = &pyramid0[pyramid0.len() - 1];
        if last.width / 2 < 2 * patch || last.height / 2 < 2 * patch || pyramid0.len() > 8 {
            break;
        }
        let next0 = last.halve();
        let next1 = pyramid1[pyramid1.len() - 1].halve();
        pyramid0.push(next0);
        pyramid1.push(next1);
    }
    let finest = params.finest_level.min(pyramid0.len() - 1);
    let mut flow: Option<Flow> = None;
    for level in (finest..pyramid0.len()).rev() {
        let (a, b) = (&pyramid0[level], &pyramid1[level]);
        let init = match flow {
            Some(f) => f.resize(a.width, a.height),
            None => Flow::zeros(a.width, a.height),
        };
        if a.width < patch || a.height < patch {
            flow = Some(init);
            continue;
        }
        flow = Some(level_flow(a, b, &init, patch, stride, params.iterations));
    }
    let flow = flow.unwrap_or_else(|| Flow::zeros(i0.width, i0.height));
    if flow.width() == i0.width && flow.height() == i0.height {
        flow
    } else {
        flow.resize(i0.width, i0.height)
    }
}

/// Origins of patches of side `patch` every `stride` pixels along a side of `len`, the last one
/// flush with the end.
fn origins(len: usize, patch: usize, stride: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..=len - patch).step_by(stride).collect();
    if o.last() != Some(&(len - patch)) {
        o.push(len - patch);
    }
    o
}

/// One level: patch search from `init`, then densification.
fn level_flow(
    i0: &Plane,
    i1: &Plane,
    init: &Flow,
    patch: usize,
    stride: usize,
    iters: usize,
) -> Flow {
    let (gx, gy) = i0.gradients();
    let xs = origins(i0.width, patch, stride);
    let ys = origins(i0.height, patch, stride);
    // Each patch's displacement, row by row of patches.
    let sparse: Vec<Vec<(f32, f32)>> = ys
        .par_iter()
        .map(|&oy| {
            xs.iter()
                .map(|&ox| {
                    let c = (ox + patch / 2, oy + patch / 2);
                    let start = (
                        init.u.data[c.1 * i0.width + c.0],
                        init.v.data[c.1 * i0.width + c.0],
                    );
                    search_patch(i0, i1, &gx, &gy, ox, oy, patch, start, iters)
                })
                .collect()
        })
        .collect();

    // Densify: each pixel row gathers the patches that cover it, in a fixed order.
    let width = i0.width;
    let mut out = Flow::zeros(width, i0.height);
    out.u
        .data
        .par_chunks_mut(width)
        .zip(out.v.data.par_chunks_mut(width))
        .enumerate()
        .for_each(|(y, (ru, rv))| {
            let mut su = vec![0.0f32; width];
            let mut sv = vec![0.0f32; width];
            let mut sw = vec![0.0f32; width];
            for (py, &oy) in ys.iter().enumerate() {
                if y < oy || y >= oy + patch {
                    continue;
                }
                for (px, &ox) in xs.iter().enumerate() {
                    let (u, v) = sparse[py][px];
                    let taps = i1.row_taps(y as f32 + v);
                    for x in ox..ox + patch {
                        let diff = i1.sample_in_row(taps, x as f32 + u) - i0.data[y * width + x];
                        let w = 1.0 / diff.abs().max(1.0);
                        su[x] += w * u;
                        sv[x] += w * v;
                        sw[x] += w;
                    }
                }
            }
            for x in 0..width {
                if sw[x] > 0.0 {
                    ru[x] = su[x] / sw[x];
                    rv[x] = sv[x] / sw[x];
                }
            }
        });
    out
}

/// Inverse-compositional Gauss-Newton for the patch at `(ox, oy)`, from `start`.
#[allow(clippy::too_many_arguments)]
fn search_patch(
    i0: &Plane,
    i1: &Plane,
    gx: &Plane,
    gy: &Plane,
    ox: usize,
    oy: usize,
    patch: usize,
    start: (f32, f32),
    iters: usize,
) -> (f32, f32) {
    let n = patch * patch;
    let mut template = Vec::with_capacity(n);
    let mut tgx = Vec::with_capacity(n);
    let mut tgy = Vec::with_capacity(n);
    for y in oy..oy + patch {
        let row = y * i0.width;
        template.extend_from_slice(&i0.data[row + ox..row + ox + patch]);
        tgx.extend_from_slice(&gx.data[row + ox..row + ox + patch]);
        tgy.extend_from_slice(&gy.data[row + ox..row + ox + patch]);
    }
    let inv_n = 1.0 / n as f32;
    let centre = |v: &mut Vec<f32>| {
        let m = v.iter().sum::<f32>() * inv_n;
        v.iter_mut().for_each(|x| *x -= m);
    };
    centre(&mut template);
    centre(&mut tgx);
    centre(&mut tgy);
    let (mut hxx, mut hxy, mut hyy) = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..n {
        hxx += tgx[i] * tgx[i];
        hxy += tgx[i] * tgy[i];
        hyy += tgy[i] * tgy[i];
    }
    // A prior towards the start (the coarser level's flow), `PRIOR * n * |u - start|^2` in the
    // energy: negligible for a textured patch (gradients of tens of luma levels per pixel),
    // it keeps a flat or noisy patch, which has nothing to match, from wandering on noise.
    let reg = PRIOR * n as f32;
    let (hxx, hyy) = (hxx + reg, hyy + reg);
    let det = hxx * hyy - hxy * hxy;
    if det <= f32::EPSILON {
        return start;
    }

    let mut warped = vec![0.0f32; n];
    // Mean-normalised squared error of the patch displaced by (u, v); fills `warped` with the
    // centred residuals.
    let residual = |u: f32, v: f32, warped: &mut [f32]| -> f32 {
        let mut k = 0;
        for y in oy..oy + patch {
            let taps = i1.row_taps(y as f32 + v);
            for x in ox..ox + patch {
                warped[k] = i1.sample_in_row(taps, x as f32 + u);
                k += 1;
            }
        }
        let m = warped.iter().sum::<f32>() * inv_n;
        let mut ssd = 0.0;
        for i in 0..n {
            warped[i] = warped[i] - m - template[i];
            ssd += warped[i] * warped[i];
        }
        ssd
    };

    let (mut u, mut v) = start;
    let start_err = residual(u, v, &mut warped);
    let mut err = start_err;
    for _ in 0..iters {
        let (mut bx, mut by) = (reg * (u - start.0), reg * (v - start.1));
        for i in 0..n {
            bx += tgx[i] * warped[i];
            by += tgy[i] * warped[i];
        }
        let du = (hyy * bx - hxy * by) / det;
        let dv = (hxx * by - hxy * bx) / det;
        u -= du;
        v -= dv;
        err = residual(u, v, &mut warped);
        if du * du + dv * dv < 1e-4 {
            break;
        }
    }
    let moved = ((u - start.0).powi(2) + (v - start.1).powi(2)).sqrt();
    if moved > patch as f32 || err > start_err || !u.is_finite() || !v.is_finite() {
        start
    } else {
        (u, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth random-looking texture, `f(x, y)` defined for real coordinates.
    fn texture(x: f32, y: f32) -> f32 {
        128.0
            + 40.0 * (0.31 * x + 0.17 * y).sin()
            + 30.0 * (0.23 * y - 0.11 * x).cos()
            + 20.0 * (0.57 * x).sin() * (0.41 * y).cos()
    }

    fn image(w: usize, h: usize, dx: f32, dy: f32) -> Plane {
        let mut p = Plane::zeros(w, h);
        for y in 0..h {
            for x in 0..w {
                p.data[y * w + x] = texture(x as f32 - dx, y as f32 - dy);
            }
        }
        p
    }

    /// Mean displacement over the inner part of the image (the borders see content leave).
    fn inner_mean(f: &Flow, margin: usize) -> (f32, f32) {
        let (mut su, mut sv, mut n) = (0.0, 0.0, 0.0);
        for y in margin..f.height() - margin {
            for x in margin..f.width() - margin {
                su += f.u.data[y * f.width() + x];
                sv += f.v.data[y * f.width() + x];
                n += 1.0;
            }
        }
        (su / n, sv / n)
    }

    #[test]
    fn recovers_a_known_translation() {
        for (dx, dy) in [(3.0, -2.0), (0.4, 0.7), (-7.5, 4.25)] {
            // i1 is i0 moved by (dx, dy): i0(x) = i1(x + (dx, dy)).
            let i0 = image(160, 96, 0.0, 0.0);
            let i1 = image(160, 96, dx, dy);
            let flow = dis_flow(&i0, &i1, &DisParams::default());
            let (u, v) = inner_mean(&flow, 16);
            assert!(
                (u - dx).abs() < 0.15 && (v - dy).abs() < 0.15,
                "shift ({dx}, {dy}) measured as ({u:.3}, {v:.3})"
            );
        }
    }

    #[test]
    fn identical_images_give_zero_flow() {
        let i0 = image(96, 64, 0.0, 0.0);
        let flow = dis_flow(&i0, &i0, &DisParams::default());
        let max = flow
            .u
            .data
            .iter()
            .chain(&flow.v.data)
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max < 1e-3, "largest displacement {max}");
    }

    #[test]
    fn a_brightness_change_does_not_move_patches() {
        let i0 = image(128, 80, 0.0, 0.0);
        let mut i1 = image(128, 80, 2.0, 1.0);
        i1.data.iter_mut().for_each(|v| *v += 12.0);
        let flow = dis_flow(&i0, &i1, &DisParams::default());
        let (u, v) = inner_mean(&flow, 16);
        assert!((u - 2.0).abs() < 0.2 && (v - 1.0).abs() < 0.2, "({u}, {v})");
    }
}
