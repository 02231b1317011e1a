//! Frame-by-frame comparison of videos, for tests that must show an output is made of its own
//! source's pictures and of no other's: two clips of the same size and length but different
//! pictures, styled at strength 0 (the network runs, the blend keeps the original), give outputs
//! whose every frame is close to one source and far from the other.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A clip of `frames` frames at 25 fps, `w`x`h`, from the lavfi video source `pattern`
/// (`testsrc2`, `smptebars`, `mandelbrot`, `rgbtestsrc`...), with a 440 Hz AAC track, written as
/// `dir/<name>`.
pub fn pattern_clip(dir: &Path, name: &str, pattern: &str, w: u32, h: u32, frames: u32) -> PathBuf {
    super::clips::pattern_with_aac(dir, name, pattern, w, h, frames, 25)
}

/// PSNR (dB, luma and chroma averaged) of every frame of `a` against the same frame of `b`, in
/// order; `f64::INFINITY` for identical frames. Panics when the frame counts differ.
pub fn per_frame_psnr(a: &Path, b: &Path) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args(["-lavfi", "[0:v][1:v]psnr=stats_file=-", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "psnr of {} against {}: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("psnr_avg:"))
                .map(|v| v.parse::<f64>().unwrap_or(f64::INFINITY))
        })
        .collect();
    assert!(!values.is_empty(), "no PSNR lines for {}", a.display());
    values
}

/// Every frame of `output` is a frame of `own` (close: above 28 dB, and at least 6 dB closer
/// than to the same frame of `other`), and `output` has as many frames as `own`.
pub fn assert_made_of(output: &Path, own: &Path, other: &Path) {
    let mine = per_frame_psnr(output, own);
    let theirs = per_frame_psnr(output, other);
    for (i, (m, t)) in mine.iter().zip(&theirs).enumerate() {
        assert!(
            *m > 28.0 && *m > t + 6.0,
            "frame {i} of {} is not its own source's ({} at {m:.1} dB) but looks like {} ({t:.1} dB)",
            output.display(),
            own.display(),
            other.display()
        );
    }
    assert_eq!(
        mine.len(),
        frame_count(own),
        "{} has another frame count than {}",
        output.display(),
        own.display()
    );
}

/// Video frames (packets of the first video stream) in `file`, by ffprobe.
pub fn frame_count(file: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no frame count for {}", file.display()))
}
