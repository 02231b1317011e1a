#![allow(clippy::unwrap_used)]
//! Storage faults: Azurite is stopped in the middle of a job, for longer than one request's
//! retries may last, and started again on the same port with the same data. The job must complete
//! with one output, frame-exact with its audio, every batch done once, and the logs must show the
//! retries and their backoff.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stylefleet::store::Store;
use stylefleet::store::azure::{RETRY_ATTEMPTS, RETRY_FIRST};
use support::azurite::{Azurite, check};

/// Frames of the clip and frames per batch: ten batches, so that most of the job is still ahead
/// when the first one is done.
const FRAMES: u32 = 40;
const BATCH_FRAMES: u32 = 4;
const BATCHES: usize = (FRAMES / BATCH_FRAMES) as usize;

/// How long the store is away: longer than the shortest run of object_store's retries of one
/// request (eight backoffs from 0.25 s), so that some requests fail for good and their messages
/// are redelivered, as well as requests that outlast it by retrying.
const OUTAGE: Duration = Duration::from_secs(7);

/// Names of the done markers of every job in the store.
async fn done_markers(store: &Store) -> Vec<String> {
    store
        .list("jobs")
        .await
        .unwrap()
        .iter()
        .map(|m| m.location.to_string())
        .filter(|n| n.contains("/done/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_store_going_away() {
    let mut azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = support::clips::cfr_with_aac(dir.path(), 96, 64, FRAMES, 25);
    let data = dir.path().join("data");
    let out = dir.path().join("styled.mp4");

    let mut child = Command::new(env!("CARGO_BIN_EXE_stylefleet"))
        .envs(azurite.env())
        // Workers inherit these: JSON logs at info, so object_store's retries are in them.
        .env("STYLEFLEET_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("STYLEFLEET_RETRY_MIN_SECS", "0.5")
        .args(["process", clip.to_str().unwrap()])
        .args(["--style", "0", "--workers", "1"])
        .args(["--batch-frames", &BATCH_FRAMES.to_string(), "-o"])
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .args(["--store", "az://faults"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr as it comes (a full pipe would stall the command).
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let stderr = child.stderr.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let logs = || lines.lock().unwrap().join("\n");

    // Wait for the first done marker, then take the store away while the job is under way.
    let store = Store::open(&azurite.container_url("faults")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "stylefleet exited ({status}) before any batch was done:\n{}",
                logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no batch done within 60 s:\n{}",
            logs()
        );
        let done = done_markers(&store).await;
        if !done.is_empty() {
            break done.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    azurite.stop();
    let stopped_at = Instant::now();
    // The outage has to fall in the middle of the job, or this test proves nothing.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job ended before the store went away:\n{}",
        logs()
    );
    assert!(
        done_before < BATCHES,
        "all batches were done before the store went away"
    );
    tokio::time::sleep(OUTAGE).await;
    azurite.restart();
    eprintln!(
        "store away for {:.1} s with {done_before} of {BATCHES} batches done",
        stopped_at.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the job did not finish within 120 s of the restart:\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    reader.join().unwrap();
    assert!(status.success(), "stylefleet process: {status}\n{}", logs());

    // Nothing lost, nothing doubled: one output, one done marker per batch, frame-exact.
    check::frame_exact(&clip, &out);
    let outputs = store.list("output").await.unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let blob = store
        .get(outputs[0].location.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        blob,
        std::fs::read(&out).unwrap(),
        "the output blob is the file"
    );
    let done = done_markers(&store).await;
    assert_eq!(done.len(), BATCHES, "{done:?}");

    // The logs: object_store retried requests with growing backoff while the store was away.
    let lines = lines.lock().unwrap();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.len() * 2 > lines.len(),
        "the logs are not JSON:\n{}",
        lines.join("\n")
    );
    let message = |e: &serde_json::Value| {
        e["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let retries: Vec<String> = events
        .iter()
        .filter(|e| e["target"].as_str() == Some("object_store::client::retry"))
        .map(message)
        .collect();
    let backoffs: Vec<f64> = retries
        .iter()
        .filter_map(|m| {
            let rest = m.split("backing off for ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect();
    assert!(
        !backoffs.is_empty(),
        "no request retry with a backoff in the logs:\n{}",
        lines.join("\n")
    );
    assert!(
        retries.iter().any(|m| m.contains("retry 2 of")),
        "no request was retried twice: {retries:#?}"
    );
    // Each retry of a request waits a random time up to twice the previous wait, from
    // RETRY_FIRST: over seven seconds of refused connections, some wait must have grown.
    let longest = backoffs.iter().copied().fold(0.0, f64::max);
    assert!(
        longest > 1.5 * RETRY_FIRST.as_secs_f64(),
        "the backoff never grew past its first steps: {backoffs:?}"
    );
    // A request that ran out of retries surfaced as a transient failure that was tried again
    // later (the batch abandoned with a delay, the progress poll repeated), never as a failure for
    // good.
    let at_level = |level: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["level"].as_str() == Some(level))
            .map(|e| {
                let f = &e["fields"];
                let detail = f["reason"].as_str().or(f["error"].as_str());
                format!("{} {}", message(e), detail.unwrap_or_default())
            })
            .collect()
    };
    let errors = at_level("ERROR");
    assert!(errors.is_empty(), "errors in the logs: {errors:#?}");
    let warnings = at_level("WARN");
    let exhausted = format!("after {RETRY_ATTEMPTS} retries");
    let gave_up = warnings.iter().filter(|w| w.contains(&exhausted)).count();
    if gave_up > 0 {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("retrying later") || w.starts_with("cannot read the job")),
            "a request ran out of retries but nothing was tried again: {warnings:#?}"
        );
    }
    eprintln!(
        "{} request retries logged (longest backoff {longest:.2} s): {retries:#?}\n\
         {gave_up} warnings report a request out of retries; all warnings: {warnings:#?}",
        retries.len()
    );
}
