#![cfg(feature = "style")]
#![allow(clippy::unwrap_used)]
//! Faults placed at named points (`stylefleet::fault`, armed through `STYLEFLEET_FAULTS` and fired
//! once per `STYLEFLEET_FAULT_DIR`), never by sleeps:
//!
//! - kill -9 of a worker after its chunk and before the done marker, after the marker and before
//!   the follow-ups, after the follow-ups and before the queue settlement: one `process` run
//!   completes, and no batch is styled again once its marker exists;
//! - kill -9 of `process` itself between the output claim and the upload, after the upload and
//!   before `done`, and in the middle of a streamed output upload (Azurite, where uploads go in
//!   parts): the same command run again finishes the job with the name it claimed first;
//! - a stitch that fails for good: the job turns failed with the reason after one delivery, and
//!   re-running the command, or `dlq replay` and re-running it, completes it;
//! - three stitch deliveries of one job handled at the same moment, by three aggregators (the
//!   lease lets one stitch) and by three that all pass the lease (the create-only output decides);
//! - a lock lost in the middle of a batch: the work is dropped unsettled and the redelivery
//!   redoes it.
//!
//! Every case ends with the same checks: exactly one job, done; exactly one output file and one
//! owner claim; one done marker per batch; no staging or partial file left in the store; no dead
//! letter; and the output made of its own source's frames, compared frame by frame (at strength 0
//! the network runs and the blend keeps the original pictures) against a clip of another pattern.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use stylefleet::consume::{ConsumeOptions, ConsumeReport, Handler, StitchHandler, consume};
use stylefleet::job::{JobId, StyleChoice};
use stylefleet::message::{BatchMessage, StitchMessage};
use stylefleet::queue::sqlite::{QueueConfig, SqliteQueue};
use stylefleet::queue::{
    BATCHES, DeadLetter, Delivery, OutgoingMessage, Queue, QueueError, STITCH,
};
use stylefleet::settings::Settings;
use stylefleet::setup::Location;
use stylefleet::stage::split::{SplitOutcome, split};
use stylefleet::stage::style::StyleStage;
use stylefleet::stage::{Context, Outcome};
use stylefleet::store::Store;

use support::frames::{assert_made_of, pattern_clip};
use support::pipeline as sp;

/// Clip geometry: tiny, and six batches of eight frames.
const WIDTH: u32 = 64;
const HEIGHT: u32 = 48;
const FRAMES: u32 = 48;
const BATCH_FRAMES: u32 = 8;
const BATCHES_PER_JOB: usize = 6;

/// A data folder, the clip to style, a clip of another pattern to compare against, the `-o` path
/// and the fault folder. Processes started on the data folder die with it.
struct Case {
    /// Declared first so that it runs before the folder is removed.
    _reaper: Reaper,
    _dir: tempfile::TempDir,
    data: PathBuf,
    clip: PathBuf,
    other: PathBuf,
    out: PathBuf,
    faults: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", WIDTH, HEIGHT, FRAMES);
        let other = pattern_clip(dir.path(), "other.mp4", "smptebars", WIDTH, HEIGHT, FRAMES);
        let data = dir.path().join("data");
        Case {
            _reaper: Reaper(data.clone()),
            data,
            out: dir.path().join("styled.mp4"),
            faults: dir.path().join("faults"),
            clip,
            other,
            _dir: dir,
        }
    }

    /// `process` at strength 0 with `faults` armed; every run of a case has the same arguments.
    fn process(&self, faults: &str) -> Output {
        let args: Vec<OsString> = vec![
            "process".into(),
            self.clip.clone().into(),
            "-o".into(),
            self.out.clone().into(),
            "--style".into(),
            "0".into(),
            "--strength".into(),
            "0".into(),
            "--workers".into(),
            "2".into(),
            "--batch-frames".into(),
            BATCH_FRAMES.to_string().into(),
        ];
        sp::command(&self.data, args)
            .env(stylefleet::fault::FAULTS_VAR, faults)
            .env(stylefleet::fault::FAULT_DIR_VAR, &self.faults)
            .output()
            .expect("stylefleet process runs")
    }

    /// Whether `point` fired (the process that reached it first left its mark).
    fn fired(&self, point: &str) -> bool {
        self.faults.join(format!("{point}.fired")).exists()
    }

    /// The one job folder in the store.
    fn only_job(&self) -> String {
        let jobs = sp::job_dirs(&self.data);
        assert_eq!(jobs.len(), 1, "one job folder: {jobs:?}");
        jobs[0].clone()
    }
}

/// Kills, when dropped, every process that names a folder: a worker whose supervisor was killed
/// drains by itself, but none may outlive the test.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_processes_naming(&self.0);
    }
}

/// SIGKILLs every process whose command line names `path` (only this test's own children do).
fn kill_processes_naming(path: &Path) {
    let needle = path.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Files of the store that are staging or partial files: object_store's `<name>#<n>`, `.part`,
/// `.fetch-*`, `.stylefleet-*` temporary files and `.staging/` objects. The scratch folder, where
/// a killed process may leave temporary files for the sweep, is not part of the store's names.
fn stray_files(data: &Path) -> Vec<PathBuf> {
    sp::tree(data)
        .into_iter()
        .filter(|p| !p.starts_with("scratch"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains('#')
                || name.ends_with(".part")
                || name.starts_with(".fetch-")
                || name.starts_with(".stylefleet-")
                || p.components().any(|c| c.as_os_str() == ".staging")
        })
        .collect()
}

/// Attempt logs of the job's batches: batch -> (attempt -> log text).
fn batch_logs(data: &Path, job: &str) -> BTreeMap<u32, BTreeMap<u32, String>> {
    let dir = data.join("logs").join(job);
    let mut logs: BTreeMap<u32, BTreeMap<u32, String>> = BTreeMap::new();
    for name in sp::files(&dir) {
        let Some(rest) = name
            .strip_prefix("batch-")
            .and_then(|r| r.strip_suffix(".log"))
        else {
            continue;
        };
        let (batch, attempt) = rest.split_once(".attempt-").unwrap();
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        logs.entry(batch.parse().unwrap())
            .or_default()
            .insert(attempt.parse().unwrap(), text);
    }
    logs
}

/// The stitch logs of the job (`stitch.attempt-<n>.log`), by name.
fn stitch_logs(data: &Path, job: &str) -> BTreeMap<String, String> {
    let dir = data.join("logs").join(job);
    sp::files(&dir)
        .into_iter()
        .filter(|n| n.starts_with("stitch."))
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// The checks every case ends with; returns the output's store path (`output/...`).
///
/// One job, done; one output file in the store, made of `clip`'s frames and not `other`'s; one
/// owner claim, this job's, naming that file, which the job's own claim and status name too; one
/// done marker per batch; no stray staging or partial file; no lease left; no dead letter.
/// `copied` is the `-o` file, which must be the store's output byte for byte.
fn assert_one_output(
    data: &Path,
    job: &str,
    clip: &Path,
    other: &Path,
    copied: Option<&Path>,
) -> String {
    let jobs = sp::status(data);
    assert_eq!(jobs.len(), 1, "one job: {jobs:#?}");
    assert_eq!(jobs[0]["job"], job, "{jobs:#?}");
    assert_eq!(jobs[0]["state"], "done", "{jobs:#?}");

    let job_dir = data.join("jobs").join(job);
    let planned = read_json(&job_dir.join("manifest.json"))["batches"]
        .as_array()
        .unwrap()
        .len();
    let markers = sp::files(&job_dir.join("done"));
    let expected: Vec<String> = (0..planned).map(|b| format!("{b:05}.json")).collect();
    assert_eq!(markers, expected, "one create-only done marker per batch");

    let outputs = sp::tree(&data.join("output"));
    assert_eq!(outputs.len(), 1, "exactly one output file: {outputs:?}");
    let output = format!("output/{}", outputs[0].display());
    let claims = sp::tree(&data.join("jobs/outputs"));
    assert_eq!(
        claims.len(),
        1,
        "exactly one output name claimed: {claims:?}"
    );
    let owner = read_json(&data.join("jobs/outputs").join(&claims[0]));
    assert_eq!(owner["job"], job, "the claim is this job's: {owner}");
    assert_eq!(
        owner["output"], output,
        "the claim names the output: {owner}"
    );
    let own_claim = read_json(&job_dir.join("output.json"));
    assert_eq!(
        own_claim["output"], output,
        "the job's own claim: {own_claim}"
    );
    assert_eq!(jobs[0]["output"], output, "status names the output");

    let stray = stray_files(data);
    assert!(stray.is_empty(), "staging or partial files left: {stray:?}");
    assert!(
        !job_dir.join("stitch-lease.json").exists(),
        "the stitch lease was released"
    );
    let letters = sp::dlq_list(data, &[]);
    assert!(letters.is_empty(), "no dead letters: {letters:#?}");

    let stored = data.join(&output);
    assert_made_of(&stored, clip, other);
    if let Some(copied) = copied {
        assert_eq!(
            std::fs::read(copied).unwrap(),
            std::fs::read(&stored).unwrap(),
            "{} is the store's output",
            copied.display()
        );
        let parent = copied.parent().unwrap();
        let partial: Vec<String> = sp::files(parent)
            .into_iter()
            .filter(|n| n.starts_with(".stylefleet-"))
            .collect();
        assert!(partial.is_empty(), "partial copies beside -o: {partial:?}");
    }
    output
}

// ---------------------------------------------------------------------------------------------
// Workers killed at each step of a batch.

/// A worker is killed at `point`; the pool replaces it, the batches it held come back when their
/// locks expire, and the one `process` run completes. Returns the job and the logs of the batches
/// the killed worker held: the one at `point`, and the one it had in flight beside it, if any (a
/// worker takes two at once). Every other batch ran once.
fn a_worker_killed_at(point: &str) -> (Case, String, BTreeMap<u32, BTreeMap<u32, String>>) {
    let case = Case::new();
    let run = case.process(&format!("{point}=kill"));
    sp::assert_success("process with a worker killed", &run);
    assert!(case.fired(point), "{point} was reached and fired");
    let stderr = stderr_of(&run);
    assert!(
        stderr.contains("worker failed") && stderr.contains("SIGKILL"),
        "the supervisor saw its worker killed:\n{stderr}"
    );
    let job = sp::job_of_process(&run);
    assert_eq!(case.only_job(), job);
    assert_one_output(&case.data, &job, &case.clip, &case.other, Some(&case.out));

    // The killed attempts never wrote their logs. The batches the worker held come back as second
    // deliveries when their locks expire; one that was already done (killed after its marker) may
    // find the job finished first, and then has no log at all.
    let logs = batch_logs(&case.data, &job);
    let (held, others): (BTreeMap<_, _>, BTreeMap<_, _>) = (0..BATCHES_PER_JOB as u32)
        .map(|b| (b, logs.get(&b).cloned().unwrap_or_default()))
        .partition(|(_, attempts)| attempts.is_empty() || attempts.keys().any(|&a| a > 1));
    assert!(
        (1..=2).contains(&held.len()),
        "the killed worker held one or two batches, and only those came again: {logs:#?}"
    );
    for (batch, attempts) in &others {
        assert_eq!(
            attempts.keys().copied().collect::<Vec<_>>(),
            vec![1],
            "batch {batch}"
        );
        assert!(
            attempts[&1].contains("chunk and done marker written"),
            "batch {batch}: {}",
            attempts[&1]
        );
    }
    (case, job, held)
}

/// Whether a batch the killed worker held was styled again by its redelivery.
fn restyled(logs: &BTreeMap<u32, String>) -> bool {
    logs.keys().copied().collect::<Vec<_>>() == vec![2]
        && logs[&2].contains("decoded")
        && logs[&2].contains("chunk and done marker written")
}

/// The batch killed after its done marker: its redelivery did not style it again (or there was
/// none before the job was done: its done marker, checked with the output, is the first
/// attempt's). The batch beside it, if any, had no marker yet and was styled again.
fn assert_not_restyled(held: &BTreeMap<u32, BTreeMap<u32, String>>) {
    let (killed, beside): (Vec<_>, Vec<_>) = held.iter().partition(|(_, logs)| {
        logs.is_empty()
            || (logs.keys().copied().collect::<Vec<_>>() == vec![2]
                && logs[&2].contains("already done (redelivery)")
                && !logs[&2].contains("decoded"))
    });
    assert_eq!(killed.len(), 1, "one batch found its marker: {held:#?}");
    assert!(
        beside.iter().all(|(_, logs)| restyled(logs)),
        "the batch beside it was styled again: {held:#?}"
    );
}

#[test]
fn a_worker_killed_after_its_chunk_and_before_the_done_marker() {
    let (case, job, held) = a_worker_killed_at("batch.after-chunk");
    // No marker, so the redelivery styles the batch again and overwrites the same chunk name;
    // so is the batch it held beside it.
    assert!(held.values().all(restyled), "{held:#?}");
    let chunks = sp::files(&case.data.join("jobs").join(&job).join("chunks"));
    assert_eq!(
        chunks.len(),
        BATCHES_PER_JOB,
        "one chunk per batch: {chunks:?}"
    );
}

#[test]
fn a_worker_killed_after_the_done_marker_and_before_the_follow_ups() {
    let (_case, _job, held) = a_worker_killed_at("batch.after-marker");
    assert_not_restyled(&held);
}

#[test]
fn a_worker_killed_after_the_follow_ups_and_before_the_settlement() {
    let (_case, _job, held) = a_worker_killed_at("batch.before-settle");
    assert_not_restyled(&held);
}

// ---------------------------------------------------------------------------------------------
// `process` killed during the stitch, then run again.

/// `process` dies at `point` (in its aggregator), after every batch was done and the output name
/// claimed. Returns the case, the job and the claim the killed run made.
fn the_process_killed_at(point: &str) -> (Case, String, Value) {
    let case = Case::new();
    let first = case.process(&format!("{point}=kill"));
    assert_eq!(
        first.status.signal(),
        Some(9),
        "the first run is killed at {point}: {}\n{}",
        first.status,
        stderr_of(&first)
    );
    assert!(case.fired(point), "{point} fired");
    assert!(!case.out.exists(), "no -o output from the killed run");
    let job = case.only_job();
    let job_dir = case.data.join("jobs").join(&job);
    assert_eq!(
        sp::files(&job_dir.join("done")).len(),
        BATCHES_PER_JOB,
        "every batch was done before the stitch"
    );
    assert_ne!(
        sp::job_status(&case.data, &job)["state"],
        "done",
        "the killed run did not record done"
    );
    let claimed = read_json(&job_dir.join("output.json"));
    assert_eq!(claimed["output"], "output/0/clip.mp4", "the preferred name");
    (case, job, claimed)
}

/// Runs the killed command again: it must finish the job with the name claimed before the kill.
fn run_again(case: &Case, point: &str, job: &str, claimed: &Value) {
    let started = Instant::now();
    let second = case.process(&format!("{point}=kill"));
    sp::assert_success("the same process command again", &second);
    // The killed run's stitch lease (60 s) names a process of this host that is gone: the new run
    // takes it over instead of waiting it out.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(45),
        "the second run took {took:?}: it waited for the dead run's stitch lease"
    );
    assert_eq!(sp::job_of_process(&second), job, "the same job");
    let output = assert_one_output(&case.data, job, &case.clip, &case.other, Some(&case.out));
    let job_dir = case.data.join("jobs").join(job);
    assert_eq!(
        &read_json(&job_dir.join("output.json")),
        claimed,
        "the claim made before the kill stands"
    );
    assert_eq!(claimed["output"], output, "and its name is the one used");
}

#[test]
fn the_process_killed_between_the_output_claim_and_the_upload_resumes_with_its_claim() {
    let point = "stitch.after-claim";
    let (case, job, claimed) = the_process_killed_at(point);
    assert!(
        sp::tree(&case.data.join("output")).is_empty(),
        "nothing was uploaded before the kill"
    );
    run_again(&case, point, &job, &claimed);
}

#[test]
fn the_process_killed_after_the_upload_and_before_done_keeps_the_uploaded_output() {
    let point = "stitch.after-upload";
    let (case, job, claimed) = the_process_killed_at(point);
    let uploaded = case.data.join("output/0/clip.mp4");
    let bytes = std::fs::read(&uploaded).expect("the output was uploaded before the kill");
    let modified = std::fs::metadata(&uploaded).unwrap().modified().unwrap();
    run_again(&case, point, &job, &claimed);
    assert_eq!(
        std::fs::read(&uploaded).unwrap(),
        bytes,
        "the output uploaded before the kill is the output"
    );
    assert_eq!(
        std::fs::metadata(&uploaded).unwrap().modified().unwrap(),
        modified,
        "and it was written once"
    );
}

// ---------------------------------------------------------------------------------------------
// A stitch that fails for good, revived.

/// The first run: the stitch fails for good at `stitch.start`, on its first delivery. Returns the
/// case and the failed job.
fn a_stitch_failed_for_good() -> (Case, String) {
    let case = Case::new();
    let first = case.process("stitch.start=fail");
    let stderr = stderr_of(&first);
    assert_eq!(first.status.code(), Some(1), "the run fails:\n{stderr}");
    let job = sp::job_of_process(&first);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("error: job {job} failed: "))
            && last.contains("injected fault at stitch.start"),
        "the command names the reason: {last}"
    );
    let view = sp::job_status(&case.data, &job);
    assert_eq!(view["state"], "failed", "{view}");
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("injected fault at stitch.start")),
        "status names the reason: {view}"
    );
    let letters = sp::dlq_list(&case.data, &[]);
    assert_eq!(
        letters.len(),
        1,
        "the stitch is dead-lettered: {letters:#?}"
    );
    let letter = &letters[0];
    assert_eq!(letter["queue"], STITCH, "{letter}");
    assert_eq!(letter["id"], format!("{job}:stitch"), "{letter}");
    assert_eq!(letter["reason"], "PermanentFailure", "{letter}");
    assert!(
        letter["description"]
            .as_str()
            .is_some_and(|d| d.contains("injected fault at stitch.start")),
        "{letter}"
    );
    assert_eq!(
        letter["delivery_count"], 1,
        "dead-lettered on its first delivery: {letter}"
    );
    assert!(sp::tree(&case.data.join("output")).is_empty(), "no output");
    assert!(!case.out.exists(), "no -o output");
    (case, job)
}

#[test]
fn a_stitch_failed_for_good_is_revived_by_running_the_same_command_again() {
    let (case, job) = a_stitch_failed_for_good();
    let second = case.process("stitch.start=fail");
    sp::assert_success("the same process command again", &second);
    assert_eq!(sp::job_of_process(&second), job, "the same job");
    assert_one_output(&case.data, &job, &case.clip, &case.other, Some(&case.out));
}

#[test]
fn a_stitch_failed_for_good_is_revived_by_a_dlq_replay() {
    let (case, job) = a_stitch_failed_for_good();
    let replay = sp::stylefleet(&case.data, ["dlq", "replay", "--job", &job]);
    sp::assert_success("dlq replay --job", &replay);
    let said = String::from_utf8_lossy(&replay.stdout);
    assert!(said.contains("replayed 1 of 1"), "{said}");
    assert!(
        sp::dlq_list(&case.data, &[]).is_empty(),
        "the letter left the DLQ"
    );
    let view = sp::job_status(&case.data, &job);
    assert_ne!(
        view["state"], "failed",
        "the replay revived the job: {view}"
    );

    // The replayed stitch waits for an aggregator: `process` runs one while it runs.
    let second = case.process("stitch.start=fail");
    sp::assert_success("process after the replay", &second);
    assert_eq!(sp::job_of_process(&second), job, "the same job");
    assert_one_output(&case.data, &job, &case.clip, &case.other, Some(&case.out));
}

// ---------------------------------------------------------------------------------------------
// Library-level cases: a job styled in this process, then stitched (or styled) under faults.

fn settings() -> Settings {
    Settings {
        batch_frames: u64::from(BATCH_FRAMES),
        ..Settings::default()
    }
}

/// Uploads the case's clip as `input/0/clip.mp4` and plans it at strength 0.
async fn planned_job(ctx: &Context, clip: &Path) -> JobId {
    let path = "input/0/clip.mp4";
    ctx.store.upload(clip, path, false).await.unwrap();
    match split(ctx, path, &StyleChoice::new("0", 0.0, false))
        .await
        .unwrap()
    {
        SplitOutcome::Planned { job, batches, .. } => {
            assert_eq!(batches as usize, BATCHES_PER_JOB);
            job
        }
        other => panic!("the clip was not planned: {other:?}"),
    }
}

/// Consumes `queue` with `handler` until it has been idle for `idle`.
async fn consume_until_idle(
    ctx: &Context,
    handler: &impl Handler,
    queue: &str,
    idle: Duration,
) -> ConsumeReport {
    let options = ConsumeOptions {
        exit_when_idle: Some(idle),
        ..ConsumeOptions::new(queue)
    };
    consume(ctx, handler, &options, CancellationToken::new())
        .await
        .unwrap()
}

async fn dead_letters(ctx: &Context) -> Vec<DeadLetter> {
    let mut all = ctx.queue.peek_dead_letters(BATCHES, 0, 100).await.unwrap();
    all.extend(ctx.queue.peek_dead_letters(STITCH, 0, 100).await.unwrap());
    all
}

/// A stitch handler that starts only when every one of its siblings holds its delivery too.
struct AllAtOnce {
    barrier: Arc<Barrier>,
}

#[async_trait]
impl Handler for AllAtOnce {
    async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome {
        self.barrier.wait().await;
        StitchHandler.handle(ctx, delivery).await
    }
}

/// A job with every batch done and its `stitch` queued, plus `extra` duplicates of that message
/// under other ids (the queue drops a duplicate id still queued; Service Bus without duplicate
/// detection delivers them all, which this stands for). Then one consume loop per context handles
/// one delivery each, all at the same moment. Returns the job and the loops' reports.
async fn duplicate_stitches(
    data: &Path,
    clip: &Path,
    aggregators: impl Fn(usize, &Context) -> Context,
) -> (Context, JobId, Vec<ConsumeReport>) {
    let ctx = stylefleet::setup::context(&Location::embedded(data), settings())
        .await
        .unwrap();
    let job = planned_job(&ctx, clip).await;
    let styled = consume_until_idle(
        &ctx,
        &StyleStage::default(),
        BATCHES,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(styled.completed as usize, BATCHES_PER_JOB, "{styled:?}");
    assert_eq!(
        ctx.queue.backlog(STITCH).await.unwrap(),
        1,
        "the last batch posted stitch"
    );

    let body = StitchMessage::new(job.clone()).to_outgoing().body;
    let duplicates = (1..3)
        .map(|i| OutgoingMessage::new(format!("{job}:stitch-duplicate-{i}"), body.clone()))
        .collect();
    ctx.queue.send(STITCH, duplicates).await.unwrap();
    assert_eq!(ctx.queue.backlog(STITCH).await.unwrap(), 3);

    let barrier = Arc::new(Barrier::new(3));
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..3 {
        let ctx = aggregators(i, &ctx);
        let barrier = Arc::clone(&barrier);
        loops.spawn(async move {
            let options = ConsumeOptions {
                max_deliveries: Some(1),
                ..ConsumeOptions::new(STITCH)
            };
            consume(
                &ctx,
                &AllAtOnce { barrier },
                &options,
                CancellationToken::new(),
            )
            .await
            .unwrap()
        });
    }
    let reports = tokio::time::timeout(Duration::from_secs(120), loops.join_all())
        .await
        .expect("the three stitches end");
    (ctx, job, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stitch_deliveries_at_once_stitch_once_and_settle_all() {
    let case = Case::new();
    let aggregator = |i: usize| case.data.join(format!("scratch/aggregator-{i}"));
    let (ctx, job, reports) = duplicate_stitches(&case.data, &case.clip, |i, ctx| {
        // Three aggregators, each with its own name and scratch folder: three contenders for the
        // lease, one of which gets it.
        let mut ctx = ctx.clone();
        ctx.worker_name = format!("aggregator-{i}");
        ctx.scratch = aggregator(i);
        ctx
    })
    .await;
    let completed = ConsumeReport {
        completed: 1,
        ..ConsumeReport::default()
    };
    assert_eq!(
        reports,
        vec![completed; 3],
        "every delivery is settled once"
    );
    assert_eq!(
        ctx.queue.backlog(STITCH).await.unwrap(),
        0,
        "nothing left queued"
    );
    assert!(dead_letters(&ctx).await.is_empty(), "no dead letters");
    assert_one_output(&case.data, job.as_str(), &case.clip, &case.other, None);

    // One stitch ran (the lease holder's): only one aggregator touched its scratch folder (the
    // stitch fetches the source and the chunks there), and the duplicates were completed without
    // a log of their own, so the one log is the writer's.
    let worked: Vec<usize> = (0..3).filter(|&i| aggregator(i).exists()).collect();
    assert_eq!(worked.len(), 1, "aggregators that stitched: {worked:?}");
    let logs = stitch_logs(&case.data, job.as_str());
    assert_eq!(logs.len(), 1, "one stitch log: {logs:#?}");
    let text = logs.values().next().unwrap();
    assert_eq!(
        text.matches("wrote output/0/clip.mp4").count(),
        1,
        "the output was written once: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stitches_past_the_lease_at_once_still_write_one_output() {
    let case = Case::new();
    let data = case.data.clone();
    let (ctx, job, reports) = duplicate_stitches(&case.data, &case.clip, move |i, ctx| {
        // One holder name for all three (each takes the lease over as its own), each on its own
        // machine (scratch folder): only the create-only output and claims keep them apart.
        let mut ctx = ctx.clone();
        ctx.worker_name = "aggregator".into();
        ctx.scratch = data.join(format!("scratch/aggregator-{i}"));
        ctx
    })
    .await;
    let completed = ConsumeReport {
        completed: 1,
        ..ConsumeReport::default()
    };
    assert_eq!(
        reports,
        vec![completed; 3],
        "every delivery is settled once"
    );
    assert_eq!(
        ctx.queue.backlog(STITCH).await.unwrap(),
        0,
        "nothing left queued"
    );
    assert!(dead_letters(&ctx).await.is_empty(), "no dead letters");
    assert_one_output(&case.data, job.as_str(), &case.clip, &case.other, None);
}

// ---------------------------------------------------------------------------------------------
// A lock lost in the middle of a batch.

/// The real SQLite queue, except that the first batch delivery's lock is lost the moment its
/// batch reaches the encoder: the delivery says its lock lasts 150 ms, so its first renewal comes
/// after 50 ms, and that renewal waits until the batch's filter script appears in the scratch
/// folder (written just before ffmpeg starts encoding the chunk), then reports the lock lost.
#[derive(Debug)]
struct LosesOneLock {
    inner: SqliteQueue,
    scratch: PathBuf,
    store: PathBuf,
    /// Set until the first batch delivery is received.
    first: AtomicBool,
    /// The lock token of the delivery whose lock is to be lost, until it is.
    target: Mutex<Option<String>>,
    /// The batch whose lock was lost, and what the store held then: (chunk uploaded, marker
    /// written).
    lost_with: Mutex<Option<(u32, bool, bool)>>,
}

impl LosesOneLock {
    fn is_target(&self, delivery: &Delivery) -> bool {
        self.target.lock().unwrap().as_deref() == Some(delivery.lock_token.as_str())
    }

    /// Waits (at most a minute) until the batch is being encoded, then notes the store's state.
    async fn lose(&self, delivery: &Delivery) {
        let batch = BatchMessage::parse(&delivery.body).unwrap();
        let prefix = format!("{:05}", batch.batch);
        let chunks = self.scratch.join("chunks").join(batch.job.as_str());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sp::files(&chunks).iter().any(|n| n.starts_with(&prefix)) {
            assert!(
                Instant::now() < deadline,
                "batch {prefix} never reached the encoder"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let job = self.store.join("jobs").join(batch.job.as_str());
        *self.lost_with.lock().unwrap() = Some((
            batch.batch,
            job.join("chunks").join(format!("{prefix}.mp4")).exists(),
            job.join("done").join(format!("{prefix}.json")).exists(),
        ));
        *self.target.lock().unwrap() = None;
    }
}

#[async_trait]
impl Queue for LosesOneLock {
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.inner.send(queue, messages).await
    }
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut deliveries = self.inner.receive(queue, max, wait).await?;
        if let Some(first) = deliveries.first_mut()
            && queue == BATCHES
            && self.first.swap(false, Ordering::SeqCst)
        {
            first.lock_duration = Duration::from_millis(150);
            *self.target.lock().unwrap() = Some(first.lock_token.clone());
        }
        Ok(deliveries)
    }
    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.inner.complete(delivery).await
    }
    async fn abandon(
        &self,
        delivery: &Delivery,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        self.inner.abandon(delivery, delay).await
    }
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        description: &str,
    ) -> Result<(), QueueError> {
        self.inner.dead_letter(delivery, reason, description).await
    }
    async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime, QueueError> {
        if self.is_target(delivery) {
            self.lose(delivery).await;
            return Err(QueueError::LockLost {
                id: delivery.id.clone(),
            });
        }
        self.inner.renew_lock(delivery).await
    }
    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner
            .peek_dead_letters(queue, from_sequence, max)
            .await
    }
    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive_dead_letters(queue, max, wait).await
    }
    async fn backlog(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.backlog(queue).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_lost_mid_batch_drops_the_work_and_the_redelivery_redoes_it() {
    let case = Case::new();
    let data = &case.data;
    let config = QueueConfig::default().with_lock_duration(Duration::from_secs(2));
    let queue_path = data.join("queue.sqlite");
    let plain = stylefleet::setup::context(&Location::embedded(data), settings())
        .await
        .unwrap();
    let plain = Context {
        queue: Arc::new(SqliteQueue::open(&queue_path, config.clone()).unwrap()),
        ..plain
    };
    let job = planned_job(&plain, &case.clip).await;

    let losing = Arc::new(LosesOneLock {
        inner: SqliteQueue::open(&queue_path, config).unwrap(),
        scratch: plain.scratch.clone(),
        store: data.clone(),
        first: AtomicBool::new(true),
        target: Mutex::new(None),
        lost_with: Mutex::new(None),
    });
    let ctx = Context {
        queue: Arc::clone(&losing) as Arc<dyn Queue>,
        ..plain.clone()
    };
    let options = ConsumeOptions {
        max_deliveries: Some(1),
        ..ConsumeOptions::new(BATCHES)
    };
    let stage = StyleStage::default();
    let report = consume(&ctx, &stage, &options, CancellationToken::new())
        .await
        .unwrap();
    let lost = ConsumeReport {
        lost: 1,
        ..ConsumeReport::default()
    };
    assert_eq!(
        report, lost,
        "the delivery's lock was lost and it was not settled"
    );
    let (batch, chunk_then, marker_then) = losing
        .lost_with
        .lock()
        .unwrap()
        .take()
        .expect("a lock was lost");
    assert!(
        !chunk_then && !marker_then,
        "the lock was lost mid-batch: while encoding, before the chunk and the marker"
    );

    // The dropped work does not go on: nothing of the batch reaches the store afterwards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job_dir = data.join("jobs").join(job.as_str());
    assert!(
        !job_dir.join(format!("chunks/{batch:05}.mp4")).exists(),
        "no chunk from the dropped work"
    );
    assert!(
        !job_dir.join(format!("done/{batch:05}.json")).exists(),
        "no marker from the dropped work"
    );

    // Another worker takes every batch, the lost one when its lock has run out, then the stitch.
    let options = ConsumeOptions {
        max_deliveries: Some(BATCHES_PER_JOB as u64),
        ..ConsumeOptions::new(BATCHES)
    };
    let styled = tokio::time::timeout(
        Duration::from_secs(120),
        consume(
            &plain,
            &StyleStage::default(),
            &options,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("every batch is done within two minutes")
    .unwrap();
    let all = ConsumeReport {
        completed: BATCHES_PER_JOB as u64,
        ..ConsumeReport::default()
    };
    assert_eq!(
        styled, all,
        "every batch completed once, the lost one included"
    );
    let stitched = consume_until_idle(&plain, &StitchHandler, STITCH, Duration::from_secs(1)).await;
    assert_eq!(stitched.completed, 1, "{stitched:?}");
    assert!(dead_letters(&plain).await.is_empty(), "no dead letters");
    assert_one_output(data, job.as_str(), &case.clip, &case.other, None);

    // The lost delivery left no log (its work was dropped before the end); its redelivery did the
    // batch.
    let logs = batch_logs(data, job.as_str());
    for (b, attempts) in &logs {
        let expected = if *b == batch { 2 } else { 1 };
        assert_eq!(
            attempts.keys().copied().collect::<Vec<_>>(),
            vec![expected],
            "batch {b}: {logs:#?}"
        );
        assert!(
            attempts[&expected].contains("chunk and done marker written"),
            "batch {b}: {}",
            attempts[&expected]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// `process` killed in the middle of a streamed output upload (Azurite).

/// A 64x48 clip at 5 fps (40 frames) whose two 7.1 ALAC noise tracks (copied into the output as they
/// are) make it, and so its output, larger than one upload part: the output upload goes in parts, with the fault point between
/// them.
fn clip_larger_than_a_part(dir: &Path) -> PathBuf {
    let out = dir.join("clip.mp4");
    support::clips::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=5",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=sample_rate=192000:amplitude=1:color=white:duration=8",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=sample_rate=192000:amplitude=1:color=pink:duration=8:seed=7",
        "-filter_complex",
        "[1:a]aformat=channel_layouts=7.1:sample_fmts=s32p[a];[2:a]aformat=channel_layouts=7.1:sample_fmts=s32p[b]",
        "-map",
        "0:v",
        "-map",
        "[a]",
        "-map",
        "[b]",
        "-frames:v",
        "40",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "10",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "alac",
        "-max_interleave_delta",
        "0",
        out.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        size > stylefleet::store::UPLOAD_PART_SIZE as u64 * 3 / 2,
        "the clip is well over one upload part: {size} bytes"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_killed_during_a_streamed_output_upload_resumes_and_uploads_once() {
    let point = "store.upload.mid";
    let azurite = support::azurite::Azurite::start();
    let container = "faults";
    azurite.create_container(container).await;
    let store = Store::open(&azurite.container_url(container)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = clip_larger_than_a_part(dir.path());
    let other = dir.path().join("other.mp4");
    support::clips::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "smptebars=size=64x48:rate=5",
        "-frames:v",
        "40",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        other.to_str().unwrap(),
    ]);
    let data = dir.path().join("data");
    let out = dir.path().join("styled.mp4");
    let faults = dir.path().join("faults");
    let _reaper = Reaper(data.clone());

    // The source goes in first, where `process` puts it (its content hash names the folder), so
    // that the first streamed upload of more than one part is the output's.
    let version = stylefleet::stage::split::content_version_of_file(&clip)
        .await
        .unwrap();
    let hash: String = version
        .trim_start_matches("sha256:")
        .chars()
        .take(16)
        .collect();
    store
        .upload(&clip, &format!("process/0/{hash}/clip.mp4"), true)
        .await
        .unwrap();

    let run = || {
        let args: Vec<OsString> = vec![
            "process".into(),
            clip.clone().into(),
            "-o".into(),
            out.clone().into(),
            "--style".into(),
            "0".into(),
            "--strength".into(),
            "0".into(),
            "--workers".into(),
            "2".into(),
            "--batch-frames".into(),
            BATCH_FRAMES.to_string().into(),
            "--store".into(),
            format!("az://{container}").into(),
        ];
        sp::command(&data, args)
            .envs(azurite.env())
            .env(stylefleet::fault::FAULTS_VAR, format!("{point}=kill"))
            .env(stylefleet::fault::FAULT_DIR_VAR, &faults)
            .output()
            .expect("stylefleet process runs")
    };
    let names = |prefix: &'static str| {
        let store = store.clone();
        async move {
            let mut names: Vec<String> = store
                .list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
            names.sort();
            names
        }
    };

    let first = run();
    assert_eq!(
        first.status.signal(),
        Some(9),
        "the first run is killed mid-upload: {}\n{}",
        first.status,
        stderr_of(&first)
    );
    assert!(
        faults.join(format!("{point}.fired")).exists(),
        "{point} fired"
    );
    let jobs: Vec<String> = names("jobs")
        .await
        .into_iter()
        .filter_map(|n| {
            n.strip_suffix("/manifest.json")
                .map(|j| j.trim_start_matches("jobs/").to_owned())
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    let job = jobs[0].clone();
    let claim: Value = serde_json::from_slice(
        &store
            .get(&format!("jobs/{job}/output.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claim["output"], "output/0/clip.mp4", "{claim}");
    assert!(
        names("output").await.is_empty(),
        "nothing of the killed upload is visible: {:?}",
        names("output").await
    );

    let second = run();
    sp::assert_success("the same process command again", &second);
    assert_eq!(sp::job_of_process(&second), job, "the same job");

    let outputs = names("output").await;
    assert_eq!(
        outputs,
        vec!["output/0/clip.mp4".to_owned()],
        "one output, no staging left"
    );
    let claims = names("jobs/outputs").await;
    assert_eq!(claims.len(), 1, "one output name claimed: {claims:?}");
    let owner: Value =
        serde_json::from_slice(&store.get(&claims[0]).await.unwrap().unwrap()).unwrap();
    assert_eq!(owner["job"], job.as_str(), "{owner}");
    assert_eq!(owner["output"], "output/0/clip.mp4", "{owner}");
    let again: Value = serde_json::from_slice(
        &store
            .get(&format!("jobs/{job}/output.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again, claim, "the claim made before the kill stands");
    let planned: Value = serde_json::from_slice(
        &store
            .get(&format!("jobs/{job}/manifest.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let markers = names("jobs")
        .await
        .into_iter()
        .filter(|n| n.starts_with(&format!("jobs/{job}/done/")))
        .count();
    assert_eq!(
        markers,
        planned["batches"].as_array().unwrap().len(),
        "one marker per batch"
    );
    let status: Value = serde_json::from_slice(
        &store
            .get(&format!("jobs/{job}/status.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["state"], "done", "{status}");
    let stray: Vec<String> = names("")
        .await
        .into_iter()
        .filter(|n| n.contains(".staging") || n.contains('#') || n.ends_with(".part"))
        .collect();
    assert!(stray.is_empty(), "staging objects left: {stray:?}");
    assert!(
        !names("")
            .await
            .iter()
            .any(|n| n.ends_with("stitch-lease.json")),
        "the lease was released"
    );
    assert!(sp::dlq_list(&data, &[]).is_empty(), "no dead letters");

    let blob = store.get("output/0/clip.mp4").await.unwrap().unwrap();
    assert!(
        blob.len() > stylefleet::store::UPLOAD_PART_SIZE,
        "the output took parts"
    );
    assert_eq!(
        blob,
        std::fs::read(&out).unwrap(),
        "-o is the store's output"
    );
    support::azurite::check::frame_exact(&clip, &out);
    assert_made_of(&out, &clip, &other);
}
