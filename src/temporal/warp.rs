//! Bicubic (Catmull-Rom) sampling of the previous output frame, packed RGB `f32`, where the flow
//! says a pixel came from.
//!
//! Bicubic rather than bilinear: the blend resamples its own output frame after frame, and
//! bilinear's low-pass would add up to a visible blur of the strokes on moving content. It is the
//! dearest step of the blend (16 taps of 3 channels a moved pixel), so the taps of a sample whose
//! 4x4 neighbourhood lies inside the frame are read as four runs of 12 values, without clamping
//! each index; only a sample at the border takes the clamped path. Both compute the same sums in
//! the same order, so the result does not depend on which one ran.

/// Catmull-Rom weights of the four taps around a sample at fraction `t` past the second.
#[inline]
fn cubic_weights(t: f32) -> [f32; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Bicubic sample of packed RGB `f32` (`w` x `h`) at `(x, y)`, which must lie inside the frame
/// (`0 <= x <= w - 1`, `0 <= y <= h - 1`); taps beyond an edge take the edge's value.
#[inline]
pub fn sample_rgb_cubic(rgb: &[f32], w: usize, h: usize, x: f32, y: f32) -> [f32; 3] {
    debug_assert!(x >= 0.0 && y >= 0.0, "({x}, {y}) is outside the frame");
    // The floor of a non-negative coordinate by a cast (`f32::floor` is a call on x86-64's
    // baseline).
    let (x0, y0) = (x as usize, y as usize);
    if !(x0 >= 1 && x0 + 2 < w && y0 >= 1 && y0 + 2 < h) {
        return sample_clamped(rgb, w, h, x, y);
    }
    let (wx, wy) = (cubic_weights(x - x0 as f32), cubic_weights(y - y0 as f32));
    let mut o = [0.0f32; 3];
    for (j, wyj) in wy.iter().enumerate() {
        let start = 3 * ((y0 + j - 1) * w + x0 - 1);
        let taps = &rgb[start..start + 12];
        let mut row = [0.0f32; 3];
        for (i, wxi) in wx.iter().enumerate() {
            let p = &taps[3 * i..3 * i + 3];
            row[0] += wxi * p[0];
            row[1] += wxi * p[1];
            row[2] += wxi * p[2];
        }
        for c in 0..3 {
            o[c] += wyj * row[c];
        }
    }
    o
}

/// [`sample_rgb_cubic`] with every tap's index clamped to the frame: the path of samples near
/// the border, and the reference the unclamped inside path must equal.
fn sample_clamped(rgb: &[f32], w: usize, h: usize, x: f32, y: f32) -> [f32; 3] {
    let (x0, y0) = (x as usize, y as usize);
    let (wx, wy) = (cubic_weights(x - x0 as f32), cubic_weights(y - y0 as f32));
    let (x0, y0) = (x0 as isize, y0 as isize);
    let mut o = [0.0f32; 3];
    for (j, wyj) in wy.iter().enumerate() {
        let yy = (y0 + j as isize - 1).clamp(0, h as isize - 1) as usize;
        let mut row = [0.0f32; 3];
        for (i, wxi) in wx.iter().enumerate() {
            let xx = (x0 + i as isize - 1).clamp(0, w as isize - 1) as usize;
            let p = 3 * (yy * w + xx);
            row[0] += wxi * rgb[p];
            row[1] += wxi * rgb[p + 1];
            row[2] += wxi * rgb[p + 2];
        }
        for c in 0..3 {
            o[c] += wyj * row[c];
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_and_border_samples_equal_the_clamped_sum() {
        let (w, h) = (9, 6);
        let rgb: Vec<f32> = (0..w * h * 3)
            .map(|i| ((i * 7919) % 256) as f32 + 0.25)
            .collect();
        for k in 0..400 {
            let x = (k as f32 * 0.37) % (w - 1) as f32;
            let y = (k as f32 * 0.53) % (h - 1) as f32;
            let (a, b) = (
                sample_rgb_cubic(&rgb, w, h, x, y),
                sample_clamped(&rgb, w, h, x, y),
            );
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "at ({x}, {y})");
        }
        // At a pixel centre, the sample is the pixel.
        assert_eq!(
            sample_rgb_cubic(&rgb, w, h, 4.0, 3.0),
            [
                rgb[3 * (3 * w + 4)],
                rgb[3 * (3 * w + 4) + 1],
                rgb[3 * (3 * w + 4) + 2]
            ]
        );
    }
}
