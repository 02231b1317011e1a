//! SIGTERM to a `stylefleet-worker` process while it styles a batch, as Container Apps sends when
//! KEDA scales in. The job lives in the embedded default (a local store and the SQLite queue),
//! planned in this process; the workers are real processes of the container's entrypoint.
//!
//! - A short grace: the worker exits within it, releasing the batch in hand at once (not left
//!   locked), and a second worker completes the job with exactly one output.
//! - A long grace: the worker finishes the batch in hand, takes no other, and exits.
//! - A second SIGTERM: the worker exits at once; the batch comes back when its lock expires.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/support/clips.rs"]
mod clips;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use stylefleet::consume::{ConsumeOptions, StitchHandler, consume};
use stylefleet::job::{JobId, paths};
use stylefleet::queue::{BATCHES, STITCH};
use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet::stage::Context;
use stylefleet::stage::split::{SplitOutcome, split, style_for_input};

const FRAMES: u64 = 96;
const BATCH_FRAMES: u64 = 24;
const BATCHES_IN_JOB: usize = (FRAMES / BATCH_FRAMES) as usize;
const SOURCE: &str = "input/ochre-sketch/clip.mp4";

/// A job of four batches of 24 frames at 320x240 (a few seconds each on one CPU thread).
async fn planned_job(data: &Path) -> (Context, JobId, PathBuf) {
    let settings = Settings {
        batch_frames: BATCH_FRAMES,
        ..Settings::default()
    };
    let ctx = setup::context(&Location::embedded(data), settings)
        .await
        .unwrap();
    let clip_dir = data.join("clips");
    std::fs::create_dir_all(&clip_dir).unwrap();
    let clip = clips::cfr_with_aac(&clip_dir, 320, 240, FRAMES as u32, 24);
    let input = data.join(SOURCE);
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::copy(&clip, &input).unwrap();
    let style = style_for_input(&ctx, SOURCE).await.unwrap();
    let job = match split(&ctx, SOURCE, &style).await.unwrap() {
        SplitOutcome::Planned { job, batches, .. } => {
            assert_eq!(batches as usize, BATCHES_IN_JOB);
            job
        }
        other => panic!("{other:?}"),
    };
    (ctx, job, clip)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A worker process, killed when dropped.
struct Worker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Worker {
    fn start(data: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = data.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stylefleet-worker"))
            .env("STYLEFLEET_DATA", data)
            .env("STYLEFLEET_SCRATCH", data.join(format!("scratch-{name}")))
            .env("STYLEFLEET_DEVICE", "cpu")
            .env("STYLEFLEET_HEALTH_PORT", port.to_string())
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Worker { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn health(&self) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let response = reqwest::get(url).await.ok()?;
        serde_json::from_slice(&response.bytes().await.ok()?).ok()
    }

    /// Waits until the worker holds a batch; returns its message id.
    async fn holding_a_batch(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the worker exited with {status}\n{}", self.log());
            }
            if let Some(h) = self.health().await
                && h["state"] == "working"
                && let Some(id) = h["current"].as_str()
            {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the worker never took a batch\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Waits up to `within` for the exit; returns the status and how long it took.
    async fn exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "the worker did not exit within {within:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batch_of(id: &str) -> u32 {
    id.rsplit_once(':').unwrap().1.parse().unwrap()
}

async fn done(ctx: &Context, job: &JobId) -> Vec<u32> {
    let mut done: Vec<u32> = ctx
        .store
        .list(&paths::done_dir(job))
        .await
        .unwrap()
        .iter()
        .map(|m| {
            m.location
                .filename()
                .unwrap()
                .trim_end_matches(".json")
                .parse()
                .unwrap()
        })
        .collect();
    done.sort();
    done
}

/// Receives every batch message that can be received now, checks that together with the done
/// batches they cover the plan (nothing lost, nothing still locked), and releases them again.
async fn all_batches_accounted_for(ctx: &Context, job: &JobId) -> Vec<u32> {
    let deliveries = ctx
        .queue
        .receive(BATCHES, 100, Duration::from_millis(300))
        .await
        .unwrap();
    let mut seen: Vec<u32> = deliveries.iter().map(|d| batch_of(&d.id)).collect();
    for d in &deliveries {
        ctx.queue.abandon(d, None).await.unwrap();
    }
    let waiting = seen.clone();
    seen.extend(done(ctx, job).await);
    seen.sort();
    assert_eq!(
        seen,
        (0..BATCHES_IN_JOB as u32).collect::<Vec<_>>(),
        "receivable now: {waiting:?}"
    );
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_batch_and_another_worker_completes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (ctx, job, clip) = planned_job(data).await;

    // A lock far longer than the test waits: a batch that was not released stays invisible.
    let grace = Duration::from_millis(300);
    let mut first = Worker::start(
        data,
        "first",
        &[
            ("STYLEFLEET_SHUTDOWN_GRACE_SECS", "0.3"),
            ("STYLEFLEET_LOCK_SECS", "120"),
        ],
    );
    let in_hand = first.holding_a_batch().await;
    first.signal();
    let (status, took) = first.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", first.log());
    // The grace, plus settling the message and leaving (a loaded machine is slow to schedule).
    assert!(
        took < grace + Duration::from_secs(5),
        "took {took:?}\n{}",
        first.log()
    );
    let waiting = all_batches_accounted_for(&ctx, &job).await;
    let batch = batch_of(&in_hand);
    assert!(
        waiting.contains(&batch) || done(&ctx, &job).await.contains(&batch),
        "batch {batch} was lost"
    );
    assert!(
        done(&ctx, &job).await.len() < BATCHES_IN_JOB,
        "the first worker should not have finished the job"
    );

    let mut second = Worker::start(
        data,
        "second",
        &[
            ("STYLEFLEET_EXIT_WHEN_IDLE_SECS", "3"),
            ("STYLEFLEET_LOCK_SECS", "120"),
        ],
    );
    let (status, _) = second.exit(Duration::from_secs(300)).await;
    assert!(status.success(), "{status}\n{}", second.log());
    assert_eq!(done(&ctx, &job).await.len(), BATCHES_IN_JOB);

    // The aggregator, in this process.
    let options = ConsumeOptions {
        max_deliveries: Some(1),
        ..ConsumeOptions::new(STITCH)
    };
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        consume(&ctx, &StitchHandler, &options, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.completed, 1, "{report:?}");

    let outputs = ctx.store.list("output").await.unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let output = ctx.store.local_path(outputs[0].location.as_ref()).unwrap();
    let source = stylefleet::media::probe(&clip).await.unwrap();
    let styled = stylefleet::media::probe(&output).await.unwrap();
    assert_eq!(styled.frames.len(), source.frames.len());
    assert_eq!(styled.frames.len() as u64, FRAMES);
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_grace_finishes_the_batch_in_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (ctx, job, _) = planned_job(data).await;
    let mut worker = Worker::start(
        data,
        "worker",
        &[
            ("STYLEFLEET_SHUTDOWN_GRACE_SECS", "120"),
            // Shorter than a batch, so that the lock must be renewed while it is styled.
            ("STYLEFLEET_LOCK_SECS", "2"),
        ],
    );
    worker.holding_a_batch().await;
    let before = done(&ctx, &job).await;
    // A worker holds up to two batches: one on the device, the next one decoded or waiting for
    // it (released at once on shutdown), or the one before it being encoded.
    let held: Vec<String> = worker.health().await.map_or_else(Vec::new, |h| {
        h["in_hand"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    });
    worker.signal();
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(h) = worker.health().await {
        assert_eq!(h["state"], "draining", "{h}");
    }
    let (status, _) = worker.exit(Duration::from_secs(120)).await;
    assert!(status.success(), "{status}\n{}", worker.log());
    let after = done(&ctx, &job).await;
    assert!(
        held.iter().any(|id| after.contains(&batch_of(id))),
        "no batch in hand ({held:?}) was finished\n{}",
        worker.log()
    );
    assert!(
        after.len() > before.len() && after.len() <= before.len() + held.len(),
        "it took another batch: {before:?} then {after:?}, {held:?} in hand"
    );
    // Its lock was renewed (2 s lock, longer batch) and released: the rest can be received now.
    let waiting = all_batches_accounted_for(&ctx, &job).await;
    assert_eq!(waiting.len(), BATCHES_IN_JOB - after.len());
    assert!(
        !worker.log().contains("could not settle"),
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (ctx, job, _) = planned_job(data).await;
    let mut worker = Worker::start(
        data,
        "worker",
        &[
            ("STYLEFLEET_SHUTDOWN_GRACE_SECS", "120"),
            ("STYLEFLEET_LOCK_SECS", "3"),
        ],
    );
    let in_hand = worker.holding_a_batch().await;
    worker.signal();
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker.signal();
    let (status, took) = worker.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(130), "{}", worker.log());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let batch = batch_of(&in_hand);
    if !done(&ctx, &job).await.contains(&batch) {
        // Abandoned by nobody: it comes back when the lock runs out.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let waiting = all_batches_accounted_for(&ctx, &job).await;
        assert!(waiting.contains(&batch), "{waiting:?}");
    }
}
