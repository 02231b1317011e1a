//! CPU benchmark of the multistyle network: one configuration per process.
//!
//! `cargo run --release -p stylefleet-models --example bench -- WIDTH HEIGHT THREADS [ITERS] [WARMUP]`
//!
//! Runs the float network ([`MultiStyle::run_f32`]) on a deterministic frame (the same pattern
//! `bench/ort_bench.py` feeds onnxruntime) on a rayon pool of `THREADS` threads, and prints one
//! JSON line: the median ms per frame after warm-up, every timing, and the process's peak RSS.
//! `bench/run.sh` drives it.

use std::time::Instant;

use candle_core::{Device, Tensor};
use stylefleet_models::MultiStyle;

/// The benchmark frame: `[1, 3, h, w]` f32 in [0, 1], an integer pattern both benchmarks share.
fn frame(w: usize, h: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let p = (x * 7 + y * 13 + c * 101 + (x * y) % 251 + (x / 16 + y / 16) * 37) % 256;
                v.push(p as f32 / 255.0);
            }
        }
    }
    v
}

/// Peak resident set size of this process, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [w, h, threads, rest @ ..] = args.as_slice() else {
        return Err("usage: bench WIDTH HEIGHT THREADS [ITERS] [WARMUP]".into());
    };
    let iters = rest.first().copied().unwrap_or(7);
    let warmup = rest.get(1).copied().unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(*threads)
        .build()?;
    let mut weights = [0.0f32; 26];
    weights[19] = 1.0;
    let net = MultiStyle::new(&weights, &Device::Cpu)?;
    let x = Tensor::from_vec(frame(*w, *h), (1, 3, *h, *w), &Device::Cpu)?;
    let mut times = Vec::with_capacity(iters);
    let mut checksum = 0.0f32;
    pool.install(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for i in 0..warmup + iters {
            let start = Instant::now();
            let y = net.run_f32(&x)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if i >= warmup {
                times.push(ms);
            }
            checksum = y.mean_all()?.to_scalar()?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let list = times
        .iter()
        .map(|t| format!("{t:.1}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"engine\":\"candle\",\"width\":{w},\"height\":{h},\"threads\":{threads},\"median_ms\":{median:.1},\"times_ms\":[{list}],\"peak_rss_mib\":{:.1},\"mean\":{checksum:.6}}}",
        peak_rss_mib()
    );
    Ok(())
}
