#![allow(clippy::unwrap_used)]
//! Temporal stabilisation through the real pipeline (`stylefleet process`, worker processes, the
//! aggregator): on by default, it lowers the flicker of the styled video against per-frame
//! styling, keeps the output frame-exact, and joins batches without seams; off, the chunks are
//! joined as they are; the choice is part of the job (id and manifest).
//!
//! The clip: `testsrc2` (still colour bars and text around a moving part) with per-frame noise of
//! a camera sensor, so that per-frame styling shimmers on the still parts.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use stylefleet::temporal::metric::{flicker_pairs, mean_scored};
use support::clips;
use support::pipeline::{self as sp, assert_frame_exact, assert_success};

const BATCH: usize = 8;

/// 40 frames of 192x112 `testsrc2` with temporal noise, 25 fps, with AAC audio.
fn noisy_clip(dir: &Path) -> PathBuf {
    let out = dir.join("noisy.mp4");
    clips::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=192x112:rate=25,noise=alls=10:allf=t",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "40",
        "-t",
        "1.6",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "16",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        out.to_str().unwrap(),
    ]);
    out
}

/// `process` with `--style 0`, batches of [`BATCH`], and `extra` arguments.
fn process(data: &Path, clip: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("process"),
        clip.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("--style"),
        OsStr::new("0"),
        OsStr::new("--workers"),
        OsStr::new("2"),
        OsStr::new("--batch-frames"),
        OsStr::new("8"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let run = sp::stylefleet(data, args);
    assert_success("stylefleet process", &run);
    run
}

/// The frames of `video` as 320x180 luma, as the flicker is defined.
fn small_luma(video: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(video)
        .args(["-vf", "scale=320:180,format=gray", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(320 * 180)
        .map(<[u8]>::to_vec)
        .collect()
}

/// The hashes of the decoded pictures of the first video stream of `file`, in order (packets
/// are not compared: joining chunks puts each chunk's parameter sets into its first packet).
fn video_frame_hashes(file: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect()
}

fn manifest(data: &Path, job: &str) -> serde_json::Value {
    let path = data.join("jobs").join(job).join("manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn stabilised_output_flickers_less_is_frame_exact_and_has_no_seams() {
    let dir = tempfile::tempdir().unwrap();
    let clip = noisy_clip(dir.path());
    let data = dir.path().join("data");
    let (on, off) = (dir.path().join("on.mp4"), dir.path().join("off.mp4"));
    let run_on = process(&data, &clip, &on, &[]);
    let run_off = process(&data, &clip, &off, &["--temporal", "off"]);
    assert_frame_exact(&clip, &on).await;
    assert_frame_exact(&clip, &off).await;

    // The option is part of the job: two jobs, each recording its choice.
    let (job_on, job_off) = (sp::job_of_process(&run_on), sp::job_of_process(&run_off));
    assert_ne!(job_on, job_off, "stabilised and unstabilised are two jobs");
    assert!(manifest(&data, &job_on)["temporal"]["strength"].is_number());
    assert!(manifest(&data, &job_off).get("temporal").is_none());
    let again = process(
        &data,
        &clip,
        &dir.path().join("again.mp4"),
        &["--temporal", "on"],
    );
    assert_eq!(
        sp::job_of_process(&again),
        job_on,
        "the same choice finds the same job"
    );

    // Off: the chunks joined as they are, not re-encoded: picture for picture.
    let chunks = data.join("jobs").join(&job_off).join("chunks");
    let mut expected = Vec::new();
    for name in sp::files(&chunks) {
        expected.extend(video_frame_hashes(&chunks.join(name)));
    }
    assert_eq!(video_frame_hashes(&off), expected);

    // On: less flicker than per-frame styling, and no more at batch seams than elsewhere.
    let source = small_luma(&clip);
    let pairs_on = flicker_pairs(&source, &small_luma(&on));
    let pairs_off = flicker_pairs(&source, &small_luma(&off));
    let (f_on, f_off) = (mean_scored(&pairs_on), mean_scored(&pairs_off));
    eprintln!("flicker: per-frame {f_off:.2}, stabilised {f_on:.2}");
    assert!(f_off > 1.0, "the per-frame output flickers ({f_off:.2})");
    assert!(
        f_on < 0.6 * f_off,
        "stabilised {f_on:.2} against per-frame {f_off:.2}"
    );
    let seams: Vec<Option<f64>> = pairs_on
        .iter()
        .enumerate()
        .filter(|(p, _)| (p + 1) % BATCH == 0)
        .map(|(_, v)| *v)
        .collect();
    let f_seams = mean_scored(&seams);
    eprintln!("flicker at seams: {f_seams:.2}");
    assert!(
        f_seams <= 1.5 * f_on + 0.3,
        "seam pairs {f_seams:.2} against all pairs {f_on:.2}"
    );
}
