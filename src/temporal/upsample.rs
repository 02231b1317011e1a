//! Bilinear upsampling of a small plane (the flow, its consistency mask) onto the frame's pixel
//! grid, one pixel at a time and only where the blend asks for it.
//!
//! The flow is computed on a copy of the frame a quarter as wide, but the blend needs it per
//! frame pixel, and only on the pixels that moved (a still pixel takes the previous output as it
//! is). [`Upsampler`] holds, for each column and each row of the frame, the two source indices and
//! the weight that [`Plane::sample`] would compute for it, so a value costs three lerps instead of
//! a full-size resampled copy of every plane. Its values are exactly those of
//! [`Plane::sample`] at `((x + 0.5) s - 0.5, (y + 0.5) s - 0.5)`, the centre-aligned grid of
//! [`Flow::resize`](super::flow::Flow::resize).

use super::plane::Plane;

/// One axis: the two neighbours and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    frac: f32,
}

/// The taps of every position `0..to` along an axis of `from` source pixels, centre-aligned.
fn taps(from: usize, to: usize) -> (f32, Vec<Tap>) {
    let scale = from as f32 / to as f32;
    let last = (from - 1) as f32;
    let taps = (0..to)
        .map(|i| {
            // As `Plane::sample`: clamped to the edge, the floor of a non-negative coordinate.
            let c = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, last);
            let lo = c as usize;
            Tap {
                lo,
                hi: (lo + 1).min(from - 1),
                frac: c - lo as f32,
            }
        })
        .collect();
    (scale, taps)
}

/// Samples planes of one small size at the pixel centres of a larger `width` x `height` grid.
#[derive(Debug, Clone)]
pub struct Upsampler {
    /// Source width (the row stride of the sampled planes) and height.
    from: (usize, usize),
    /// Source pixels per grid pixel, horizontally and vertically.
    scale: (f32, f32),
    columns: Vec<Tap>,
    rows: Vec<Tap>,
}

impl Upsampler {
    /// Taps from `from` (width, height) planes to a `to` (width, height) grid.
    pub fn new(from: (usize, usize), to: (usize, usize)) -> Self {
        let (sx, columns) = taps(from.0, to.0);
        let (sy, rows) = taps(from.1, to.1);
        Self {
            from,
            scale: (sx, sy),
            columns,
            rows,
        }
    }

    /// Source pixels per grid pixel, horizontally and vertically.
    pub fn scale(&self) -> (f32, f32) {
        self.scale
    }

    /// The source size.
    pub fn from(&self) -> (usize, usize) {
        self.from
    }

    /// `plane` (of the source size) sampled at grid pixel `(x, y)`: the value of
    /// `plane.sample((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5)`.
    #[inline]
    pub fn at(&self, plane: &Plane, x: usize, y: usize) -> f32 {
        debug_assert_eq!((plane.width, plane.height), self.from);
        let (c, r) = (self.columns[x], self.rows[y]);
        let d = &plane.data;
        let (r0, r1) = (r.lo * self.from.0, r.hi * self.from.0);
        let top = d[r0 + c.lo] + c.frac * (d[r0 + c.hi] - d[r0 + c.lo]);
        let bottom = d[r1 + c.lo] + c.frac * (d[r1 + c.hi] - d[r1 + c.lo]);
        top + r.frac * (bottom - top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taps_give_what_plane_sample_gives() {
        let (w, h) = (13, 7);
        let mut p = Plane::zeros(w, h);
        for (i, v) in p.data.iter_mut().enumerate() {
            *v = ((i * 7919) % 251) as f32 * 0.37 - 20.0;
        }
        for (tw, th) in [(13, 7), (52, 28), (40, 21), (7, 5)] {
            let up = Upsampler::new((w, h), (tw, th));
            let (sx, sy) = up.scale();
            for y in 0..th {
                for x in 0..tw {
                    let want = p.sample((x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5);
                    assert_eq!(
                        up.at(&p, x, y).to_bits(),
                        want.to_bits(),
                        "({x}, {y}) of {tw}x{th}"
                    );
                }
            }
        }
    }
}
