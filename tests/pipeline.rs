#![allow(clippy::unwrap_used)]
//! The embedded pipeline end to end, through the `stylefleet` binary and the library:
//!
//! - frame-exact output for every awkward kind of clip (`process`, checked with ffprobe);
//! - the same event twice, and the same bytes uploaded twice, make one job;
//! - malformed messages are dead-lettered on first delivery with a reason, and replaying a
//!   dead-lettered batch brings its job to done (`--dry-run` changes nothing);
//! - bad inputs fail their own job with a one-line reason and touch nothing else.
//!
//! Every test works in its own data folder with short queue timings (see
//! `support::pipeline::FAST_QUEUE`) on clips of a few dozen small frames.

mod support;

use std::path::Path;

use support::clips;
use support::pipeline::{self as sp, assert_frame_exact, assert_success};

// ---------------------------------------------------------------------------------------------
// Frame-exact output
// ---------------------------------------------------------------------------------------------

/// Styles `clip` with `process` in batches of `batch` and checks the result against the source;
/// returns the data folder's job id.
async fn styles_frame_exact(dir: &Path, clip: &Path, workers: u32, batch: u32) -> String {
    let data = dir.join("data");
    let out = dir.join("styled.mp4");
    let run = sp::process(&data, clip, &out, workers, batch);
    assert_success("stylefleet process", &run);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        out.display().to_string(),
        "process prints the output path"
    );
    assert_frame_exact(clip, &out).await;

    let job = sp::job_of_process(&run);
    let view = sp::job_status(&data, &job);
    assert_eq!(view["state"], "done", "{view}");
    let frames = clips_frames(clip);
    assert_eq!(view["frames_done"], frames, "{view}");
    assert_eq!(view["frames_total"], frames, "{view}");
    let batches = frames.div_ceil(u64::from(batch));
    assert_eq!(view["batches_total"], batches, "{view}");
    assert_eq!(
        sp::files(&data.join("jobs").join(&job).join("done")).len() as u64,
        batches,
        "one done marker per batch"
    );
    let outputs = sp::tree(&data.join("output"));
    assert_eq!(outputs.len(), 1, "exactly one output: {outputs:?}");
    assert_eq!(
        std::fs::read(data.join("output").join(&outputs[0])).unwrap(),
        std::fs::read(&out).unwrap(),
        "the copied output is the stored one"
    );
    job
}

/// Video frames in `clip`, counted by ffprobe.
fn clips_frames(clip: &Path) -> u64 {
    support::azurite::check::video_times(clip).len() as u64
}

#[tokio::test]
async fn constant_frame_rate_with_aac() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 24, 25);
    styles_frame_exact(dir.path(), &clip, 2, 8).await;
}

#[tokio::test]
async fn variable_frame_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::vfr(dir.path());
    // The clip really is VFR: its frame intervals differ.
    let times = support::azurite::check::video_times(&clip);
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 1e4).round() as i64)
        .collect();
    assert!(gaps.iter().any(|g| *g != gaps[0]), "not VFR: {gaps:?}");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn odd_width_and_height() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::odd_size(dir.path());
    assert_eq!(sp::geometry(&clip).0 % 2, 1);
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn rotation_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::rotated(dir.path(), 90);
    assert_ne!(sp::geometry(&clip).2, 0, "the source carries a rotation");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn no_audio() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::no_audio(dir.path());
    styles_frame_exact(dir.path(), &clip, 1, 6).await;
    let out = dir.path().join("styled.mp4");
    assert_eq!(sp::stream_start(&out, "a"), None, "no audio appears");
}

#[tokio::test]
async fn a_single_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::single_frame(dir.path());
    assert_eq!(clips_frames(&clip), 1);
    styles_frame_exact(dir.path(), &clip, 1, 4).await;
}

#[tokio::test]
async fn a_frame_count_the_batch_size_does_not_divide() {
    let dir = tempfile::tempdir().unwrap();
    // 23 frames in batches of 5: four full batches and one of 3 frames.
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 23, 25);
    let job = styles_frame_exact(dir.path(), &clip, 1, 5).await;
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("data/jobs")
                .join(&job)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ranges: Vec<(u64, u64)> = manifest["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["frames"][0].as_u64().unwrap(),
                b["frames"][1].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges, [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]);
}

#[tokio::test]
async fn a_single_keyframe_for_the_whole_clip() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::single_keyframe(dir.path());
    let keyframes = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
        ])
        .args(["-show_entries", "frame=pts", "-of", "csv=p=0"])
        .arg(&clip)
        .output()
        .unwrap();
    let keyframes = String::from_utf8_lossy(&keyframes.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(keyframes, 1, "the source has one keyframe");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}
