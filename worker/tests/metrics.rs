//! `GET /metrics` on a real `stylefleet-worker` process's health server, after it styled a
//! job's batches: the Prometheus text has the batches and frames counters with the job's counts,
//! with no exporter configured (the worker scrapes in any case).

#![allow(clippy::unwrap_used)]

#[path = "../../tests/support/clips.rs"]
mod clips;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet::stage::split::{SplitOutcome, split, style_for_input};

const FRAMES: u64 = 16;
const BATCH_FRAMES: u64 = 8;
const SOURCE: &str = "input/ochre-sketch/clip.mp4";

/// Plans a job of two batches of 8 frames at 64x48 in `data`.
async fn planned_job(data: &Path) {
    let settings = Settings {
        batch_frames: BATCH_FRAMES,
        ..Settings::default()
    };
    let ctx = setup::context(&Location::embedded(data), settings)
        .await
        .unwrap();
    let clip_dir = data.join("clips");
    std::fs::create_dir_all(&clip_dir).unwrap();
    let clip = clips::cfr_with_aac(&clip_dir, 64, 48, FRAMES as u32, 24);
    let input = data.join(SOURCE);
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::copy(&clip, &input).unwrap();
    let style = style_for_input(&ctx, SOURCE).await.unwrap();
    match split(&ctx, SOURCE, &style).await.unwrap() {
        SplitOutcome::Planned { batches, .. } => assert_eq!(batches, 2),
        other => panic!("{other:?}"),
    }
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the first sample of `family` whose labels contain `labels`.
fn sample(text: &str, family: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_batches_and_frames_a_worker_styled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    planned_job(data).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let log = data.join("worker.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_stylefleet-worker"))
            .env("STYLEFLEET_DATA", data)
            .env("STYLEFLEET_SCRATCH", data.join("scratch"))
            .env("STYLEFLEET_DEVICE", "cpu")
            .env("STYLEFLEET_HEALTH_PORT", port.to_string())
            .env("RAYON_NUM_THREADS", "1")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(180);
    let text = loop {
        if let Ok(Some(status)) = worker.0.try_wait() {
            panic!(
                "the worker exited with {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(response) = reqwest::get(&url).await {
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            if sample(&text, "stylefleet_batches_total", "outcome=\"completed\"") == Some(2.0) {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker never finished both batches\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(&text, "stylefleet_frames_total", ""),
        Some(FRAMES as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "stylefleet_batch_duration_seconds_count",
            "outcome=\"completed\""
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE stylefleet_frames_total counter"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "stylefleet_failures_total", ""),
        None,
        "no failure: {text}"
    );
}
