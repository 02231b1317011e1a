#![allow(clippy::unwrap_used)]
//! The embedded fleet (`stylefleet up`) as a user runs it, with real worker processes, the SQLite
//! queue and a local store, under faults and load:
//!
//! - kill -9 of a worker in the middle of a batch, and of the supervisor itself: after the
//!   replacement (or a restart) the job completes with exactly one output, and batches that were
//!   done are not redone (their chunks keep their modification time, they have no second attempt);
//! - a batch that fails for good turns its job failed with the reason within the delivery limit,
//!   while another job in the same fleet completes;
//! - autoscaling: a backlog scales the workers out to the maximum, idleness scales them to zero,
//!   but not before the cool-down;
//! - Ctrl-C drains: no batch is lost or left locked, and a restart completes the job;
//! - a flood of uploads with one active job at a time: all complete, one planned at a time.
//!
//! Every test owns a temporary data folder; every process whose command line names it is killed
//! when the test ends, pass or fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use support::azurite::check;
use support::clips;

const BIN: &str = env!("CARGO_BIN_EXE_stylefleet");

/// Long enough for a loaded two-core machine; a healthy run needs a fraction of it.
const DEADLINE: Duration = Duration::from_secs(90);

/// Settings every fleet in this file runs with: short locks, few deliveries, quick retries.
const BASE_ENV: &[(&str, &str)] = &[
    ("STYLEFLEET_LOCK_SECS", "2"),
    ("STYLEFLEET_MAX_DELIVERIES", "3"),
    ("STYLEFLEET_RETRY_MIN_SECS", "0.2"),
    ("STYLEFLEET_LOG_FORMAT", "json"),
    ("STYLEFLEET_WORKER_THREADS", "1"),
    ("RUST_LOG", "info"),
];

/// A process seen in `/proc`.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    args: Vec<String>,
}

/// Live (not zombie) processes.
fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            fs::read_to_string(format!("/proc/{pid}/stat")),
            fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
            continue;
        }
        let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) else {
            continue;
        };
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Proc { pid, ppid, args });
    }
    out
}

fn alive(pid: u32) -> bool {
    processes().iter().any(|p| p.pid == pid)
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap())
}

/// A batch message locked by a receiver, as the queue database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    id: String,
    batch: u32,
    token: String,
    delivery_count: u32,
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn queue_db(data: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data.join("queue.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db
}

/// Batch messages locked right now (a lock that has not expired).
fn held_batches(data: &Path) -> Vec<Held> {
    if !data.join("queue.sqlite").exists() {
        return Vec::new();
    }
    let db = queue_db(data);
    let mut stmt = db
        .prepare(
            "SELECT id, lock_token, delivery_count FROM messages
             WHERE queue = 'batches' AND state = 'active' AND lock_token IS NOT NULL
               AND locked_until > ?1",
        )
        .unwrap();
    stmt.query_map([now_ms()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, u32>(2)?,
        ))
    })
    .unwrap()
    .map(|r| {
        let (id, token, delivery_count) = r.unwrap();
        let batch = id.rsplit_once(':').unwrap().1.parse().unwrap();
        Held {
            id,
            batch,
            token,
            delivery_count,
        }
    })
    .collect()
}

/// Whether the delivery `held` names is still locked under the same token (nobody settled it).
fn still_held(data: &Path, held: &Held) -> bool {
    let db = queue_db(data);
    db.query_row(
        "SELECT count(*) FROM messages WHERE queue = 'batches' AND id = ?1 AND lock_token = ?2",
        [&held.id, &held.token],
        |row| row.get::<_, u32>(0),
    )
    .unwrap()
        == 1
}

/// Messages of any queue that still carry a lock token (expired or not).
fn locked_messages(data: &Path) -> Vec<String> {
    let db = queue_db(data);
    let mut stmt = db
        .prepare("SELECT queue || ' ' || id FROM messages WHERE lock_token IS NOT NULL")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Ids of the active (waiting or scheduled) messages of queue `batches`.
fn queued_batch_ids(data: &Path) -> BTreeSet<String> {
    let db = queue_db(data);
    let mut stmt = db
        .prepare("SELECT id FROM messages WHERE queue = 'batches' AND state = 'active'")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn job_ids(data: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(data.join("jobs"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn manifest(data: &Path, job: &str) -> Value {
    read_json(&data.join("jobs").join(job).join("manifest.json")).unwrap()
}

fn batches_total(data: &Path, job: &str) -> u32 {
    u32::try_from(manifest(data, job)["batches"].as_array().unwrap().len()).unwrap()
}

/// Batches with a done marker.
fn done(data: &Path, job: &str) -> BTreeSet<u32> {
    fs::read_dir(data.join("jobs").join(job).join("done"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn done_marker(data: &Path, job: &str, batch: u32) -> Value {
    read_json(
        &data
            .join("jobs")
            .join(job)
            .join("done")
            .join(format!("{batch:05}.json")),
    )
    .unwrap()
}

/// The state `status.json` records, if written.
fn recorded_state(data: &Path, job: &str) -> Option<String> {
    read_json(&data.join("jobs").join(job).join("status.json"))
        .and_then(|s| s["state"].as_str().map(str::to_owned))
}

/// Attempts logged per batch (`logs/<job>/batch-<n>.attempt-<k>.log`).
fn attempts(data: &Path, job: &str) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut out: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(data.join("logs").join(job)) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("batch-")
            .and_then(|r| r.strip_suffix(".log"))
        else {
            continue;
        };
        let (batch, attempt) = rest.split_once(".attempt-").unwrap();
        out.entry(batch.parse().unwrap())
            .or_default()
            .insert(attempt.parse().unwrap());
    }
    out
}

/// Files under `output/<style>/`.
fn outputs(data: &Path, style: &str) -> Vec<PathBuf> {
    fs::read_dir(data.join("output").join(style))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What a job had done at one moment: its done batches and their chunks' modification times.
#[derive(Debug)]
struct Snapshot {
    job: String,
    done: BTreeSet<u32>,
    chunks: BTreeMap<u32, SystemTime>,
}

impl Snapshot {
    fn take(data: &Path, job: &str) -> Self {
        let done = done(data, job);
        let chunks = done
            .iter()
            .map(|&b| {
                let chunk = data
                    .join("jobs")
                    .join(job)
                    .join("chunks")
                    .join(format!("{b:05}.mp4"));
                (b, fs::metadata(chunk).unwrap().modified().unwrap())
            })
            .collect();
        Snapshot {
            job: job.to_owned(),
            done,
            chunks,
        }
    }

    /// The batches done at the snapshot were not styled again: same chunk, no later attempt.
    fn assert_not_redone(&self, data: &Path) {
        assert!(!self.done.is_empty(), "the snapshot holds no done batch");
        let now = Snapshot::take(data, &self.job);
        let attempts = attempts(data, &self.job);
        for (batch, mtime) in &self.chunks {
            assert_eq!(
                now.chunks.get(batch),
                Some(mtime),
                "the chunk of batch {batch} was rewritten"
            );
            assert_eq!(
                attempts
                    .get(batch)
                    .map(|a| a.iter().copied().collect::<Vec<_>>()),
                Some(vec![1]),
                "batch {batch} was done on its first attempt and never again"
            );
        }
    }
}

/// One `stylefleet up` on its own data folder, with its log; everything it started dies with it.
struct Fleet {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    up: Option<Child>,
}

impl Fleet {
    /// A fleet (not started) with `up` arguments and extra environment.
    fn new(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        Fleet {
            log: root.join("fleet.log"),
            root,
            data,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BASE_ENV
                .iter()
                .chain(env)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            up: None,
            _dir: dir,
        }
    }

    /// Starts `up` (again) in its own process group, as a shell starts a foreground job, and
    /// waits until it watches.
    fn start(&mut self) {
        assert!(self.up.is_none(), "already running");
        let before = self.ups();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("up")
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.up = Some(child);
        self.wait("the fleet to start", DEADLINE, || {
            (self.ups() > before).then_some(())
        });
    }

    /// How many times `up` said it watches, over every run of this fleet.
    fn ups(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| message(e) == "fleet up; watching input/")
            .count()
    }

    fn up_pid(&self) -> u32 {
        self.up.as_ref().unwrap().id()
    }

    /// Sends `signal` to `up` alone, or to its whole process group (as a terminal's Ctrl-C does).
    fn signal(&self, signal: Signal, group: bool) {
        if group {
            killpg(pid(self.up_pid()), signal).unwrap();
        } else {
            kill(pid(self.up_pid()), signal).unwrap();
        }
    }

    /// Waits for `up` to exit and returns its status.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.up.take().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.up = Some(child);
                panic!("up did not exit within {within:?}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Copies `clip` to `<data>/<to>` under a hidden name first, so it appears complete at once.
    fn drop_clip(&self, clip: &Path, to: &str) {
        let target = self.data.join(to);
        let dir = target.parent().unwrap();
        fs::create_dir_all(dir).unwrap();
        let hidden = dir.join(format!(
            ".{}",
            target.file_name().unwrap().to_string_lossy()
        ));
        fs::copy(clip, &hidden).unwrap();
        fs::rename(hidden, target).unwrap();
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- last lines of the fleet log ---\n{}",
            lines[from..].join("\n")
        )
    }

    /// The JSON log events of the fleet and its workers, in order.
    fn events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Live worker processes of the current `up`.
    fn workers(&self) -> Vec<u32> {
        let Some(up) = self.up.as_ref().map(Child::id) else {
            return Vec::new();
        };
        processes()
            .into_iter()
            .filter(|p| p.ppid == up && p.args.iter().skip(1).any(|a| a == "worker"))
            .map(|p| p.pid)
            .collect()
    }

    /// Every live process whose command line names this fleet's data folder.
    fn own_processes(&self) -> Vec<Proc> {
        let data = self.data.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|p| p.args.iter().any(|a| a.contains(&data)))
            .collect()
    }

    /// `stylefleet status --json`.
    fn status(&self) -> Vec<Value> {
        let out = Command::new(BIN)
            .args(["status", "--json", "--data"])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `stylefleet dlq list --json`.
    fn dead_letters(&self) -> Vec<Value> {
        let out = Command::new(BIN)
            .args(["dlq", "list", "--json", "--data"])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dlq list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Polls `check` until it gives a value; fails with the fleet's log after `within`.
    fn wait<T>(&self, what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if let Some(up) = &self.up
                && !alive(up.id())
            {
                panic!("up exited while waiting for {what}\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "gave up after {within:?} waiting for {what}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the only job of the fleet is done and returns its id.
    fn wait_done(&self) -> String {
        self.wait("the job to be done", DEADLINE, || {
            let jobs = job_ids(&self.data);
            match jobs.as_slice() {
                [job] if recorded_state(&self.data, job).as_deref() == Some("done") => {
                    Some(job.clone())
                }
                _ => None,
            }
        })
    }

    /// Waits for a worker holding a batch that is not done, once at least one batch is done.
    fn wait_mid_batch(&self) -> (u32, String, Held) {
        self.wait(
            "a worker in the middle of a batch after a first done batch",
            DEADLINE,
            || {
                let job = job_ids(&self.data).into_iter().next()?;
                let done = done(&self.data, &job);
                if done.is_empty() {
                    return None;
                }
                let held = held_batches(&self.data)
                    .into_iter()
                    .find(|h| !done.contains(&h.batch))?;
                let worker = *self.workers().first()?;
                Some((worker, job, held))
            },
        )
    }

    /// Checks that the one job completed once: every batch done, one output, frame-exact.
    fn assert_one_output(&self, job: &str, clip: &Path, style: &str) -> PathBuf {
        assert_eq!(job_ids(&self.data), vec![job.to_owned()], "one job");
        let total = batches_total(&self.data, job);
        assert_eq!(
            done(&self.data, job),
            (0..total).collect::<BTreeSet<_>>(),
            "every batch has its done marker"
        );
        let outs = outputs(&self.data, style);
        assert_eq!(outs.len(), 1, "exactly one output: {outs:?}");
        check::frame_exact(clip, &outs[0]);
        let view = self.status().into_iter().find(|v| v["job"] == job).unwrap();
        assert_eq!(view["state"], "done", "{view}");
        assert_eq!(view["batches_done"], total, "{view}");
        outs[0].clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.own_processes() {
            let _ = kill(pid(p.pid), Signal::SIGKILL);
        }
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or("")
}

fn event_secs(event: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).unwrap();
    at.timestamp_micros() as f64 / 1e6
}

/// A clip big enough that a batch of four frames takes a noticeable time: 320x240, 40 frames.
fn slow_clip(dir: &Path) -> PathBuf {
    clips::cfr_with_aac(dir, 320, 240, 40, 25)
}

#[test]
fn a_worker_killed_mid_batch_is_replaced_and_its_batch_redelivered() {
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.3",
            "--settle",
            "0.3",
        ],
        &[],
    );
    let clip = slow_clip(&fleet.root);
    fleet.start();
    fleet.drop_clip(&clip, "input/0/clip.mp4");

    // Kill the worker while it holds a batch it has not finished. Between the look and the kill
    // it may finish that batch; then the next worker gets the same treatment.
    let mut killed = None;
    let mut snapshot = None;
    for _ in 0..5 {
        let (worker, job, held) = fleet.wait_mid_batch();
        snapshot = Some(Snapshot::take(&fleet.data, &job));
        kill(pid(worker), Signal::SIGKILL).unwrap();
        fleet.wait("the killed worker to be gone", DEADLINE, || {
            (!fleet.workers().contains(&worker)).then_some(())
        });
        if still_held(&fleet.data, &held) && !done(&fleet.data, &job).contains(&held.batch) {
            killed = Some(held);
            break;
        }
    }
    let killed = killed.expect("a worker died holding an unfinished batch");
    let snapshot = snapshot.unwrap();

    let job = fleet.wait_done();
    fleet.assert_one_output(&job, &clip, "0");
    snapshot.assert_not_redone(&fleet.data);
    // The batch in hand came back once its lock expired, to the replacement worker.
    let tries = attempts(&fleet.data, &job)
        .remove(&killed.batch)
        .unwrap_or_default();
    assert!(
        tries.contains(&(killed.delivery_count + 1)),
        "batch {} redelivered after the kill: attempts {tries:?}",
        killed.batch,
    );
    let events = fleet.events();
    assert!(
        events.iter().any(|e| message(e) == "worker failed"),
        "the supervisor noticed the dead worker"
    );
    assert!(
        events
            .iter()
            .filter(|e| message(e) == "worker started")
            .count()
            >= 2,
        "the supervisor started a replacement"
    );
}

#[test]
fn a_killed_supervisor_restarts_and_completes_the_job_without_redoing_batches() {
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.3",
            "--settle",
            "0.3",
        ],
        // Orphaned workers get SIGTERM from the parent-death signal: release the batch at once.
        &[("STYLEFLEET_SHUTDOWN_GRACE_SECS", "0.2")],
    );
    let clip = slow_clip(&fleet.root);
    fleet.start();
    fleet.drop_clip(&clip, "input/0/clip.mp4");

    let (worker, job, _held) = fleet.wait_mid_batch();
    let snapshot = Snapshot::take(&fleet.data, &job);
    fleet.signal(Signal::SIGKILL, false);
    let status = fleet.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "up was killed: {status}");

    // The worker does not run on as an orphan: it releases its batch and exits.
    fleet.wait(
        "the orphaned worker to exit",
        Duration::from_secs(20),
        || (!alive(worker)).then_some(()),
    );
    assert!(
        held_batches(&fleet.data).is_empty(),
        "the orphaned worker released its batch"
    );
    assert!(
        !fleet.log_text().lines().any(|l| l.trim() == "aborted"),
        "the orphaned worker drained instead of aborting"
    );
    assert!(
        done(&fleet.data, &job).len() < batches_total(&fleet.data, &job) as usize,
        "the supervisor died before the end of the job"
    );

    fleet.start();
    assert_eq!(fleet.wait_done(), job);
    fleet.assert_one_output(&job, &clip, "0");
    snapshot.assert_not_redone(&fleet.data);
}

#[test]
fn a_permanently_failing_batch_fails_its_job_while_another_job_completes() {
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.2",
            "--settle",
            "0.3",
        ],
        &[],
    );
    // A style image that is not an image: the job is planned, every batch fails for good.
    fs::create_dir_all(fleet.data.join("styles")).unwrap();
    fs::write(
        fleet.data.join("styles/broken.png"),
        "this is text, not a picture\n",
    )
    .unwrap();
    let broken_clip = clips::cfr_with_aac(&fleet.root, 64, 48, 12, 25);
    let good_clip = clips::cfr_with_aac(&fleet.root, 80, 60, 12, 25);
    fleet.start();
    fleet.drop_clip(&broken_clip, "input/broken/a.mp4");
    fleet.drop_clip(&good_clip, "input/0/b.mp4");

    let views = fleet.wait("both jobs to end", DEADLINE, || {
        let views = fleet.status();
        (views.len() == 2
            && views
                .iter()
                .all(|v| v["state"] == "done" || v["state"] == "failed"))
        .then_some(views)
    });
    let by_source = |source: &str| {
        views
            .iter()
            .find(|v| v["source"] == source)
            .unwrap_or_else(|| panic!("no job for {source}: {views:?}"))
            .clone()
    };
    let broken = by_source("input/broken/a.mp4");
    let good = by_source("input/0/b.mp4");

    assert_eq!(broken["state"], "failed", "{broken}");
    let reason = broken["reason"].as_str().unwrap();
    assert!(
        reason.contains("batch") && reason.contains("broken.png"),
        "the reason names the batch and the style image: {reason}"
    );
    // ... and says why, not only what: the decoder's complaint about the file.
    let why = reason.rsplit_once("broken.png").unwrap().1;
    assert!(
        why.trim_start_matches(':').trim().len() > 3,
        "the reason says why the style cannot be loaded: {reason}"
    );
    assert!(outputs(&fleet.data, "broken").is_empty(), "no output");
    let job = broken["job"].as_str().unwrap();
    let tries = attempts(&fleet.data, job);
    assert!(
        !tries.is_empty(),
        "the failing batches logged their attempts"
    );
    for (batch, attempts) in &tries {
        assert!(
            attempts.iter().all(|&a| a <= 3),
            "batch {batch} ran {attempts:?}, more than the delivery limit of 3"
        );
    }
    let letters = fleet.dead_letters();
    assert!(!letters.is_empty(), "the failing batches are dead-lettered");
    for l in &letters {
        assert_eq!(l["queue"], "batches", "{l}");
        assert!(
            l["id"].as_str().unwrap().starts_with(job),
            "only the broken job's messages are dead: {l}"
        );
        assert!(l["delivery_count"].as_u64().unwrap() <= 3, "{l}");
        assert!(!l["reason"].as_str().unwrap().is_empty(), "{l}");
    }

    assert_eq!(good["state"], "done", "{good}");
    let outs = outputs(&fleet.data, "0");
    assert_eq!(outs.len(), 1, "{outs:?}");
    check::frame_exact(&good_clip, &outs[0]);
}

#[test]
fn a_backlog_scales_workers_to_the_maximum_and_idleness_to_zero_after_the_cooldown() {
    const COOLDOWN: f64 = 3.0;
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "2",
            "--messages-per-worker",
            "1",
            "--cooldown",
            "3",
            "--poll",
            "0.2",
            "--settle",
            "0.3",
            "--batch-frames",
            "2",
        ],
        &[],
    );
    let clip = clips::cfr_with_aac(&fleet.root, 160, 120, 48, 25);
    fleet.start();
    // Idle from the start: no worker runs without work.
    std::thread::sleep(Duration::from_secs(1));
    assert!(fleet.workers().is_empty(), "no worker without a backlog");
    fleet.drop_clip(&clip, "input/0/clip.mp4");

    let mut most = 0;
    let job = fleet.wait("the job to be done", DEADLINE, || {
        most = most.max(fleet.workers().len());
        let job = job_ids(&fleet.data).into_iter().next()?;
        (recorded_state(&fleet.data, &job).as_deref() == Some("done")).then_some(job)
    });
    assert_eq!(most, 2, "the backlog scaled the workers to the maximum");
    let exited_cleanly = |events: &[Value]| {
        events
            .iter()
            .filter(|e| message(e) == "worker exited" && e["fields"]["status"] == "exit status: 0")
            .count()
    };
    let started = |events: &[Value]| {
        events
            .iter()
            .filter(|e| message(e) == "worker started")
            .count()
    };
    fleet.wait("the workers to scale to zero", DEADLINE, || {
        let events = fleet.events();
        (fleet.workers().is_empty() && exited_cleanly(&events) == started(&events)).then_some(())
    });

    let events = fleet.events();
    let scaling: Vec<&Value> = events
        .iter()
        .filter(|e| message(e) == "scaling workers")
        .collect();
    assert!(
        scaling.iter().any(|e| e["fields"]["to"] == 2),
        "scaled out to 2: {scaling:?}"
    );
    let last = scaling.last().unwrap();
    assert_eq!(last["fields"]["to"], 0, "{scaling:?}");
    // The queue was last non-empty when the last batch finished (its message is completed after
    // its done marker is written); the scale-in to zero waited the cool-down after that. The
    // margin is the fleet's look interval plus a slow look on a loaded machine; without the
    // cool-down the scale-in would follow within a look or two (under half a second).
    let total = batches_total(&fleet.data, &job);
    let last_done = (0..total)
        .map(|b| done_marker(&fleet.data, &job, b)["at"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let waited = event_secs(last) - last_done;
    assert!(
        waited >= COOLDOWN - 1.0,
        "scaled to zero {waited:.2} s after the last batch, before the {COOLDOWN} s cool-down"
    );
    let names: BTreeSet<String> = (0..total)
        .map(|b| {
            done_marker(&fleet.data, &job, b)["worker"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(names.len() >= 2, "both workers styled batches: {names:?}");

    // Scaled to zero, the supervisor itself keeps watching; Ctrl-C stops it cleanly.
    assert!(alive(fleet.up_pid()), "up still runs with zero workers");
    fleet.signal(Signal::SIGINT, true);
    let status = fleet.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn ctrl_c_drains_without_losing_or_locking_a_batch_and_a_restart_completes_the_job() {
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "2",
            "--messages-per-worker",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.3",
            "--settle",
            "0.3",
            "--grace",
            "1",
        ],
        // Workers release a batch they cannot finish in half a second of grace.
        &[("STYLEFLEET_SHUTDOWN_GRACE_SECS", "0.5")],
    );
    let clip = slow_clip(&fleet.root);
    fleet.start();
    fleet.drop_clip(&clip, "input/0/clip.mp4");

    let (_, job, _) = fleet.wait_mid_batch();
    let snapshot = Snapshot::take(&fleet.data, &job);
    // A terminal's Ctrl-C reaches the whole foreground process group.
    fleet.signal(Signal::SIGINT, true);
    let status = fleet.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "up drained and exited cleanly: {status}");
    let left: Vec<Proc> = fleet.own_processes();
    assert!(left.is_empty(), "no process outlives the drain: {left:?}");
    // The batches in hand were finished or released, not failed by the interruption (which
    // would spend one of their few deliveries).
    let retried: Vec<Value> = fleet
        .events()
        .into_iter()
        .filter(|e| message(e) == "retrying later")
        .collect();
    assert!(retried.is_empty(), "Ctrl-C failed a batch: {retried:?}");

    assert_eq!(
        locked_messages(&fleet.data),
        Vec::<String>::new(),
        "no message is left locked"
    );
    let total = batches_total(&fleet.data, &job);
    let finished = done(&fleet.data, &job);
    assert!(
        (finished.len() as u32) < total,
        "Ctrl-C came before the end of the job"
    );
    let queued = queued_batch_ids(&fleet.data);
    for batch in (0..total).filter(|b| !finished.contains(b)) {
        assert!(
            queued.contains(&format!("{job}:{batch}")),
            "batch {batch} is neither done nor queued: lost"
        );
    }

    fleet.start();
    assert_eq!(fleet.wait_done(), job);
    fleet.assert_one_output(&job, &clip, "0");
    snapshot.assert_not_redone(&fleet.data);
}

#[test]
fn a_flood_of_uploads_runs_one_job_at_a_time_and_completes_them_all() {
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "1",
            "--max-active-jobs",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.2",
            "--settle",
            "0.3",
        ],
        &[],
    );
    let clip = clips::cfr_with_aac(&fleet.root, 64, 48, 12, 25);
    fleet.start();
    for name in ["a", "b", "c"] {
        fleet.drop_clip(&clip, &format!("input/0/{name}.mp4"));
    }

    let jobs = fleet.wait("three jobs done", DEADLINE, || {
        let jobs = job_ids(&fleet.data);
        (jobs.len() == 3
            && jobs
                .iter()
                .all(|j| recorded_state(&fleet.data, j).as_deref() == Some("done")))
        .then_some(jobs)
    });
    // One planned at a time: each job was planned after the one before it was done.
    let mut timeline: Vec<(f64, f64, String)> = jobs
        .iter()
        .map(|j| {
            let created = manifest(&fleet.data, j)["created_at"].as_f64().unwrap();
            let status = read_json(&fleet.data.join("jobs").join(j).join("status.json")).unwrap();
            (created, status["updated_at"].as_f64().unwrap(), j.clone())
        })
        .collect();
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in timeline.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "job {} was planned at {} before job {} was done at {}",
            pair[1].2,
            pair[1].0,
            pair[0].2,
            pair[0].1
        );
    }
    let planned = fleet
        .events()
        .iter()
        .filter(|e| message(e) == "job planned")
        .count();
    assert_eq!(planned, 3, "each upload planned once");
    for name in ["a", "b", "c"] {
        let out = fleet.data.join(format!("output/0/{name}.mp4"));
        assert!(out.is_file(), "{} missing", out.display());
        check::frame_exact(&clip, &out);
    }
    assert_eq!(outputs(&fleet.data, "0").len(), 3);
}
