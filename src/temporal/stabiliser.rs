//! The recursive blend: `out_t = a * styled_t + (1 - a) * warp(out_{t-1})` on reliable pixels,
//! fed one frame at a time in display order, with its restarts.
//!
//! Per frame: the source's luma, a copy halved to the flow's working width, the flows between it
//! and the previous frame's copy in both directions ([`dis_flow`]), their consistency
//! ([`consistency`], sampled at full size), then per pixel a confidence
//! `c = consistency * exp(-(d / sigma)^2)` with `d` the difference between the source and the
//! previous source warped by the same flow, and `out = styled + c (1 - a) (warped - styled)`.
//! Where the source did not change around a pixel ([`unchanged`]), the previous output is taken
//! at the same place, not resampled: static parts stay sharp however long they are held. The
//! previous output is kept in `f32`, so small updates are not lost to rounding.
//!
//! The filter restarts (the output is the styled frame) on the first frame, after a flat frame
//! (the black end of a fade), on a jump of the mean luma, and when most pixels are unreliable
//! (a cut); [`Step`] says which, for logs and benchmarks.
//!
//! Cost: the flow works on a small copy; everything at full size is done in one pass over the
//! rows (`Stabiliser::blend`): the still test, the flow and mask sampled only where a pixel
//! moved ([`Upsampler`]), the warp, the blend and the 8-bit output. The full-size buffers of the
//! frame before are reused for the next one.
//!
//! [`unchanged`]: super::reliability::unchanged

use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::flow::dis_flow;
use super::plane::Plane;
use super::reliability::{consistency, photometric, unchanged_row};
use super::settings::TemporalSettings;
use super::upsample::Upsampler;
use super::warp::sample_rgb_cubic;

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

/// Where the time of the pushes so far went, summed over the pushes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// The source's luma, its small copy for the flow, its mean and spread.
    pub prepare: Duration,
    /// The flows in both directions and their consistency mask.
    pub flow: Duration,
    /// The full-size pass: still test, warp, confidence, blend, 8-bit output.
    pub blend: Duration,
    /// A restart's output and state.
    pub restart: Duration,
}

/// What the filter keeps of the previous frame.
#[derive(Debug)]
struct Previous {
    /// The source's luma, full size.
    luma: Plane,
    /// Its mean and standard deviation (the next frame's restart tests).
    mean: f32,
    std_dev: f32,
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
    /// The full-size buffers of the frame before the previous one (luma, output), for the next.
    spare: (Vec<f32>, Vec<f32>),
    timings: Timings,
}

impl Stabiliser {
    /// A stabiliser with nothing seen yet.
    pub fn new(settings: TemporalSettings, width: u32, height: u32) -> Self {
        Self {
            settings,
            width: width as usize,
            height: height as usize,
            previous: None,
            spare: (Vec::new(), Vec::new()),
            timings: Timings::default(),
        }
    }

    /// Where the time of the pushes so far went.
    pub fn timings(&self) -> Timings {
        self.timings
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
        let started = Instant::now();
        let (spare_luma, mut out) = std::mem::take(&mut self.spare);
        let luma = Plane::luma_in(spare_luma, source, w, h);
        let max_width = self.settings.flow_width.max(16) as usize;
        let (small, (mean, std_dev)) = rayon::join(
            || flow_copy(&luma, max_width),
            || {
                let mean = luma.mean();
                (mean, luma.std_dev_about(mean))
            },
        );
        let restart = match &self.previous {
            None => Some(Restart::First),
            Some(p) if p.std_dev < self.settings.flat_std => Some(Restart::AfterFlat),
            Some(p) if (mean - p.mean).abs() > self.settings.cut_luma_jump => {
                Some(Restart::LumaJump)
            }
            Some(_) => None,
        };
        self.timings.prepare += started.elapsed();
        out.resize(n * 3, 0.0);
        let mut bytes = vec![0u8; n * 3];
        let step = match (&self.previous, restart) {
            (Some(prev), None) => {
                let (reliable, flow, blend) =
                    self.blend(prev, &luma, &small, styled, &mut out, &mut bytes);
                self.timings.flow += flow;
                self.timings.blend += blend;
                if 1.0 - reliable > self.settings.cut_fraction {
                    Step {
                        restart: Some(Restart::Cut),
                        reliable,
                    }
                } else {
                    Step {
                        restart: None,
                        reliable,
                    }
                }
            }
            (_, restart) => Step {
                restart: Some(restart.unwrap_or(Restart::First)),
                reliable: 0.0,
            },
        };
        if step.restart.is_some() {
            let started = Instant::now();
            restart_from(styled, &mut out, &mut bytes);
            self.timings.restart += started.elapsed();
        }
        let next = Previous {
            luma,
            mean,
            std_dev,
            small,
            out,
        };
        if let Some(old) = self.previous.replace(next) {
            self.spare = (old.luma.data, old.out);
        }
        (bytes, step)
    }

    /// Blends the styled frame with the warped previous output into `out` (`f32`) and `bytes`
    /// (its 8-bit rounding); returns the fraction of reliable pixels and the time the flow and
    /// the full-size pass took.
    fn blend(
        &self,
        prev: &Previous,
        luma: &Plane,
        small: &Plane,
        styled: &[u8],
        out: &mut [f32],
        bytes: &mut [u8],
    ) -> (f32, Duration, Duration) {
        let s = &self.settings;
        let (w, h) = (self.width, self.height);
        let started = Instant::now();
        let (backward, forward) = rayon::join(
            || dis_flow(small, &prev.small, &s.flow),
            || dis_flow(&prev.small, small, &s.flow),
        );
        let mask_small = consistency(&backward, &forward);
        let flowed = Instant::now();
        // The flow and the mask at each full-size pixel, where it is asked for. A flow already at
        // full size is read as it is.
        let up = Upsampler::new((mask_small.width, mask_small.height), (w, h));
        let (sx, sy) = up.scale();
        let full = backward.width() == w && backward.height() == h;
        let keep = 1.0 - s.new_frame_weight();
        let (sigma, threshold) = (s.photometric_sigma, s.static_threshold);
        let reliable: usize = out
            .par_chunks_mut(w * 3)
            .zip(bytes.par_chunks_mut(w * 3))
            .enumerate()
            .map_init(
                || (vec![false; w], vec![0.0f32; w]),
                |(still, scratch), (y, (row, row_bytes))| {
                    // Still: no change around the pixel beyond sensor and compression noise.
                    // Taken as it is, whatever the flow says there: flow in flat or noisy areas
                    // wanders by fractions of a pixel, and following it would move the strokes
                    // of a still background.
                    unchanged_row(luma, &prev.luma, threshold, y, still, scratch);
                    let styled = &styled[y * w * 3..][..w * 3];
                    let mut count = 0;
                    for x in 0..w {
                        let i = y * w + x;
                        let (c, warped) = if still[x] {
                            let d = luma.data[i] - prev.luma.data[i];
                            let c = photometric(d, sigma);
                            (
                                c,
                                [prev.out[3 * i], prev.out[3 * i + 1], prev.out[3 * i + 2]],
                            )
                        } else {
                            let (u, v) = if full {
                                (backward.u.data[i], backward.v.data[i])
                            } else {
                                (up.at(&backward.u, x, y) / sx, up.at(&backward.v, x, y) / sy)
                            };
                            let px = x as f32 + u;
                            let py = y as f32 + v;
                            if px < 0.0 || py < 0.0 || px > (w - 1) as f32 || py > (h - 1) as f32 {
                                (0.0, [0.0; 3])
                            } else {
                                let m = up.at(&mask_small, x, y);
                                let d = luma.data[i] - prev.luma.sample(px, py);
                                let c = m * photometric(d, sigma);
                                (c, sample_rgb_cubic(&prev.out, w, h, px, py))
                            }
                        };
                        if c >= 0.5 {
                            count += 1;
                        }
                        let k = c * keep;
                        for ch in 0..3 {
                            let st = f32::from(styled[3 * x + ch]);
                            let v = st + k * (warped[ch] - st);
                            row[3 * x + ch] = v;
                            row_bytes[3 * x + ch] = to_u8(v);
                        }
                    }
                    count
                },
            )
            .sum();
        (
            reliable as f32 / (w * h) as f32,
            flowed - started,
            flowed.elapsed(),
        )
    }
}

/// The source's luma halved until it is at most `max_width` wide (and no narrower than 16): the
/// flow's working copy.
fn flow_copy(luma: &Plane, max_width: usize) -> Plane {
    let mut small: Option<Plane> = None;
    loop {
        let current = small.as_ref().unwrap_or(luma);
        if current.width <= max_width || current.width < 32 {
            return small.unwrap_or_else(|| luma.clone());
        }
        small = Some(current.halve());
    }
}

/// The styled frame as the filter's new state and output.
fn restart_from(styled: &[u8], out: &mut [f32], bytes: &mut [u8]) {
    out.par_chunks_mut(1 << 16)
        .zip(styled.par_chunks(1 << 16))
        .for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = f32::from(s);
            }
        });
    bytes.copy_from_slice(styled);
}

/// `v.round().clamp(0.0, 255.0) as u8`, exactly (halves away from zero), without the call to
/// `roundf` that `f32::round` is on x86-64's baseline: the floor of the clamped value by a cast,
/// plus one where the (exact) fraction left is a half or more. NaN gives 0, as the cast does.
#[inline]
fn to_u8(v: f32) -> u8 {
    let c = v.clamp(0.0, 255.0);
    let t = c as u8;
    t + u8::from(c - f32::from(t) >= 0.5)
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
    fn the_8_bit_output_rounds_as_f32_round_does() {
        let mut values = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
        for k in -2000..=(256 * 8) {
            let v = k as f32 / 8.0;
            values.extend([v, v.next_down(), v.next_up(), v + 0.3]);
        }
        for v in values {
            assert_eq!(to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
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
