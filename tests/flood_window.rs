#![allow(clippy::unwrap_used)]
//! The per-job flood limit: the splitter queues only a job's first `window` batches, and each
//! finished batch queues the one `window` places after it, so every batch still runs exactly once.

mod support;

use std::process::Command;
use std::sync::Arc;

use stylefleet::job::StyleChoice;
use stylefleet::queue::sqlite::{QueueConfig, SqliteQueue};
use stylefleet::queue::{BATCHES, Queue};
use stylefleet::settings::{FloodLimits, Settings};
use stylefleet::stage::Context;
use stylefleet::stage::split::{SplitOutcome, split};
use stylefleet::store::Store;

#[tokio::test]
async fn the_splitter_queues_only_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clip = support::clips::cfr_with_aac(dir.path(), 64, 48, 20, 25);
    let data = dir.path().join("data");
    let store = Store::local(&data).unwrap();
    store
        .upload(&clip, "input/0/clip.mp4", false)
        .await
        .unwrap();
    let queue: Arc<dyn Queue> =
        Arc::new(SqliteQueue::open(data.join("queue.sqlite"), QueueConfig::default()).unwrap());
    let settings = Settings {
        batch_frames: 2,
        flood: FloodLimits {
            max_queued_per_job: 3,
            ..FloodLimits::default()
        },
        ..Settings::default()
    };
    let ctx = Context {
        store: store.clone(),
        logs: store,
        queue: queue.clone(),
        settings,
        max_delivery_count: 5,
        scratch: data.join("scratch"),
        worker_name: "test".into(),
    };
    let style = StyleChoice::new("0", 1.0, false);
    let outcome = split(&ctx, "input/0/clip.mp4", &style).await.unwrap();
    let SplitOutcome::Planned {
        batches, posted, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((batches, posted), (10, 3));
    assert_eq!(queue.backlog(BATCHES).await.unwrap(), 3);
}

#[test]
fn a_small_window_still_runs_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clip = support::clips::cfr_with_aac(dir.path(), 64, 48, 20, 25);
    let out = dir.path().join("out.mp4");
    let status = Command::new(env!("CARGO_BIN_EXE_stylefleet"))
        .args([
            "process",
            clip.to_str().unwrap(),
            "--style",
            "0",
            "--workers",
            "2",
        ])
        .args([
            "--batch-frames",
            "2",
            "--max-queued-per-job",
            "2",
            "-o",
            out.to_str().unwrap(),
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .status()
        .unwrap();
    assert!(status.success());
    let frames = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&frames.stdout).trim(), "20");
    // Ten batches, each run once: ten done markers, ten first-attempt logs and no second ones.
    let job_dirs = support::pipeline::job_dirs(&dir.path().join("data"));
    assert_eq!(job_dirs.len(), 1);
    let job = dir.path().join("data/jobs").join(&job_dirs[0]);
    assert_eq!(std::fs::read_dir(job.join("done")).unwrap().count(), 10);
    let logs = dir.path().join("data/logs").join(job.file_name().unwrap());
    let attempts: Vec<String> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("batch-"))
        .collect();
    assert_eq!(attempts.len(), 10, "{attempts:?}");
    assert!(
        attempts.iter().all(|n| n.ends_with(".attempt-1.log")),
        "{attempts:?}"
    );
}
