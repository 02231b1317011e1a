//! The measures of temporal stability and of what stabilisation costs the style, as the
//! benchmark (`scripts/bench-temporal.sh`) and the pipeline tests compute them.
//!
//! Frames are 8-bit luma planes (`Vec<u8>`, row-major) of one size, or packed RGB24 where
//! colour matters. The flicker is defined on 320x180 luma: [`small_luma`] makes it.

use super::flow::Flow;
use super::plane::Plane;
use super::reliability::consistency;

/// Pixels whose source luma changed by less than this between two frames are static.
pub const STATIC_CHANGE: f32 = 2.0;
/// Pairs with fewer static pixels than this fraction are left out of the flicker.
pub const MIN_STATIC_FRACTION: f64 = 0.05;

/// BT.601 luma of packed RGB24 `w` x `h`, area-averaged down to `ow` x `oh` and rounded to 8 bits.
pub fn small_luma(rgb: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let luma = Plane::luma(rgb, w, h);
    let mut out = Vec::with_capacity(ow * oh);
    for oy in 0..oh {
        let (y0, y1) = (oy * h / oh, ((oy + 1) * h / oh).max(oy * h / oh + 1));
        for ox in 0..ow {
            let (x0, x1) = (ox * w / ow, ((ox + 1) * w / ow).max(ox * w / ow + 1));
            let mut sum = 0.0f32;
            for y in y0..y1.min(h) {
                for x in x0..x1.min(w) {
                    sum += luma.data[y * w + x];
                }
            }
            let n = ((y1.min(h) - y0) * (x1.min(w) - x0)).max(1) as f32;
            out.push((sum / n).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// The flicker score of each consecutive pair `(i, i + 1)` of `output`: the mean absolute change
/// of the output's luma over the pixels whose `source` luma changed by less than
/// [`STATIC_CHANGE`]; `None` for pairs with under [`MIN_STATIC_FRACTION`] static pixels.
pub fn flicker_pairs(source: &[Vec<u8>], output: &[Vec<u8>]) -> Vec<Option<f64>> {
    assert_eq!(
        source.len(),
        output.len(),
        "as many output frames as source frames"
    );
    (1..source.len())
        .map(|t| {
            let (s0, s1, o0, o1) = (&source[t - 1], &source[t], &output[t - 1], &output[t]);
            let (mut sum, mut n) = (0.0f64, 0usize);
            for i in 0..s1.len() {
                if (f32::from(s1[i]) - f32::from(s0[i])).abs() < STATIC_CHANGE {
                    sum += (f64::from(o1[i]) - f64::from(o0[i])).abs();
                    n += 1;
                }
            }
            (n as f64 >= MIN_STATIC_FRACTION * s1.len() as f64).then(|| sum / n as f64)
        })
        .collect()
}

/// The mean of the scored pairs (0 when none is).
pub fn mean_scored(pairs: &[Option<f64>]) -> f64 {
    let scored: Vec<f64> = pairs.iter().flatten().copied().collect();
    if scored.is_empty() {
        0.0
    } else {
        scored.iter().sum::<f64>() / scored.len() as f64
    }
}

/// The flicker of `output` against its `source` (320x180 luma frames): the mean pair score.
pub fn flicker(source: &[Vec<u8>], output: &[Vec<u8>]) -> f64 {
    mean_scored(&flicker_pairs(source, output))
}

/// Warping error of one pair (Lai et al. 2018): the mean squared luma difference between
/// `current` and `previous` warped to it by `backward` (current to previous), over the pixels
/// where `backward` and `forward` agree (not occluded). Returns the error and the mask.
pub fn warping_error(
    previous: &Plane,
    current: &Plane,
    backward: &Flow,
    forward: &Flow,
) -> (f64, Plane) {
    let mask = consistency(backward, forward);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for y in 0..current.height {
        for x in 0..current.width {
            let i = y * current.width + x;
            if mask.data[i] < 0.5 {
                continue;
            }
            let warped =
                previous.sample(x as f32 + backward.u.data[i], y as f32 + backward.v.data[i]);
            sum += f64::from(current.data[i] - warped).powi(2);
            n += 1;
        }
    }
    (if n == 0 { 0.0 } else { sum / n as f64 }, mask)
}

/// Mean gradient magnitude of a luma plane: how much stroke texture a frame holds.
pub fn stroke_texture(luma: &Plane) -> f64 {
    let (gx, gy) = luma.gradients();
    gx.data
        .iter()
        .zip(&gy.data)
        .map(|(a, b)| f64::from((a * a + b * b).sqrt()))
        .sum::<f64>()
        / gx.data.len().max(1) as f64
}

/// Mean HSV saturation (0..1) of packed RGB24.
pub fn saturation(rgb: &[u8]) -> f64 {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for p in rgb.chunks_exact(3) {
        let max = p.iter().copied().max().unwrap_or(0);
        let min = p.iter().copied().min().unwrap_or(0);
        if max > 0 {
            sum += f64::from(max - min) / f64::from(max);
        }
        n += 1;
    }
    sum / n.max(1) as f64
}

/// Mean squared error of two byte buffers.
pub fn mse(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// PSNR (dB) of a mean squared error over 8-bit values.
pub fn psnr(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// SSIM of two luma planes of one size, over 8x8 windows (stride 4), the mean of the windows.
pub fn ssim(a: &Plane, b: &Plane) -> f64 {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (w, h) = (a.width, a.height);
    let (mut total, mut windows) = (0.0f64, 0usize);
    let mut y = 0;
    while y + 8 <= h {
        let mut x = 0;
        while x + 8 <= w {
            let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for yy in y..y + 8 {
                for xx in x..x + 8 {
                    ma += f64::from(a.data[yy * w + xx]);
                    mb += f64::from(b.data[yy * w + xx]);
                }
            }
            ma /= 64.0;
            mb /= 64.0;
            for yy in y..y + 8 {
                for xx in x..x + 8 {
                    let da = f64::from(a.data[yy * w + xx]) - ma;
                    let db = f64::from(b.data[yy * w + xx]) - mb;
                    va += da * da;
                    vb += db * db;
                    cov += da * db;
                }
            }
            va /= 63.0;
            vb /= 63.0;
            cov /= 63.0;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
            x += 4;
        }
        y += 4;
    }
    if windows == 0 {
        1.0
    } else {
        total / windows as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flicker_counts_only_static_pixels() {
        let source = vec![vec![10u8; 100], vec![10u8; 100], vec![10u8; 100]];
        let mut output = vec![vec![50u8; 100], vec![54u8; 100], vec![54u8; 100]];
        assert_eq!(flicker_pairs(&source, &output), vec![Some(4.0), Some(0.0)]);
        assert_eq!(flicker(&source, &output), 2.0);
        // A pair whose source changed everywhere is skipped.
        let moving = vec![vec![10u8; 100], vec![90u8; 100]];
        output.truncate(2);
        assert_eq!(flicker_pairs(&moving, &output), vec![None]);
    }

    #[test]
    fn ssim_and_psnr_of_identical_frames() {
        let p = Plane {
            width: 16,
            height: 16,
            data: (0..256).map(|v| v as f32).collect(),
        };
        assert!((ssim(&p, &p) - 1.0).abs() < 1e-9);
        assert!(psnr(0.0).is_infinite());
        assert_eq!(small_luma(&[255u8; 4 * 4 * 3], 4, 4, 2, 2), vec![255u8; 4]);
    }
}
