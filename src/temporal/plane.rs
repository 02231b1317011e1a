//! A single-channel image of `f32` (luma 0..255, or one flow component), with the few operations
//! the flow and the blend need: RGB to luma, halving, bilinear sampling, gradients.

use rayon::prelude::*;

/// The rows above and below a vertical position and the weight of the lower one: see
/// [`Plane::row_taps`].
#[derive(Debug, Clone, Copy)]
pub struct RowTaps {
    /// Offset of the upper row.
    top: usize,
    /// Offset of the lower row.
    bottom: usize,
    /// Weight of the lower row.
    frac: f32,
}

/// One channel, row-major, `data.len() == width * height`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Values, row after row.
    pub data: Vec<f32>,
}

impl Plane {
    /// A plane of zeros.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    /// BT.601 luma (0..255) of packed RGB24 pixels.
    pub fn luma(rgb: &[u8], width: usize, height: usize) -> Self {
        Self::luma_in(Vec::new(), rgb, width, height)
    }

    /// [`Plane::luma`] written into `buffer`, whose allocation is reused: a full-size plane a
    /// frame is megabytes that a caller which keeps its previous frame's plane need not ask the
    /// allocator (and the kernel, page by page) for again. Rows in parallel.
    pub fn luma_in(mut buffer: Vec<f32>, rgb: &[u8], width: usize, height: usize) -> Self {
        buffer.clear();
        buffer.resize(width * height, 0.0);
        buffer
            .par_chunks_mut(width.max(1))
            .zip(rgb.par_chunks(3 * width.max(1)))
            .for_each(|(out, rgb)| {
                for (o, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
                    *o =
                        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                }
            });
        Self {
            width,
            height,
            data: buffer,
        }
    }

    /// The value at `(x, y)`, with coordinates clamped to the edge.
    #[inline]
    pub fn at(&self, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[y * self.width + x]
    }

    /// Bilinear sample at `(x, y)` (pixel centres at integers), clamped to the edge.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        self.sample_in_row(self.row_taps(y), x)
    }

    /// The vertical half of [`Plane::sample`] at `y`: the flow samples a patch row by row, so
    /// the rows and the weight between them are found once per row instead of once per pixel.
    #[inline]
    pub fn row_taps(&self, y: f32) -> RowTaps {
        let y = y.clamp(0.0, (self.height - 1) as f32);
        // The floor of a non-negative coordinate by a cast: `f32::floor` is a call to `floorf` on
        // x86-64's baseline, and this runs millions of times a frame.
        let y0 = y as usize;
        RowTaps {
            top: y0 * self.width,
            bottom: (y0 + 1).min(self.height - 1) * self.width,
            frac: y - y0 as f32,
        }
    }

    /// [`Plane::sample`] at `(x, y)`, given `taps`, the [`Plane::row_taps`] of `y`.
    #[inline]
    pub fn sample_in_row(&self, taps: RowTaps, x: f32) -> f32 {
        let x = x.clamp(0.0, (self.width - 1) as f32);
        let x0 = x as usize;
        let fx = x - x0 as f32;
        let x1 = (x0 + 1).min(self.width - 1);
        let (r0, r1) = (taps.top, taps.bottom);
        let top = self.data[r0 + x0] + fx * (self.data[r0 + x1] - self.data[r0 + x0]);
        let bottom = self.data[r1 + x0] + fx * (self.data[r1 + x1] - self.data[r1 + x0]);
        top + taps.frac * (bottom - top)
    }

    /// Half the size in each direction (rounded down, at least 1), each pixel the mean of the
    /// 2x2 block it covers.
    pub fn halve(&self) -> Self {
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        if self.width >= 2 && self.height >= 2 {
            // Every 2x2 block lies inside: no clamping, whole rows at a time.
            let mut data = vec![0.0; w * h];
            data.par_chunks_mut(w).enumerate().for_each(|(y, out)| {
                let top = &self.data[2 * y * self.width..][..2 * w];
                let bottom = &self.data[(2 * y + 1) * self.width..][..2 * w];
                for ((o, t), b) in out
                    .iter_mut()
                    .zip(top.chunks_exact(2))
                    .zip(bottom.chunks_exact(2))
                {
                    *o = 0.25 * (t[0] + t[1] + b[0] + b[1]);
                }
            });
            return Self {
                width: w,
                height: h,
                data,
            };
        }
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (2 * x as isize, 2 * y as isize);
                data.push(
                    0.25 * (self.at(sx, sy)
                        + self.at(sx + 1, sy)
                        + self.at(sx, sy + 1)
                        + self.at(sx + 1, sy + 1)),
                );
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }

    /// Central-difference gradients `(d/dx, d/dy)`.
    pub fn gradients(&self) -> (Plane, Plane) {
        let mut gx = Plane::zeros(self.width, self.height);
        let mut gy = Plane::zeros(self.width, self.height);
        for y in 0..self.height as isize {
            for x in 0..self.width as isize {
                let i = y as usize * self.width + x as usize;
                gx.data[i] = 0.5 * (self.at(x + 1, y) - self.at(x - 1, y));
                gy.data[i] = 0.5 * (self.at(x, y + 1) - self.at(x, y - 1));
            }
        }
        (gx, gy)
    }

    /// Mean of all values.
    pub fn mean(&self) -> f32 {
        if self.data.is_empty() {
            return 0.0;
        }
        (self.data.iter().map(|&v| f64::from(v)).sum::<f64>() / self.data.len() as f64) as f32
    }

    /// Standard deviation of all values around `mean`, their [`Plane::mean`] (computed once by
    /// a caller that needs both).
    pub fn std_dev_about(&self, mean: f32) -> f32 {
        if self.data.is_empty() {
            return 0.0;
        }
        let mean = f64::from(mean);
        let var = self
            .data
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / self.data.len() as f64;
        var.sqrt() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_sampling_interpolates_and_clamps() {
        let p = Plane {
            width: 2,
            height: 2,
            data: vec![0.0, 10.0, 20.0, 30.0],
        };
        assert_eq!(p.sample(0.5, 0.0), 5.0);
        assert_eq!(p.sample(0.5, 0.5), 15.0);
        assert_eq!(p.sample(-3.0, 9.0), 20.0);
        assert_eq!(p.halve().data, vec![15.0]);
    }
}
