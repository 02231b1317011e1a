//! The temporal-stability benchmark: the measuring half of `scripts/bench-temporal.sh`.
//!
//! ```text
//! temporal_bench <clip> [--style S] [--frames N] [--batch B] [--strength A] [--strip DIR] [--strip-at F]
//! ```
//!
//! Decodes the clip's first `N` frames (default: all) with the pipeline's own decoder, styles each
//! frame alone with the network on the CPU (the per-frame output, as the workers make it), runs
//! the stabiliser over them in order (the aggregator's pass), and prints one table of:
//!
//! - flicker (320x180 luma, static pixels: source change < 2) of source, per-frame, stabilised;
//! - warping error (Lai et al.) of per-frame and stabilised output, against the source's flow by
//!   the stronger DIS setting (`DisParams::fine`) at up to 640 pixels wide, over consistent pixels;
//! - ghosting: mean |stabilised - per-frame| luma on the pixels that flow marks occluded
//!   (newly uncovered), against the same on all pixels;
//! - stroke texture (mean luma gradient) and saturation of stabilised relative to per-frame;
//!   PSNR (RGB) and SSIM (luma 320x180) of stabilised against per-frame, and PSNR on moving
//!   pixels (source change >= 2);
//! - flicker at batch-boundary pairs (frame `t-1`, `t` with `t` a multiple of `B`) against all;
//! - cost: ms per frame of the network and of flow + blend.
//!
//! `--strip DIR` writes frames `F..F+4` of source, per-frame and stabilised output as PNGs there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use stylefleet::temporal::metric::{
    flicker_pairs, mean_scored, mse, psnr, saturation, small_luma, ssim, stroke_texture,
    warping_error,
};
use stylefleet::temporal::{DisParams, Plane, Stabiliser, TemporalSettings, dis_flow};
use stylefleet_models::{Frame, StyleOptions, StyleSpec, Stylizer};

struct Args {
    clip: PathBuf,
    style: String,
    frames: Option<usize>,
    batch: usize,
    strength: f32,
    strip: Option<PathBuf>,
    strip_at: usize,
    cache: Option<PathBuf>,
    quick: bool,
    sigma: Option<f32>,
    still: Option<f32>,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        clip: PathBuf::new(),
        style: "0".into(),
        frames: None,
        batch: 16,
        strength: stylefleet::temporal::settings::DEFAULT_STRENGTH,
        strip: None,
        strip_at: 0,
        cache: None,
        quick: false,
        sigma: None,
        still: None,
    };
    let mut clip = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--style" => a.style = value()?,
            "--frames" => a.frames = Some(value()?.parse()?),
            "--batch" => a.batch = value()?.parse()?,
            "--strength" => a.strength = value()?.parse()?,
            "--strip" => a.strip = Some(value()?.into()),
            "--strip-at" => a.strip_at = value()?.parse()?,
            "--cache" => a.cache = Some(value()?.into()),
            "--quick" => a.quick = true,
            "--sigma" => a.sigma = Some(value()?.parse()?),
            "--still" => a.still = Some(value()?.parse()?),
            other if clip.is_none() => clip = Some(PathBuf::from(other)),
            other => bail!("unexpected argument {other}"),
        }
    }
    a.clip = clip.context("usage: temporal_bench <clip> [options]")?;
    Ok(a)
}

/// Luma of RGB24 halved until at most `max_width` wide.
fn luma_at_most(rgb: &[u8], w: usize, h: usize, max_width: usize) -> Plane {
    let mut p = Plane::luma(rgb, w, h);
    while p.width > max_width {
        p = p.halve();
    }
    p
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let probe = stylefleet::media::probe(&a.clip).await?;
    let (w, h) = (probe.video.width as usize, probe.video.height as usize);
    let n = a
        .frames
        .unwrap_or(probe.frames.len())
        .min(probe.frames.len());
    let sources = stylefleet::media::decode_frames(&a.clip, &probe, 0..n as u64).await?;
    eprintln!("{}: {n} frames of {w}x{h}", a.clip.display());

    // Per-frame styling, timed.
    let spec: StyleSpec = a.style.parse()?;
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), &candle_core::Device::Cpu)?;
    let mut styled = Vec::with_capacity(n);
    let started = Instant::now();
    let cached = a.cache.as_ref().and_then(|c| std::fs::read(c).ok());
    if let Some(bytes) = cached.filter(|b| b.len() == n * w * h * 3) {
        styled.extend(bytes.chunks_exact(w * h * 3).map(<[u8]>::to_vec));
    }
    for chunk in sources.chunks(4).skip(styled.len() / 4) {
        let frames: Vec<Frame> = chunk
            .iter()
            .map(|d| Frame {
                width: w as u32,
                height: h as u32,
                data: d.clone(),
            })
            .collect();
        styled.extend(stylizer.style_batch(&frames)?.into_iter().map(|f| f.data));
    }
    let network_ms = started.elapsed().as_secs_f64() * 1000.0 / n as f64;
    if let Some(c) = &a.cache {
        std::fs::write(c, styled.concat())?;
    }

    // The stabiliser, timed (flow + blend), and how often it restarted.
    let mut settings = TemporalSettings {
        strength: a.strength,
        ..TemporalSettings::default()
    };
    if let Some(sigma) = a.sigma {
        settings.photometric_sigma = sigma;
    }
    if let Some(still) = a.still {
        settings.static_threshold = still;
    }
    let mut stab = Stabiliser::new(settings.clone(), w as u32, h as u32);
    let mut stabilised = Vec::with_capacity(n);
    let mut restarts = Vec::new();
    let mut reliable = Vec::new();
    let started = Instant::now();
    for (t, (s, st)) in sources.iter().zip(&styled).enumerate() {
        let (out, step) = stab.push(s, st);
        if let Some(kind) = step.restart {
            restarts.push(format!("{t}:{kind:?}"));
        } else {
            reliable.push(f64::from(step.reliable));
        }
        stabilised.push(out);
    }
    let filter_ms = started.elapsed().as_secs_f64() * 1000.0 / n as f64;

    // Flicker on 320x180 luma.
    let small = |frames: &[Vec<u8>]| -> Vec<Vec<u8>> {
        frames
            .iter()
            .map(|f| small_luma(f, w, h, 320, 180))
            .collect()
    };
    let (src_s, per_s, stab_s) = (small(&sources), small(&styled), small(&stabilised));
    let pairs_src = flicker_pairs(&src_s, &src_s);
    let pairs_per = flicker_pairs(&src_s, &per_s);
    let pairs_stab = flicker_pairs(&src_s, &stab_s);
    let seam = |pairs: &[Option<f64>]| -> Vec<Option<f64>> {
        // Pair index p joins frames p and p + 1: a seam when p + 1 starts a batch.
        pairs
            .iter()
            .enumerate()
            .filter(|(p, _)| (p + 1) % a.batch == 0)
            .map(|(_, v)| *v)
            .collect()
    };

    // Warping error and ghosting with the stronger flow on the source.
    let (mut we_per, mut we_stab, mut ghost, mut diff_all) = (vec![], vec![], vec![], vec![]);
    for t in (1..n).filter(|_| !a.quick) {
        let s0 = luma_at_most(&sources[t - 1], w, h, 640);
        let s1 = luma_at_most(&sources[t], w, h, 640);
        let (back, fwd) = rayon::join(
            || dis_flow(&s1, &s0, &DisParams::fine()),
            || dis_flow(&s0, &s1, &DisParams::fine()),
        );
        let p0 = luma_at_most(&styled[t - 1], w, h, 640);
        let p1 = luma_at_most(&styled[t], w, h, 640);
        let q0 = luma_at_most(&stabilised[t - 1], w, h, 640);
        let q1 = luma_at_most(&stabilised[t], w, h, 640);
        let (e_per, mask) = warping_error(&p0, &p1, &back, &fwd);
        let (e_stab, _) = warping_error(&q0, &q1, &back, &fwd);
        we_per.push(e_per);
        we_stab.push(e_stab);
        let (mut g, mut gn, mut d) = (0.0f64, 0usize, 0.0f64);
        for i in 0..mask.data.len() {
            let delta = f64::from((q1.data[i] - p1.data[i]).abs());
            d += delta;
            if mask.data[i] < 0.5 {
                g += delta;
                gn += 1;
            }
        }
        if gn > 0 {
            ghost.push(g / gn as f64);
        }
        diff_all.push(d / mask.data.len() as f64);
    }

    // Style kept.
    let (mut tex, mut sat, mut ps, mut ss, mut ps_moving) =
        (vec![], vec![], vec![], vec![], vec![]);
    for t in 0..n {
        let lp = Plane::luma(&styled[t], w, h);
        let lq = Plane::luma(&stabilised[t], w, h);
        tex.push(stroke_texture(&lq) / stroke_texture(&lp).max(1e-9));
        sat.push(saturation(&stabilised[t]) / saturation(&styled[t]).max(1e-9));
        if t > 0 {
            ps.push(psnr(mse(&styled[t], &stabilised[t])));
        }
        let to_plane = |v: &[u8]| Plane {
            width: 320,
            height: 180,
            data: v.iter().map(|&x| f32::from(x)).collect(),
        };
        ss.push(ssim(&to_plane(&per_s[t]), &to_plane(&stab_s[t])));
        if t > 0 {
            let (mut e, mut k) = (0.0f64, 0usize);
            for i in 0..src_s[t].len() {
                if (i16::from(src_s[t][i]) - i16::from(src_s[t - 1][i])).abs() >= 2 {
                    e += (f64::from(per_s[t][i]) - f64::from(stab_s[t][i])).powi(2);
                    k += 1;
                }
            }
            if k > 0 {
                ps_moving.push(psnr(e / k as f64));
            }
        }
    }

    println!(
        "clip {} ({w}x{h}, {n} frames), style {}, strength {} (new-frame weight {:.2}), batch {}",
        a.clip.display(),
        a.style,
        a.strength,
        settings.new_frame_weight(),
        a.batch
    );
    println!("| measure | source | per-frame | stabilised |");
    println!("|---|---|---|---|");
    println!(
        "| flicker (all pairs) | {:.2} | {:.2} | {:.2} |",
        mean_scored(&pairs_src),
        mean_scored(&pairs_per),
        mean_scored(&pairs_stab)
    );
    println!(
        "| flicker at batch seams | {:.2} | {:.2} | {:.2} |",
        mean_scored(&seam(&pairs_src)),
        mean_scored(&seam(&pairs_per)),
        mean_scored(&seam(&pairs_stab))
    );
    println!(
        "| scored pairs (all / seams) | {} / {} | | |",
        pairs_src.iter().flatten().count(),
        seam(&pairs_src).iter().flatten().count()
    );
    println!(
        "| warping error (MSE, luma) | | {:.1} | {:.1} |",
        mean(&we_per),
        mean(&we_stab)
    );
    println!(
        "| ghosting: mean abs luma diff to per-frame, occluded / all pixels | | | {:.2} / {:.2} |",
        mean(&ghost),
        mean(&diff_all)
    );
    println!(
        "| stroke texture vs per-frame | | 100% | {:.1}% |",
        100.0 * mean(&tex)
    );
    println!(
        "| saturation vs per-frame | | 100% | {:.1}% |",
        100.0 * mean(&sat)
    );
    println!(
        "| PSNR vs per-frame (RGB, all / moving pixels) | | | {:.1} / {:.1} dB |",
        mean(&ps),
        mean(&ps_moving)
    );
    println!(
        "| SSIM vs per-frame (luma 320x180) | | | {:.3} |",
        mean(&ss)
    );
    println!(
        "| reliable pixels (blended frames) | | | {:.1}% |",
        100.0 * mean(&reliable)
    );
    println!(
        "| restarts | | | {} |",
        if restarts.is_empty() {
            "-".to_owned()
        } else {
            restarts.join(" ")
        }
    );
    println!(
        "| ms per frame: network (CPU) / flow + blend | | {network_ms:.0} | {filter_ms:.1} ({:.1}% of the network) |",
        100.0 * filter_ms / network_ms
    );

    if let Some(dir) = &a.strip {
        std::fs::create_dir_all(dir)?;
        for t in a.strip_at..(a.strip_at + 4).min(n) {
            for (name, frames) in [
                ("source", &sources),
                ("perframe", &styled),
                ("stabilised", &stabilised),
            ] {
                let frame = Frame {
                    width: w as u32,
                    height: h as u32,
                    data: frames[t].clone(),
                };
                stylefleet_models::write_image(strip_path(dir, name, t), &frame)?;
            }
        }
    }
    Ok(())
}

fn strip_path(dir: &Path, name: &str, t: usize) -> PathBuf {
    dir.join(format!("{name}-{t:04}.png"))
}
