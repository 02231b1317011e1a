//! GPU benchmark of the multistyle network: correctness against the CPU path on real frames, then
//! frames/s over sizes, batches and dtypes, model only and u8 frames from host memory and back.
//!
//! ```text
//! cargo build --release -p stylefleet-models --features cuda --example gpu_bench
//! gpu_bench --frames DIR [--out FILE] [--sizes 1280x720,1920x1080] [--batches 1,8,32]
//!           [--dtypes f32,f16,bf16] [--variants fused,plain] [--modes model,u8,worker]
//!           [--check-sizes 1280x720,962x541] [--check-frames 2] [--min-secs 1.5] [--warmup 2]
//!           [--style 3:0.7,12:0.3] [--cpu-standin]
//! ```
//!
//! - **Correctness**: for every variant and dtype, the frames of `--check-sizes` styled on the GPU
//!   against the CPU kernels (f32, themselves checked against onnxruntime by `tests/golden.rs`):
//!   max and mean absolute difference and PSNR of the float output (peak 1), then the same for
//!   the u8 frames of the worker's path ([`Stylizer::style_batch`]) in levels (peak 255).
//! - **Throughput**, per size, batch, dtype and variant (`fused`: the CUDA kernels of
//!   `multistyle/cuda.rs`; `plain`: plain Candle ops):
//!   - `model`: [`MultiStyle::run_f32`] on a batch already on the GPU;
//!   - `u8`: packed RGB24 frames in host memory uploaded as u8, converted, styled, quantised and
//!     downloaded as u8 (what [`Stylizer::style_batch`] does, without its per-frame copies);
//!   - `worker`: [`Stylizer::style_batch`] itself (f16, fused: the worker's settings), only in the
//!     f16 fused rows.
//!
//!   Each configuration warms up, then runs until `--min-secs` have passed (at least 3 batches).
//!   A configuration that fails (out of memory, say) is recorded with its error and the run goes
//!   on.
//!
//! Batches are filled with the real frames of `--frames` (PNG or JPEG, resized to each size when
//! they differ), cycling through them. Every line is printed as it is measured and the table file
//! is rewritten after each row, so a run cut short still leaves what it measured.
//!
//! Without the `cuda` feature the program only runs with `--cpu-standin`, where the CPU stands in
//! for the GPU (plain Candle ops against the CPU kernels, at small sizes): a self-test of the
//! program's logic, not a measurement.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use stylefleet_models::{Frame, MultiStyle, StyleOptions, StyleSpec, Stylizer, read_image};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    frames: PathBuf,
    out: Option<PathBuf>,
    sizes: Vec<(u32, u32)>,
    batches: Vec<usize>,
    dtypes: Vec<DType>,
    variants: Vec<Variant>,
    modes: Vec<Mode>,
    check_sizes: Vec<(u32, u32)>,
    check_frames: usize,
    min_secs: f64,
    warmup: usize,
    style: String,
    cpu_standin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Fused,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Model,
    U8,
    Worker,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Fused => "fused",
            Variant::Plain => "plain",
        }
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Model => "model",
            Mode::U8 => "u8",
            Mode::Worker => "worker",
        }
    }
}

const USAGE: &str = "usage: gpu_bench --frames DIR [--out FILE] [--sizes WxH,..] [--batches 1,8,32] \
[--dtypes f32,f16,bf16] [--variants fused,plain] [--modes model,u8,worker] [--check-sizes WxH,..] \
[--check-frames N] [--min-secs S] [--warmup N] [--style SPEC] [--cpu-standin]";

fn parse_list<T>(
    text: &str,
    item: impl Fn(&str) -> Result<T, BoxError>,
) -> Result<Vec<T>, BoxError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| item(s.trim()))
        .collect()
}

fn parse_size(text: &str) -> Result<(u32, u32), BoxError> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("a size is WIDTHxHEIGHT, got {text:?}"))?;
    Ok((w.parse()?, h.parse()?))
}

fn parse_dtype(text: &str) -> Result<DType, BoxError> {
    match text {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("dtypes are f32, f16, bf16; got {other:?}").into()),
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

impl Options {
    fn parse() -> Result<Self, BoxError> {
        let mut o = Options {
            frames: PathBuf::new(),
            out: None,
            sizes: vec![(1280, 720), (1920, 1080)],
            batches: vec![1, 8, 32],
            dtypes: vec![DType::F32, DType::F16, DType::BF16],
            variants: vec![Variant::Fused],
            modes: vec![Mode::Model, Mode::U8, Mode::Worker],
            check_sizes: vec![(1280, 720), (962, 541)],
            check_frames: 2,
            min_secs: 1.5,
            warmup: 2,
            style: "3:0.7,12:0.3".to_owned(),
            cpu_standin: false,
        };
        let mut frames = None;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--cpu-standin" {
                o.cpu_standin = true;
                continue;
            }
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--frames" => frames = Some(PathBuf::from(value)),
                "--out" => o.out = Some(PathBuf::from(value)),
                "--sizes" => o.sizes = parse_list(&value, parse_size)?,
                "--batches" => o.batches = parse_list(&value, |s| Ok(s.parse()?))?,
                "--dtypes" => o.dtypes = parse_list(&value, parse_dtype)?,
                "--variants" => {
                    o.variants = parse_list(&value, |s| match s {
                        "fused" => Ok(Variant::Fused),
                        "plain" => Ok(Variant::Plain),
                        other => Err(format!("variants are fused, plain; got {other:?}").into()),
                    })?
                }
                "--modes" => {
                    o.modes = parse_list(&value, |s| match s {
                        "model" => Ok(Mode::Model),
                        "u8" => Ok(Mode::U8),
                        "worker" => Ok(Mode::Worker),
                        other => Err(format!("modes are model, u8, worker; got {other:?}").into()),
                    })?
                }
                "--check-sizes" => o.check_sizes = parse_list(&value, parse_size)?,
                "--check-frames" => o.check_frames = value.parse()?,
                "--min-secs" => o.min_secs = value.parse()?,
                "--warmup" => o.warmup = value.parse()?,
                "--style" => o.style = value,
                other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
            }
        }
        o.frames = frames.ok_or_else(|| format!("--frames is required\n{USAGE}"))?;
        Ok(o)
    }
}

/// The real frames of `dir`, sorted by name.
fn load_frames(dir: &Path) -> Result<Vec<Frame>, BoxError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no PNG or JPEG frames in {}", dir.display()).into());
    }
    Ok(paths
        .iter()
        .map(read_image)
        .collect::<Result<Vec<_>, _>>()?)
}

/// `count` frames of `width x height`, cycling through `source` and resizing where needed.
fn frames_at(
    source: &[Frame],
    width: u32,
    height: u32,
    count: usize,
) -> Result<Vec<Frame>, BoxError> {
    let mut sized = Vec::with_capacity(source.len());
    for f in source {
        if (f.width, f.height) == (width, height) {
            sized.push(f.clone());
            continue;
        }
        let img = image::RgbImage::from_raw(f.width, f.height, f.data.clone())
            .ok_or("a frame's buffer does not match its size")?;
        let resized =
            image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
        sized.push(Frame {
            width,
            height,
            data: resized.into_raw(),
        });
    }
    Ok((0..count).map(|i| sized[i % sized.len()].clone()).collect())
}

/// `[N, 3, h, w]` f32 in [0, 1] on `device` from packed RGB24 frames.
fn to_tensor(frames: &[Frame], device: &Device) -> Result<Tensor, BoxError> {
    let (w, h) = (frames[0].width as usize, frames[0].height as usize);
    let mut bytes = Vec::with_capacity(frames.len() * w * h * 3);
    for f in frames {
        bytes.extend_from_slice(&f.data);
    }
    Ok(Tensor::from_vec(bytes, (frames.len(), h, w, 3), device)?
        .to_dtype(DType::F32)?
        .affine(1.0 / 255.0, 0.0)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// The float network as the GPU path runs it: on a GPU [`MultiStyle::run_f32`]; on the CPU
/// stand-in the plain-op path (the fused CPU kernels are the reference).
fn run_model(net: &MultiStyle, x: &Tensor) -> Result<Tensor, BoxError> {
    Ok(if net.device().is_cpu() {
        net.run_f32_reference(x)?
    } else {
        net.run_f32(x)?
    })
}

/// Packed RGB24 frames (one host buffer) up as u8, styled, quantised and back as u8.
fn u8_round_trip(
    net: &MultiStyle,
    bytes: &[u8],
    n: usize,
    h: usize,
    w: usize,
) -> Result<Vec<u8>, BoxError> {
    let device = net.device();
    let x = Tensor::from_slice(bytes, (n, h, w, 3), device)?
        .to_dtype(DType::F32)?
        .affine(1.0 / 255.0, 0.0)?
        .permute((0, 3, 1, 2))?
        .contiguous()?;
    let y = run_model(net, &x)?;
    // floor(v * 255 + 0.5), as the stylizer quantises.
    let out = y
        .clamp(0f32, 1f32)?
        .affine(255.0, 0.5)?
        .clamp(0f32, 255f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .to_dtype(DType::U8)?;
    Ok(out.flatten_all()?.to_vec1::<u8>()?)
}

/// Max and mean absolute difference, and PSNR for a signal peak of `peak`.
fn compare(a: &[f32], b: &[f32], peak: f64) -> (f64, f64, f64) {
    let mut max = 0f64;
    let mut sum = 0f64;
    let mut sq = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (f64::from(*x) - f64::from(*y)).abs();
        max = max.max(d);
        sum += d;
        sq += d * d;
    }
    let n = a.len().max(1) as f64;
    let mse = sq / n;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (peak * peak / mse).log10()
    };
    (max, sum / n, psnr)
}

/// PSNR a dtype must reach against the CPU f32 output to pass: f32 may run cuBLAS/cuDNN in TF32.
fn psnr_floor(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 40.0,
        DType::F16 => 35.0,
        _ => 30.0,
    }
}

/// The report: header, correctness lines and the throughput table, written after every row.
struct Report {
    path: Option<PathBuf>,
    header: String,
    checks: Vec<String>,
    rows: Vec<String>,
}

impl Report {
    fn flush(&self) -> Result<(), BoxError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = self.header.clone();
        text.push_str("\n## Correctness against the CPU path\n\n");
        text.push_str(
            "| check | variant | dtype | size | frames | max abs | mean abs | PSNR dB | verdict |\n",
        );
        text.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.checks {
            text.push_str(c);
            text.push('\n');
        }
        text.push_str("\n## Throughput\n\n");
        text.push_str("| size | batch | dtype | variant | mode | frames/s | ms/batch | batches timed | note |\n");
        text.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(())
    }

    fn check(&mut self, line: String) -> Result<(), BoxError> {
        println!("CHECK {line}");
        self.checks.push(line);
        self.flush()
    }

    fn row(&mut self, line: String) -> Result<(), BoxError> {
        println!("ROW {line}");
        self.rows.push(line);
        self.flush()
    }
}

/// The device under test.
fn gpu(opts: &Options) -> Result<Device, BoxError> {
    if opts.cpu_standin {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this build has no GPU support: build with `--features cuda` (or pass --cpu-standin to self-test on the CPU)".into())
    }
}

/// One line about the device.
fn describe(device: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        let ctx = cuda.cuda_stream().context().clone();
        let name = ctx.name().unwrap_or_else(|e| format!("? ({e})"));
        let cc = ctx
            .compute_capability()
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_else(|e| format!("? ({e})"));
        let mem = ctx
            .total_mem()
            .map(|m| format!("{:.1} GiB", m as f64 / f64::from(1u32 << 30)))
            .unwrap_or_else(|e| format!("? ({e})"));
        return format!("{name}, compute capability {cc}, {mem}");
    }
    if device.is_cpu() {
        "CPU stand-in (self-test, not a measurement)".to_owned()
    } else {
        format!("{device:?}")
    }
}

fn load_net(
    weights: &[f32; 26],
    device: &Device,
    dtype: DType,
    variant: Variant,
) -> Result<MultiStyle, BoxError> {
    let net = MultiStyle::with_dtype(weights, device, dtype)?;
    Ok(match variant {
        Variant::Fused => net,
        Variant::Plain => net.with_plain_ops(),
    })
}

fn run_checks(
    opts: &Options,
    report: &mut Report,
    source: &[Frame],
    spec: &StyleSpec,
    weights: &[f32; 26],
    device: &Device,
) -> Result<(), BoxError> {
    let cpu_net = MultiStyle::new(weights, &Device::Cpu)?;
    let cpu_stylizer = Stylizer::new(spec, StyleOptions::default(), &Device::Cpu)?;
    for &(w, h) in &opts.check_sizes {
        let frames = frames_at(source, w, h, opts.check_frames)?;
        let x_cpu = to_tensor(&frames, &Device::Cpu)?;
        let start = Instant::now();
        let reference: Vec<f32> = cpu_net.run_f32(&x_cpu)?.flatten_all()?.to_vec1()?;
        println!(
            "cpu reference {w}x{h} x{}: {:.0} ms",
            frames.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
        for &variant in &opts.variants {
            for &dtype in &opts.dtypes {
                let result = (|| -> Result<(f64, f64, f64), BoxError> {
                    let net = load_net(weights, device, dtype, variant)?;
                    let x = to_tensor(&frames, device)?;
                    let y: Vec<f32> = run_model(&net, &x)?
                        .to_device(&Device::Cpu)?
                        .flatten_all()?
                        .to_vec1()?;
                    Ok(compare(&y, &reference, 1.0))
                })();
                let line = match result {
                    Ok((max, mean, psnr)) => format!(
                        "| float | {} | {} | {w}x{h} | {} | {max:.3e} | {mean:.3e} | {psnr:.1} | {} |",
                        variant.name(),
                        dtype_name(dtype),
                        frames.len(),
                        if psnr >= psnr_floor(dtype) {
                            "PASS"
                        } else {
                            "FAIL"
                        }
                    ),
                    Err(e) => format!(
                        "| float | {} | {} | {w}x{h} | {} | - | - | - | ERROR: {} |",
                        variant.name(),
                        dtype_name(dtype),
                        frames.len(),
                        one_line(e.as_ref())
                    ),
                };
                report.check(line)?;
            }
        }
        // The worker's own path: Stylizer on the device (f16 and fused on CUDA) against the CPU.
        let result = (|| -> Result<(f64, f64, f64), BoxError> {
            let expected = bytes_of(&cpu_stylizer.style_batch(&frames)?);
            let stylizer = Stylizer::new(spec, StyleOptions::default(), device)?;
            let got = bytes_of(&stylizer.style_batch(&frames)?);
            let as_f32 = |v: &[u8]| v.iter().map(|&b| f32::from(b)).collect::<Vec<f32>>();
            Ok(compare(&as_f32(&got), &as_f32(&expected), 255.0))
        })();
        let line = match result {
            Ok((max, mean, psnr)) => format!(
                "| u8 (Stylizer) | default | default | {w}x{h} | {} | {max:.0} levels | {mean:.3} levels | {psnr:.1} | {} |",
                frames.len(),
                if psnr >= psnr_floor(DType::F16) {
                    "PASS"
                } else {
                    "FAIL"
                }
            ),
            Err(e) => format!(
                "| u8 (Stylizer) | default | default | {w}x{h} | {} | - | - | - | ERROR: {} |",
                frames.len(),
                one_line(e.as_ref())
            ),
        };
        report.check(line)?;
    }
    Ok(())
}

fn bytes_of(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.data.iter().copied()).collect()
}

/// An error and its sources on one line, each cut to its first line (Candle appends a backtrace
/// when `RUST_BACKTRACE` is set; table cells hold no newlines or pipes).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let first = |e: &dyn std::error::Error| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .replace('|', " ")
    };
    let mut text = first(e);
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&first(s));
        source = s.source();
    }
    text
}

/// Time `step` (one batch) after `warmup` calls until `min_secs` have passed, at least 3 times.
fn time_batches(
    opts: &Options,
    device: &Device,
    mut step: impl FnMut() -> Result<(), BoxError>,
) -> Result<(f64, usize), BoxError> {
    for _ in 0..opts.warmup {
        step()?;
    }
    device.synchronize()?;
    let start = Instant::now();
    let mut count = 0;
    while count < 3 || start.elapsed().as_secs_f64() < opts.min_secs {
        step()?;
        count += 1;
    }
    device.synchronize()?;
    Ok((start.elapsed().as_secs_f64() / count as f64, count))
}

#[allow(clippy::too_many_arguments)] // one measurement's coordinates
fn measure(
    opts: &Options,
    device: &Device,
    spec: &StyleSpec,
    weights: &[f32; 26],
    frames: &[Frame],
    dtype: DType,
    variant: Variant,
    mode: Mode,
) -> Result<(f64, usize), BoxError> {
    let (w, h, n) = (
        frames[0].width as usize,
        frames[0].height as usize,
        frames.len(),
    );
    match mode {
        Mode::Model => {
            let net = load_net(weights, device, dtype, variant)?;
            let x = to_tensor(frames, device)?;
            time_batches(opts, device, || {
                run_model(&net, &x)?;
                Ok(())
            })
        }
        Mode::U8 => {
            let net = load_net(weights, device, dtype, variant)?;
            let bytes = bytes_of(frames);
            time_batches(opts, device, || {
                let out = u8_round_trip(&net, &bytes, n, h, w)?;
                if out.len() != bytes.len() {
                    return Err("the round trip returned the wrong number of bytes".into());
                }
                Ok(())
            })
        }
        Mode::Worker => {
            let stylizer = Stylizer::new(spec, StyleOptions::default(), device)?;
            time_batches(opts, device, || {
                let out = stylizer.style_batch(frames)?;
                if out.len() != n {
                    return Err("the stylizer returned the wrong number of frames".into());
                }
                Ok(())
            })
        }
    }
}

fn run() -> Result<(), BoxError> {
    let opts = Options::parse()?;
    let device = gpu(&opts)?;
    let spec: StyleSpec = opts.style.parse()?;
    let weights = spec
        .weights()
        .ok_or("--style must be built-in styles or a blend of them")?;
    let source = load_frames(&opts.frames)?;
    let features = [
        ("cuda", cfg!(feature = "cuda")),
        ("cudnn", cfg!(feature = "cudnn")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect::<Vec<_>>()
    .join(", ");
    let mut header = String::new();
    writeln!(header, "# multistyle GPU benchmark\n")?;
    writeln!(header, "- device: {}", describe(&device))?;
    writeln!(
        header,
        "- build features: {}",
        if features.is_empty() {
            "none"
        } else {
            &features
        }
    )?;
    writeln!(
        header,
        "- style: {}; frames: {} real frames from {} ({}x{}), resized per size",
        opts.style,
        source.len(),
        opts.frames.display(),
        source[0].width,
        source[0].height
    )?;
    writeln!(
        header,
        "- timing: {} warm-up batches, then at least {} s and 3 batches per row; frames/s = batch x batches / seconds",
        opts.warmup, opts.min_secs
    )?;
    writeln!(
        header,
        "- modes: model = MultiStyle::run_f32 on a batch already on the GPU (f32 in and out, the compute dtype inside); u8 = RGB24 frames in host memory -> GPU -> u8 frames in host memory; worker = Stylizer::style_batch (f16, fused)"
    )?;
    print!("{header}");
    let mut report = Report {
        path: opts.out.clone(),
        header,
        checks: Vec::new(),
        rows: Vec::new(),
    };
    report.flush()?;

    // The first use of each kernel module pays a JIT compile: do it before any timing.
    let start = Instant::now();
    {
        let warm = frames_at(&source, 64, 48, 1)?;
        for &dtype in &opts.dtypes {
            for &variant in &opts.variants {
                // A failure here shows again, with its row, where it is measured.
                let first = load_net(&weights, &device, dtype, variant)
                    .and_then(|net| run_model(&net, &to_tensor(&warm, &device)?));
                if let Err(e) = first {
                    println!(
                        "first call {} {} failed: {}",
                        dtype_name(dtype),
                        variant.name(),
                        one_line(e.as_ref())
                    );
                }
            }
        }
        device.synchronize()?;
    }
    println!(
        "first calls (kernel JIT): {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    run_checks(&opts, &mut report, &source, &spec, &weights, &device)?;

    for &(w, h) in &opts.sizes {
        for &batch in &opts.batches {
            let frames = frames_at(&source, w, h, batch)?;
            for &dtype in &opts.dtypes {
                for &variant in &opts.variants {
                    for &mode in &opts.modes {
                        if mode == Mode::Worker
                            && (dtype != DType::F16 || variant != Variant::Fused)
                        {
                            continue;
                        }
                        let line = match measure(
                            &opts, &device, &spec, &weights, &frames, dtype, variant, mode,
                        ) {
                            Ok((secs, count)) => format!(
                                "| {w}x{h} | {batch} | {} | {} | {} | {:.1} | {:.2} | {count} | |",
                                dtype_name(dtype),
                                variant.name(),
                                mode.name(),
                                batch as f64 / secs,
                                secs * 1e3
                            ),
                            Err(e) => format!(
                                "| {w}x{h} | {batch} | {} | {} | {} | - | - | 0 | ERROR: {} |",
                                dtype_name(dtype),
                                variant.name(),
                                mode.name(),
                                one_line(e.as_ref())
                            ),
                        };
                        report.row(line)?;
                    }
                }
            }
        }
    }
    println!("BENCH_DONE");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu_bench: {e}");
        std::process::exit(1);
    }
}
