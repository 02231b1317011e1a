//! The harness of the fleet tests (`tests/fleet.rs`): one `stylefleet up` on its own data folder
//! ([`Fleet`]), the processes it started (read from `/proc`), and peeks into its queue database
//! and store folder (held batches, done markers, attempts, outputs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use super::azurite::check;
use super::clips;

pub const BIN: &str = env!("CARGO_BIN_EXE_stylefleet");

/// Long enough for a loaded two-core machine; a healthy run needs a fraction of it.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Settings every fleet in this file runs with: short locks, few deliveries, quick retries.
pub const BASE_ENV: &[(&str, &str)] = &[
    ("STYLEFLEET_LOCK_SECS", "2"),
    ("STYLEFLEET_MAX_DELIVERIES", "3"),
    ("STYLEFLEET_RETRY_MIN_SECS", "0.2"),
    ("STYLEFLEET_LOG_FORMAT", "json"),
    ("STYLEFLEET_WORKER_THREADS", "1"),
    ("RUST_LOG", "info"),
];

/// A process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub args: Vec<String>,
}

/// Live (not zombie) processes.
pub fn processes() -> Vec<Proc> {
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

pub fn alive(pid: u32) -> bool {
    processes().iter().any(|p| p.pid == pid)
}

pub fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap())
}

/// A batch message locked by a receiver, as the queue database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: String,
    pub batch: u32,
    pub token: String,
    pub delivery_count: u32,
}

pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub fn queue_db(data: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data.join("queue.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db
}

/// Batch messages locked right now (a lock that has not expired).
pub fn held_batches(data: &Path) -> Vec<Held> {
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
pub fn still_held(data: &Path, held: &Held) -> bool {
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
pub fn locked_messages(data: &Path) -> Vec<String> {
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
pub fn queued_batch_ids(data: &Path) -> BTreeSet<String> {
    let db = queue_db(data);
    let mut stmt = db
        .prepare("SELECT id FROM messages WHERE queue = 'batches' AND state = 'active'")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn job_ids(data: &Path) -> Vec<String> {
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

pub fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

pub fn manifest(data: &Path, job: &str) -> Value {
    read_json(&data.join("jobs").join(job).join("manifest.json")).unwrap()
}

pub fn batches_total(data: &Path, job: &str) -> u32 {
    u32::try_from(manifest(data, job)["batches"].as_array().unwrap().len()).unwrap()
}

/// Batches with a done marker.
pub fn done(data: &Path, job: &str) -> BTreeSet<u32> {
    fs::read_dir(data.join("jobs").join(job).join("done"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn done_marker(data: &Path, job: &str, batch: u32) -> Value {
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
pub fn recorded_state(data: &Path, job: &str) -> Option<String> {
    read_json(&data.join("jobs").join(job).join("status.json"))
        .and_then(|s| s["state"].as_str().map(str::to_owned))
}

/// Attempts logged per batch (`logs/<job>/batch-<n>.attempt-<k>.log`).
pub fn attempts(data: &Path, job: &str) -> BTreeMap<u32, BTreeSet<u32>> {
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
pub fn outputs(data: &Path, style: &str) -> Vec<PathBuf> {
    fs::read_dir(data.join("output").join(style))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What a job had done at one moment: its done batches and their chunks' modification times.
#[derive(Debug)]
pub struct Snapshot {
    pub job: String,
    pub done: BTreeSet<u32>,
    pub chunks: BTreeMap<u32, SystemTime>,
}

impl Snapshot {
    pub fn take(data: &Path, job: &str) -> Self {
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
    pub fn assert_not_redone(&self, data: &Path) {
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
pub struct Fleet {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    up: Option<Child>,
}

impl Fleet {
    /// A fleet (not started) with `up` arguments and extra environment.
    pub fn new(args: &[&str], env: &[(&str, &str)]) -> Self {
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
    pub fn start(&mut self) {
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
    pub fn ups(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| message(e) == "fleet up; watching input/")
            .count()
    }

    pub fn up_pid(&self) -> u32 {
        self.up.as_ref().unwrap().id()
    }

    /// Sends `signal` to `up` alone, or to its whole process group (as a terminal's Ctrl-C does).
    pub fn signal(&self, signal: Signal, group: bool) {
        if group {
            killpg(pid(self.up_pid()), signal).unwrap();
        } else {
            kill(pid(self.up_pid()), signal).unwrap();
        }
    }

    /// Waits for `up` to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
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
    pub fn drop_clip(&self, clip: &Path, to: &str) {
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

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- last lines of the fleet log ---\n{}",
            lines[from..].join("\n")
        )
    }

    /// The JSON log events of the fleet and its workers, in order.
    pub fn events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Live worker processes of the current `up`.
    pub fn workers(&self) -> Vec<u32> {
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
    pub fn own_processes(&self) -> Vec<Proc> {
        let data = self.data.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|p| p.args.iter().any(|a| a.contains(&data)))
            .collect()
    }

    /// `stylefleet status --json`.
    pub fn status(&self) -> Vec<Value> {
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
    pub fn dead_letters(&self) -> Vec<Value> {
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
    pub fn wait<T>(&self, what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
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
    pub fn wait_done(&self) -> String {
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
    pub fn wait_mid_batch(&self) -> (u32, String, Held) {
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
    pub fn assert_one_output(&self, job: &str, clip: &Path, style: &str) -> PathBuf {
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

pub fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or("")
}

pub fn event_secs(event: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).unwrap();
    at.timestamp_micros() as f64 / 1e6
}

/// A clip big enough that a batch of four frames takes a noticeable time: 320x240, 40 frames.
pub fn slow_clip(dir: &Path) -> PathBuf {
    clips::cfr_with_aac(dir, 320, 240, 40, 25)
}
