//! Where the warped previous output may be trusted: forward-backward flow consistency and motion
//! boundaries (the tests of Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos",
//! 2016), a photometric weight, and the locally unchanged pixels that are copied as they are.

use rayon::prelude::*;

use super::flow::Flow;
use super::plane::Plane;

/// The constant of the motion-boundary test (see [`consistency`]).
pub const BOUNDARY_SLACK: f32 = 0.05;

/// 1 where `backward` (current to previous frame) is consistent with `forward` (previous to
/// current) and away from motion boundaries, 0 elsewhere and where the flow leaves the frame.
///
/// Consistency: `|b(x) + f(x + b(x))|^2 <= 0.01 (|b|^2 + |f|^2) + 0.5`; boundary:
/// `|grad b_u|^2 + |grad b_v|^2 <= 0.01 |b|^2 + 0.05` (pixels of the flow's resolution). The
/// boundary test's constant is Ruder's 0.002 raised to [`BOUNDARY_SLACK`]: DIS without
/// variational refinement leaves sub-pixel noise in the flow of flat areas, whose gradient alone
/// failed the original test on still backgrounds.
pub fn consistency(backward: &Flow, forward: &Flow) -> Plane {
    let (w, h) = (backward.width(), backward.height());
    let mut mask = Plane::zeros(w, h);
    mask.data
        .par_chunks_mut(w)
        .enumerate()
        .for_each(|(y, row)| {
            let yi = y as isize;
            for (x, m) in row.iter_mut().enumerate() {
                let i = y * w + x;
                let (bu, bv) = (backward.u.data[i], backward.v.data[i]);
                let (px, py) = (x as f32 + bu, y as f32 + bv);
                if px < -0.5 || py < -0.5 || px > w as f32 - 0.5 || py > h as f32 - 0.5 {
                    continue;
                }
                let (fu, fv) = (forward.u.sample(px, py), forward.v.sample(px, py));
                let sum = (bu + fu).powi(2) + (bv + fv).powi(2);
                let mags = bu * bu + bv * bv + fu * fu + fv * fv;
                if sum > 0.01 * mags + 0.5 {
                    continue;
                }
                let xi = x as isize;
                let d = |p: &Plane| {
                    let gx = 0.5 * (p.at(xi + 1, yi) - p.at(xi - 1, yi));
                    let gy = 0.5 * (p.at(xi, yi + 1) - p.at(xi, yi - 1));
                    gx * gx + gy * gy
                };
                if d(&backward.u) + d(&backward.v) > 0.01 * (bu * bu + bv * bv) + BOUNDARY_SLACK {
                    continue;
                }
                *m = 1.0;
            }
        });
    mask
}

/// The photometric weight of a luma difference `d`: `exp(-(d / sigma)^2)`.
#[inline]
pub fn photometric(d: f32, sigma: f32) -> f32 {
    let q = d / sigma;
    // `exp(-0)` is exactly 1: the call is skipped on the many pixels of a still picture that
    // decode to the same luma frame after frame.
    if q == 0.0 {
        return 1.0;
    }
    (-q.powi(2)).exp()
}

/// 1 where no pixel of the 3x3 neighbourhood changed by `threshold` or more between `previous`
/// and `current` (same size), else 0.
pub fn unchanged(current: &Plane, previous: &Plane, threshold: f32) -> Vec<bool> {
    let w = current.width;
    let mut out = vec![false; w * current.height];
    out.par_chunks_mut(w.max(1)).enumerate().for_each_init(
        || vec![0.0f32; w],
        |scratch, (y, row)| unchanged_row(current, previous, threshold, y, row, scratch),
    );
    out
}

/// Row `y` of [`unchanged`] into `out` (`width` long), with `scratch` (`width` long) to work in:
/// the blend takes the test a row at a time, where it needs it, instead of a full-size mask.
pub fn unchanged_row(
    current: &Plane,
    previous: &Plane,
    threshold: f32,
    y: usize,
    out: &mut [bool],
    scratch: &mut [f32],
) {
    let (w, h) = (current.width, current.height);
    // Separable maximum of the absolute change: down the (up to) three rows, then along the row.
    // A maximum does not depend on the order it is taken in.
    let column_max = &mut scratch[..w];
    column_max.fill(0.0);
    for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
        let c = &current.data[yy * w..][..w];
        let p = &previous.data[yy * w..][..w];
        for ((m, a), b) in column_max.iter_mut().zip(c).zip(p) {
            *m = m.max((a - b).abs());
        }
    }
    let out = &mut out[..w];
    let edge = |x: usize| {
        let (lo, hi) = (x.saturating_sub(1), (x + 1).min(w - 1));
        column_max[lo..=hi].iter().fold(0.0f32, |m, &v| m.max(v)) < threshold
    };
    out[0] = edge(0);
    if w > 2 {
        for (o, c) in out[1..w - 1].iter_mut().zip(column_max.windows(3)) {
            *o = c[0].max(c[1]).max(c[2]) < threshold;
        }
    }
    out[w - 1] = edge(w - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uniform_shift_is_consistent_and_an_inconsistent_one_is_not() {
        let mut b = Flow::zeros(32, 24);
        let mut f = Flow::zeros(32, 24);
        b.u.data.iter_mut().for_each(|v| *v = 2.0);
        f.u.data.iter_mut().for_each(|v| *v = -2.0);
        let m = consistency(&b, &f);
        assert_eq!(m.at(10, 10), 1.0);
        // Pixels whose match lies outside the previous frame are not reliable.
        assert_eq!(m.at(31, 10), 0.0);
        f.u.data.iter_mut().for_each(|v| *v = 2.0);
        assert_eq!(consistency(&b, &f).at(10, 10), 0.0);
    }

    #[test]
    fn a_motion_boundary_is_unreliable() {
        let mut b = Flow::zeros(32, 24);
        let mut f = Flow::zeros(32, 24);
        for y in 0..24 {
            for x in 16..32 {
                b.u.data[y * 32 + x] = -3.0;
                f.u.data[y * 32 + x] = 3.0;
            }
        }
        let m = consistency(&b, &f);
        assert_eq!(m.at(16, 10), 0.0);
        assert_eq!(m.at(8, 10), 1.0);
    }

    #[test]
    fn unchanged_looks_at_the_neighbourhood() {
        let a = Plane::zeros(8, 8);
        let mut b = Plane::zeros(8, 8);
        b.data[3 * 8 + 3] = 10.0;
        let u = unchanged(&a, &b, 3.0);
        assert!(!u[2 * 8 + 2] && !u[4 * 8 + 4] && !u[3 * 8 + 3]);
        assert!(u[6 * 8 + 6] && u[0]);
        assert!((photometric(0.0, 10.0) - 1.0).abs() < 1e-6);
    }
}
