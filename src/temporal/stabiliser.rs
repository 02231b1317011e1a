//! The recursive blend: `out_t = a * styled_t + (1 - a) * warp(out_{t-1})` on reliable pixels,
//! fed one frame at a time in display order, with its restarts.
//!
//! Per frame: the source's luma, a copy halved to the flow's working width, the flows between it
//! and the previous frame's copy in both directions ([`dis_flow`]), their consistency
//! ([`consistency`], upsampled to full size), then per pixel a confidence
//! `c = consistency * exp(-(d / sigma)^2)` with `d` the difference between the source and the
//! previous source warped by the same flow, and `out = styled + c (1 - a) (warped - styled)`.
//! Where the source did not change around a pixel ([`unchanged`]), the previous output is taken
//! at the same place, not resampled: static parts stay sharp however long they are held. The
//! previous output is kept in `f32`, so small updates are not lost to rounding.
//!
//! The filter restarts (the output is the styled frame) on the first frame, after a flat frame
//! (the black end of a fade), on a jump of the mean luma, and when most pixels are unreliable
//! (a cut); [`Step`] says which, for logs and benchmarks.

use rayon::prelude::*;

use super::flow::{Flow, dis_flow};
use super::plane::Plane;
use super::reliability::{consistency, photometric, unchanged};
use super::settings::TemporalSettings;

/// Why the filter restarted on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The first frame.
    First,
    /// The previous source frame was flat (the end of a fade to black, a blank frame).
    AfterFlat,
    /// The mean luma jumped.
    LumaJump,
    /// Most pixels were unreliable.
    Cut,
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Set when the filter restarted on this frame (its output is the styled frame).
    pub restart: Option<Restart>,
    /// Fraction of pixels blended with a confidence of at least one half.
    pub reliable: f32,
}

/// What the filter keeps of the previous frame.
#[derive(Debug)]
struct Previous {
    /// The source's luma, full size.
    luma: Plane,
    /// The source's luma at the flow's working size.
    small: Plane,
    /// The stabilised output, RGB, `f32`.
    out: Vec<f32>,
}

/// A stabiliser for one video of `width` x `height` frames; feed it every frame in order.
#[derive(Debug)]
pub struct Stabiliser {
    settings: TemporalSettings,
    width: usize,
    height: usize,
    previous: Option<Previous>,
}

impl Stabiliser {
    /// A stabiliser with nothing seen yet.
    pub fn new(settings: TemporalSettings, width: u32, height: u32) -> Self {
        Self {
            settings,
            width: width as usize,
            height: height as usize,
            previous: None,
        }
    }

    /// Stabilises `styled` (packed RGB24), the styled picture of `source` (packed RGB24, same
    /// size), against the frames fed before; returns the output frame and what was done.
    pub fn push(&mut self, source: &[u8], styled: &[u8]) -> (Vec<u8>, Step) {
        let (w, h) = (self.width, self.height);
        let n = w * h;
        assert!(
            source.len() == n * 3 && styled.len() == n * 3,
            "frames must be {w}x{h} RGB24"
        );
        let luma = Plane::luma(source, w, h);
        let mut small = luma.clone();
        while small.width > self.settings.flow_width.max(16) as usize && small.width >= 32 {
            small = small.halve();
        }
        let restart = match &self.previous {
            None => Some(Restart::First),
            Some(p) if p.luma.std_dev() < self.settings.flat_std => Some(Restart::AfterFlat),
            Some(p) if (luma.mean() - p.luma.mean()).abs() > self.settings.cut_luma_jump => {
                Some(Restart::LumaJump)
            }
            Some(_) => None,
        };
        let (out, step) = match (&self.previous, restart) {
            (Some(prev), None) => {
                let (out, reliable) = self.blend(prev, &luma, &small, styled);
                if 1.0 - reliable > self.settings.cut_fraction {
                    (
                        restart_from(styled),
                        Step {
                            restart: Some(Restart::Cut),
                            reliable,
                        },
                    )
                } else {
                    (
                        out,
                        Step {
                            restart: None,
                            reliable,
                        },
                    )
                }
            }
            (_, restart) => (
                restart_from(styled),
                Step {
                    restart: Some(restart.unwrap_or(Restart::First)),
                    reliable: 0.0,
                },
            ),
        };
        let bytes = out
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        self.previous = Some(Previous { luma, small, out });
        (bytes, step)
    }

    /// One blended frame and the fraction of reliable pixels.
    fn blend(
        &self,
        prev: &Previous,
        luma: &Plane,
        small: &Plane,
        styled: &[u8],
    ) -> (Vec<f32>, f32) {
        let s = &self.settings;
        let (w, h) = (self.width, self.height);
        let (backward, forward) = rayon::join(
            || dis_flow(small, &prev.small, &s.flow),
            || dis_flow(&prev.small, small, &s.flow),
        );
        let mask_small = consistency(&backward, &forward);
        let flow: Flow = if backward.width() == w && backward.height() == h {
            backward
        } else {
            backward.resize(w, h)
        };
        // Still: no change around the pixel beyond sensor and compression noise. Taken as it
        // is, whatever the flow says there: flow in flat or noisy areas wanders by fractions of
        // a pixel, and following it would move the strokes of a still background.
        let still = unchanged(luma, &prev.luma, s.static_threshold);
        let keep = 1.0 - s.new_frame_weight();
        let (mx, my) = (
            mask_small.width as f32 / w as f32,
            mask_small.height as f32 / h as f32,
        );
        let mut out = vec![0.0f32; w * h * 3];
        let reliable: usize = out
            .par_chunks_mut(w * 3)
            .enumerate()
            .map(|(y, row)| {
                let mut count = 0;
                for x in 0..w {
                    let i = y * w + x;
                    let (c, warped) = if still[i] {
                        let d = luma.data[i] - prev.luma.data[i];
                        let c = photometric(d, s.photometric_sigma);
                        (
                            c,
                            [prev.out[3 * i], prev.out[3 * i + 1], prev.out[3 * i + 2]],
                        )
                    } else {
                        let px = x as f32 + flow.u.data[i];
                        let py = y as f32 + flow.v.data[i];
                        if px < 0.0 || py < 0.0 || px > (w - 1) as f32 || py > (h - 1) as f32 {
                            (0.0, [0.0; 3])
                        } else {
                            let m = mask_small
                                .sample((x as f32 + 0.5) * mx - 0.5, (y as f32 + 0.5) * my - 0.5);
                            let d = luma.data[i] - prev.luma.sample(px, py);
                            let c = m * photometric(d, s.photometric_sigma);
                            (c, sample_rgb_cubic(&prev.out, w, h, px, py))
                        }
                    };
                    if c >= 0.5 {
                        count += 1;
                    }
                    let k = c * keep;
                    for ch in 0..3 {
                        let st = f32::from(styled[3 * i + ch]);
                        row[3 * x + ch] = st + k * (warped[ch] - st);
                    }
                }
                count
            })
            .sum();
        (out, reliable as f32 / (w * h) as f32)
    }
}

/// The styled frame as the filter's new state.
fn restart_from(styled: &[u8]) -> Vec<f32> {
    styled.iter().map(|&v| f32::from(v)).collect()
}

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

/// Bicubic (Catmull-Rom) sample of packed RGB `f32` at `(x, y)`, inside the frame, edges
/// clamped. Bicubic rather than bilinear: the blend resamples its own output frame after frame,
/// and bilinear's low-pass would add up to a visible blur of the strokes on moving content.
#[inline]
fn sample_rgb_cubic(rgb: &[f32], w: usize, h: usize, x: f32, y: f32) -> [f32; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (wx, wy) = (cubic_weights(x - x0), cubic_weights(y - y0));
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

    /// A textured RGB frame moved by `dx` pixels, with per-frame noise of `noise` added.
    fn frame(w: usize, h: usize, dx: f32, seed: u32, noise: f32) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * 3);
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for y in 0..h {
            for x in 0..w {
                let xf = x as f32 - dx;
                let base = 128.0 + 50.0 * (0.3 * xf).sin() * (0.2 * y as f32).cos();
                for c in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let n = (state % 1000) as f32 / 1000.0 - 0.5;
                    out.push((base + 10.0 * c as f32 + noise * n).clamp(0.0, 255.0) as u8);
                }
            }
        }
        out
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f32::from(*x) - f32::from(*y)).abs())
            .sum::<f32>()
            / a.len() as f32
    }

    #[test]
    fn static_noise_is_damped_and_static_pixels_are_not_resampled() {
        let (w, h) = (64, 48);
        let source = frame(w, h, 0.0, 0, 0.0);
        let mut stab = Stabiliser::new(TemporalSettings::default(), w as u32, h as u32);
        let mut outs = Vec::new();
        let mut styled_frames = Vec::new();
        for t in 0..12 {
            let styled = frame(w, h, 0.0, t + 1, 40.0);
            let (out, step) = stab.push(&source, &styled);
            assert_eq!(step.restart.is_some(), t == 0);
            outs.push(out);
            styled_frames.push(styled);
        }
        let change_in = mean_abs_diff(&styled_frames[10], &styled_frames[11]);
        let change_out = mean_abs_diff(&outs[10], &outs[11]);
        assert!(
            change_out < change_in / 3.0,
            "styled frames change by {change_in}, stabilised by {change_out}"
        );
    }

    #[test]
    fn a_cut_restarts_the_filter() {
        let (w, h) = (64, 48);
        let mut stab = Stabiliser::new(TemporalSettings::default(), w as u32, h as u32);
        let a = frame(w, h, 0.0, 0, 0.0);
        stab.push(&a, &a);
        let dark: Vec<u8> = a.iter().map(|v| v / 3).collect();
        let (out, step) = stab.push(&dark, &dark);
        assert_eq!(step.restart, Some(Restart::LumaJump));
        assert_eq!(out, dark);
        let flat = vec![0u8; w * h * 3];
        stab.push(&flat, &flat);
        let (out, step) = stab.push(&a, &a);
        assert_eq!(step.restart, Some(Restart::AfterFlat));
        assert_eq!(out, a);
    }

    #[test]
    fn moving_content_follows_the_motion() {
        // The styled picture moves with the source: the blend must not leave a ghost of it.
        let (w, h) = (96, 64);
        let mut stab = Stabiliser::new(TemporalSettings::default(), w as u32, h as u32);
        let mut last = (Vec::new(), Vec::new());
        for t in 0..8 {
            let f = frame(w, h, 2.0 * t as f32, 0, 0.0);
            let (out, _) = stab.push(&f, &f);
            last = (out, f);
        }
        let err = mean_abs_diff(&last.0, &last.1);
        assert!(
            err < 4.0,
            "stabilised output strays from the moving picture by {err}"
        );
    }
}
