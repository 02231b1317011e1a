//! Driving the `stylefleet` binary on a data folder and checking what it produced: the command
//! runner with short queue timings, `status --json` and `dlq list --json` as JSON, the job folders
//! of the store, and a frame-exactness check against the source made with ffprobe and ffmpeg alone
//! (independent of the pipeline's own verification, which is checked as well).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::azurite::check;

/// The environment every command gets: locks that expire in 2 s, three deliveries at most, short
/// backoff, and a thread budget that suits a small machine.
pub const FAST_QUEUE: [(&str, &str); 4] = [
    ("STYLEFLEET_LOCK_SECS", "2"),
    ("STYLEFLEET_MAX_DELIVERIES", "3"),
    ("STYLEFLEET_RETRY_MIN_SECS", "0.2"),
    ("STYLEFLEET_WORKER_THREADS", "1"),
];

/// `stylefleet` with `args` and `--data <data>` appended, with [`FAST_QUEUE`]; waits for it.
pub fn stylefleet<I, S>(data: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command(data, args).output().expect("stylefleet runs")
}

/// The command [`stylefleet`] runs, for callers that need to change it first.
pub fn command<I, S>(data: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stylefleet"));
    cmd.args(args)
        .arg("--data")
        .arg(data)
        .envs(FAST_QUEUE)
        .env_remove("RUST_LOG")
        .env_remove("STYLEFLEET_STORE")
        .env_remove("STYLEFLEET_QUEUE")
        .env_remove("STYLEFLEET_LOG_STORE");
    cmd
}

/// `stylefleet process <clip> -o <out> --style 0 --workers <workers> --batch-frames <batch>`.
pub fn process(data: &Path, clip: &Path, out: &Path, workers: u32, batch: u32) -> Output {
    stylefleet(
        data,
        [
            OsStr::new("process"),
            clip.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("--style"),
            OsStr::new("0"),
            OsStr::new("--workers"),
            OsStr::new(&workers.to_string()),
            OsStr::new("--batch-frames"),
            OsStr::new(&batch.to_string()),
        ],
    )
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses a command's stdout as JSON, after checking that it succeeded.
pub fn json_of(what: &str, out: &Output) -> Value {
    assert_success(what, out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `stylefleet status --json`: one object per job.
pub fn status(data: &Path) -> Vec<Value> {
    let out = stylefleet(data, ["status", "--json"]);
    match json_of("status --json", &out) {
        Value::Array(jobs) => jobs,
        other => panic!("status --json is not a list: {other}"),
    }
}

/// The job `id` as `status --json` shows it.
pub fn job_status(data: &Path, id: &str) -> Value {
    status(data)
        .into_iter()
        .find(|j| j["job"] == id)
        .unwrap_or_else(|| panic!("status --json does not list job {id}"))
}

/// `stylefleet dlq list --json` with extra `args` (filters), without the `age_secs` field (which
/// ticks, so that two listings of the same letters compare equal).
pub fn dlq_list(data: &Path, args: &[&str]) -> Vec<Value> {
    let out = stylefleet(data, ["dlq", "list", "--json"].iter().chain(args));
    match json_of("dlq list --json", &out) {
        Value::Array(mut letters) => {
            for letter in &mut letters {
                let age = letter.as_object_mut().and_then(|l| l.remove("age_secs"));
                assert!(age.is_some_and(|a| a.is_u64()), "no age in {letter}");
            }
            letters
        }
        other => panic!("dlq list --json is not a list: {other}"),
    }
}

/// The job folders under `<data>/jobs/` (named by a job id; `jobs/outputs/` holds the output
/// name claims).
pub fn job_dirs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = files(&data.join("jobs"))
        .into_iter()
        .filter(|n| stylefleet::job::JobId::parse(n).is_ok())
        .collect();
    names.sort();
    names
}

/// The file names in `dir` (none if it does not exist), sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Every file under `dir`, recursively, relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The job id that `process` names on its last stderr line (`job <id> done: ...` or
/// `error: job <id> failed: ...`).
pub fn job_of_process(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: ").unwrap_or(l).strip_prefix("job "))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
        .unwrap_or_else(|| panic!("no job named in:\n{stderr}"))
        .to_owned()
}

fn run(program: &str, args: &[&OsStr]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ffprobe_json(file: &Path, args: &[&str]) -> Value {
    let mut all: Vec<&OsStr> = ["-v", "error", "-of", "json"]
        .iter()
        .chain(args)
        .map(OsStr::new)
        .collect();
    all.push(file.as_os_str());
    serde_json::from_str(&run("ffprobe", &all)).expect("ffprobe json")
}

/// `(width, height, rotation)` of the first video stream (rotation 0 without a display matrix).
pub fn geometry(file: &Path) -> (u64, u64, i64) {
    let v = ffprobe_json(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height:stream_side_data=rotation",
        ],
    );
    let s = &v["streams"][0];
    let rotation = s["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["rotation"].as_i64())
        .unwrap_or(0);
    (
        s["width"].as_u64().expect("width"),
        s["height"].as_u64().expect("height"),
        rotation,
    )
}

/// Codec and start time (seconds) of the first stream of `kind` (`v`, `a`), if there is one.
pub fn stream_start(file: &Path, kind: &str) -> Option<(String, f64)> {
    let v = ffprobe_json(
        file,
        &[
            "-select_streams",
            &format!("{kind}:0"),
            "-show_entries",
            "stream=codec_name,start_time",
        ],
    );
    let s = v["streams"].as_array()?.first()?;
    Some((
        s["codec_name"].as_str().expect("codec").to_owned(),
        s["start_time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0),
    ))
}

/// `(pts, dts, duration, size)` of every packet of the first audio stream, as stored.
pub fn audio_packets(file: &Path) -> Vec<(i64, i64, i64, u64)> {
    let v = ffprobe_json(
        file,
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "packet=pts,dts,duration,size",
        ],
    );
    let num = |p: &Value, k: &str| -> i64 {
        match &p[k] {
            Value::Number(n) => n.as_i64().expect("integer"),
            Value::String(s) => s.parse().expect("integer"),
            _ => i64::MIN,
        }
    };
    v["packets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                num(p, "pts"),
                num(p, "dts"),
                num(p, "duration"),
                num(p, "size") as u64,
            )
        })
        .collect()
}

/// MD5 of the decoded video frames: equal only if the pictures are the same.
pub fn decoded_video_md5(file: &Path) -> String {
    run(
        "ffmpeg",
        &["-hide_banner", "-nostdin", "-v", "error", "-i"]
            .map(OsStr::new)
            .into_iter()
            .chain([file.as_os_str()])
            .chain(["-map", "0:v:0", "-f", "md5", "-"].map(OsStr::new))
            .collect::<Vec<_>>(),
    )
    .trim()
    .to_owned()
}

/// The output is the source, styled, frame for frame: the same number of frames at the same
/// times, the same stored size and rotation, the audio copied packet for packet (same codec,
/// timestamps, durations and sizes; same bytes) and in sync (the same offset between the audio's
/// and the video's start), and different pictures. `stylefleet::media::verify` agrees.
pub async fn assert_frame_exact(source: &Path, output: &Path) {
    let (src_times, out_times) = (check::video_times(source), check::video_times(output));
    assert_eq!(
        src_times.len(),
        out_times.len(),
        "frame count of {} vs its source",
        output.display()
    );
    for (i, (s, o)) in src_times.iter().zip(&out_times).enumerate() {
        assert!(
            (s - o).abs() < 1e-3,
            "frame {i}: source at {s} s, output at {o} s"
        );
    }
    assert_eq!(
        geometry(output),
        geometry(source),
        "width, height, rotation"
    );

    let (src_audio, out_audio) = (stream_start(source, "a"), stream_start(output, "a"));
    match (&src_audio, &out_audio) {
        (None, None) => {}
        (Some((src_codec, src_start)), Some((out_codec, out_start))) => {
            assert_eq!(out_codec, src_codec, "audio codec");
            let video_start = |f: &Path| stream_start(f, "v").expect("a video stream").1;
            let src_offset = src_start - video_start(source);
            let out_offset = out_start - video_start(output);
            assert!(
                (src_offset - out_offset).abs() < 1e-3,
                "audio starts {src_offset} s after the video in the source, {out_offset} s in the output"
            );
            let (src_packets, out_packets) = (audio_packets(source), audio_packets(output));
            assert!(!src_packets.is_empty(), "the source has audio packets");
            assert_eq!(
                out_packets, src_packets,
                "audio packets (pts, dts, duration, size)"
            );
            assert_eq!(
                check::audio_md5(output),
                check::audio_md5(source),
                "audio bytes"
            );
        }
        _ => panic!("audio stream: source {src_audio:?}, output {out_audio:?}"),
    }
    assert_ne!(
        decoded_video_md5(output),
        decoded_video_md5(source),
        "the pictures were styled"
    );

    let probe = stylefleet::media::probe(source)
        .await
        .expect("probe source");
    stylefleet::media::verify(&probe, output)
        .await
        .expect("stylefleet::media::verify");
}

/// `stylefleet up` on a data folder, its output in a log file; stopped with SIGINT (a drain) when
/// dropped.
pub struct Up {
    child: std::process::Child,
    /// The log file (stdout and stderr, JSON lines).
    pub log: PathBuf,
}

/// `up` settings that react within a second: one worker, short polls and settling, a 1 s
/// cool-down, batches of 4 frames.
pub const QUICK_UP: [&str; 12] = [
    "--max-workers",
    "1",
    "--messages-per-worker",
    "1",
    "--cooldown",
    "1",
    "--poll",
    "0.2",
    "--settle",
    "0.3",
    "--batch-frames",
    "4",
];

impl Up {
    /// Starts `up` on `data` with `args`, logging JSON to `log` (appended).
    pub fn start(data: &Path, log: &Path, args: &[&str]) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let child = command(data, ["up", "--log-format", "json"].iter().chain(args))
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("clone the log"))
            .stderr(file)
            .spawn()
            .expect("stylefleet up starts");
        Up {
            child,
            log: log.to_owned(),
        }
    }

    /// The JSON log events so far (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Drains and stops the fleet (SIGINT, as Ctrl-C); panics if it does not exit 0 within 30 s.
    pub fn stop(mut self) {
        let status = self.interrupt_and_wait();
        assert!(
            status.is_some_and(|s| s.success()),
            "up did not stop cleanly ({status:?}):\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn interrupt_and_wait(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.interrupt_and_wait();
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs`; panics naming `what`
/// otherwise.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Copies `file` into `<data>/input/<style>/<name>` the way an uploader that writes in place would.
pub fn drop_into(data: &Path, style: &str, file: &Path, name: &str) -> PathBuf {
    let dir = data.join("input").join(style);
    std::fs::create_dir_all(&dir).expect("create input/<style>");
    let to = dir.join(name);
    std::fs::copy(file, &to).expect("copy into input/");
    to
}
