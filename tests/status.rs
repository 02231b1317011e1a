#![allow(clippy::unwrap_used)]
//! `status`, `jobs rm`, `clean` and the `dlq` guards as a user meets them, through the real CLI
//! on tiny clips: the list newest first with the names the user gave, one job in full, prefixes,
//! a `process` killed mid-job shown as interrupted (and resumed), a clean that writes nothing in
//! a dry run and then removes exactly the finished job's files, and a purge that will not delete
//! every dead letter unasked.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use support::frames::pattern_clip;
use support::pipeline::{self as sp, assert_success, wait_for};

const FRAMES: u32 = 8;
const BATCH_FRAMES: u32 = 4;

/// A data folder with its clips, and a fault folder so that each armed point fires once.
struct Case {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Case { dir, data }
    }

    fn clip(&self, name: &str, pattern: &str) -> PathBuf {
        pattern_clip(self.dir.path(), name, pattern, 64, 48, FRAMES)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// `process <clip> -o <out>` at style 0, one worker, batches of 4, with `faults` armed.
    fn process(&self, clip: &Path, out: &Path, faults: &str) -> Output {
        let args: Vec<OsString> = vec![
            "process".into(),
            clip.into(),
            "-o".into(),
            out.into(),
            "--style".into(),
            "0".into(),
            "--workers".into(),
            "1".into(),
            "--batch-frames".into(),
            BATCH_FRAMES.to_string().into(),
        ];
        sp::command(&self.data, args)
            .env(stylefleet::fault::FAULTS_VAR, faults)
            .env(
                stylefleet::fault::FAULT_DIR_VAR,
                self.dir.path().join("faults"),
            )
            .stdin(Stdio::null())
            .output()
            .expect("stylefleet process runs")
    }

    /// `stylefleet <args> --data <data>` with stdin closed (not a terminal).
    fn run(&self, args: &[&str]) -> Output {
        sp::command(&self.data, args)
            .stdin(Stdio::null())
            .output()
            .expect("stylefleet runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&args.join(" "), &out);
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let out = self.run(args);
        match sp::json_of(&args.join(" "), &out) {
            Value::Array(v) => v,
            other => panic!("{args:?} is not a list: {other}"),
        }
    }

    /// Every file under the data folder with its size and modification time.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u64, SystemTime)> {
        sp::tree(&self.data)
            .into_iter()
            // The queue's database and the presence records are not the jobs' files.
            .filter(|p| {
                !p.to_string_lossy().starts_with("queue.sqlite") && !p.starts_with("logs/consumers")
            })
            .map(|p| {
                let meta = std::fs::metadata(self.data.join(&p)).unwrap();
                (p, (meta.len(), meta.modified().unwrap()))
            })
            .collect()
    }
}

/// The job a `process` run names on stderr.
fn job_of(out: &Output) -> String {
    sp::job_of_process(out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The fields `status --json` had before it grew: scripts read them.
const OLD_FIELDS: [&str; 11] = [
    "job",
    "source",
    "state",
    "batches_done",
    "batches_total",
    "frames_done",
    "frames_total",
    "fps",
    "reason",
    "output",
    "timings",
];

#[test]
fn status_lists_jobs_newest_first_as_the_user_named_them() {
    let case = Case::new();
    let first = case.clip("first.mp4", "testsrc2");
    let second = case.clip("second.mp4", "smptebars");
    let broken = case.clip("broken.mp4", "rgbtestsrc");
    let (out1, out2) = (case.out("first-styled.mp4"), case.out("second-styled.mp4"));

    let run = case.process(&first, &out1, "");
    assert_success("process first", &run);
    let first_job = job_of(&run);
    let run = case.process(&second, &out2, "");
    assert_success("process second", &run);
    let second_job = job_of(&run);
    // A batch that fails for good: the job fails with that reason.
    let run = case.process(
        &broken,
        &case.out("broken-styled.mp4"),
        "batch.after-chunk=fail",
    );
    assert!(!run.status.success(), "the broken job fails");
    let broken_job = job_of(&run);

    // Scripts: the old fields stay, new ones come beside them, newest first.
    let jobs = case.json(&["status", "--json"]);
    let order: Vec<&str> = jobs.iter().map(|j| j["job"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [&broken_job, &second_job, &first_job],
        "newest first"
    );
    for job in &jobs {
        for field in OLD_FIELDS {
            assert!(job.get(field).is_some(), "{field} missing in {job}");
        }
        for field in ["created_at", "style", "input", "named_output", "work_secs"] {
            assert!(job.get(field).is_some(), "{field} missing in {job}");
        }
    }
    let done = &jobs[1];
    assert_eq!(done["state"], "done");
    assert_eq!(done["style"], "0");
    assert_eq!(done["input"], second.display().to_string());
    assert_eq!(done["named_output"], out2.display().to_string());
    assert!(
        done["output"].as_str().unwrap().starts_with("output/"),
        "`output` is still the store's: {done}"
    );
    let (fps, work) = (
        done["fps"].as_f64().unwrap(),
        done["work_secs"].as_f64().unwrap(),
    );
    assert!(work > 0.0 && fps > 0.0, "{done}");
    assert!(
        (fps * work - f64::from(FRAMES)).abs() < 1e-6,
        "fps is frames over work time: {done}"
    );
    assert_eq!(jobs[0]["state"], "failed");

    // People: one row each, short id, age, style, the -o path rather than the store's copy.
    let table = case.ok(&["status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows:\n{table}");
    for word in ["ID", "AGE", "STYLE", "STATE", "FRAMES", "FPS"] {
        assert!(lines[0].contains(word), "{word} in the header:\n{table}");
    }
    assert!(
        lines[1].contains("failed") && lines[1].contains("broken.mp4: "),
        "{table}"
    );
    assert!(
        lines[1].contains("injected fault"),
        "the reason, shortened:\n{table}"
    );
    assert!(
        lines[1].chars().count() <= 160,
        "one line that fits:\n{table}"
    );
    assert!(
        lines[2].contains(&format!("second.mp4 -> {}", out2.display()))
            && lines[2].contains("8/8 100%")
            && lines[2].contains("s ago")
            && lines[2].contains("done"),
        "{table}"
    );
    assert!(lines[3].starts_with(&first_job[..6]), "{table}");
    assert!(!table.contains("process/"), "no store paths:\n{table}");

    // Filters by state.
    let failed = case.json(&["status", "--json", "--state", "failed"]);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["job"], broken_job.as_str());
    assert_eq!(case.json(&["status", "--json", "--state", "done"]).len(), 2);
    assert_eq!(case.ok(&["status", "--state", "running"]), "no jobs\n");

    // One job in full, by a prefix: its batches, the log location, the whole reason.
    let detail = case.ok(&["status", &second_job[..5]]);
    assert!(
        detail.contains(&format!("job         {second_job}")),
        "{detail}"
    );
    assert!(
        detail.contains("BATCH") && detail.contains("ATTEMPTS"),
        "{detail}"
    );
    let batch_rows: Vec<&str> = detail
        .lines()
        .filter(|l| l.trim_start().starts_with(['0', '1']) && l.contains(" done "))
        .collect();
    assert_eq!(batch_rows.len(), 2, "two batches, done:\n{detail}");
    let logs = detail
        .lines()
        .find_map(|l| l.strip_prefix("logs        "))
        .unwrap_or_else(|| panic!("a log location:\n{detail}"));
    assert!(Path::new(logs).is_dir(), "the log folder {logs} exists");
    let full = case.json(&["status", &second_job, "--json"]);
    assert_eq!(full.len(), 1);
    for field in OLD_FIELDS {
        assert!(full[0].get(field).is_some(), "{field} missing: {}", full[0]);
    }
    let batches = full[0]["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    for b in batches {
        assert_eq!(b["state"], "done", "{b}");
        assert!(b["attempts"].as_u64().unwrap() >= 1, "{b}");
        assert!(b["worker"].as_str().is_some_and(|w| !w.is_empty()), "{b}");
        assert!(b["finished_at"].as_f64() >= b["started_at"].as_f64(), "{b}");
    }
    let broken_detail = case.ok(&["status", &broken_job[..6]]);
    assert!(broken_detail.contains("failure:\n  "), "{broken_detail}");
    assert!(broken_detail.contains("dead-lettered") || broken_detail.contains("failed"));

    // An ambiguous prefix names the candidates. Two ids that share a prefix are made by giving
    // a copy of a job's records another id with the same first eight digits.
    let twin = format!(
        "{}{}",
        &first_job[..8],
        if first_job.ends_with("ffffffff") {
            "00000000"
        } else {
            "ffffffff"
        }
    );
    let jobs_dir = case.data.join("jobs");
    copy_dir(&jobs_dir.join(&first_job), &jobs_dir.join(&twin));
    let out = case.run(&["status", &first_job[..8]]);
    assert!(!out.status.success(), "an ambiguous prefix is refused");
    let err = stderr(&out);
    assert!(err.contains(&first_job) && err.contains(&twin), "{err}");
    std::fs::remove_dir_all(jobs_dir.join(&twin)).unwrap();
    let out = case.run(&["status", "0123456789abcdeX"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no job"),
        "{}",
        stderr(&out)
    );

    // dlq takes the same prefixes; purging everything needs --yes without a terminal.
    let letters = sp::dlq_list(&case.data, &["--job", &broken_job[..6]]);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let out = case.run(&["dlq", "purge"]);
    assert!(
        !out.status.success(),
        "a purge of everything is refused unasked"
    );
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(sp::dlq_list(&case.data, &[]).len(), 1, "nothing was purged");
    let out = case.ok(&["dlq", "purge", "--job", &broken_job[..6]]);
    assert!(out.contains("purged 1 of 1"), "{out}");
    assert!(sp::dlq_list(&case.data, &[]).is_empty());
}

#[test]
fn a_killed_process_shows_interrupted_and_its_pause_does_not_count() {
    let case = Case::new();
    let clip = case.clip("clip.mp4", "testsrc2");
    let out = case.out("styled.mp4");
    let started = Instant::now();
    // Killed (SIGKILL) at the start of its stitch: every batch is done, nothing runs any more.
    let first = case.process(&clip, &out, "stitch.start=kill");
    let first_run = started.elapsed().as_secs_f64();
    assert!(!first.status.success(), "killed");
    let job = sp::job_dirs(&case.data).pop().expect("a job");

    let state = || case.json(&["status", "--json"])[0]["state"].clone();
    wait_for("the job to show interrupted", 30, || {
        (state() == "interrupted").then_some(())
    });
    let table = case.ok(&["status"]);
    assert!(table.contains("interrupted"), "{table}");
    let listed = case.json(&["status", "--json", "--state", "interrupted"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job"], job.as_str());
    assert!(
        case.json(&["status", "--json", "--state", "running"])
            .is_empty()
    );
    let detail = case.ok(&["status", &job[..6]]);
    assert!(
        detail.contains("run the same `process` command again"),
        "{detail}"
    );
    // Not finished: `jobs rm` leaves it alone.
    let rm = case.run(&["jobs", "rm", &job[..6]]);
    assert!(!rm.status.success(), "an interrupted job is not removed");
    assert!(stderr(&rm).contains("interrupted"), "{}", stderr(&rm));

    // A pause, then the same command resumes and finishes the job.
    std::thread::sleep(Duration::from_secs(2));
    let second = case.process(&clip, &out, "");
    assert_success("the resumed process", &second);
    let view = &case.json(&["status", "--json"])[0];
    assert_eq!(view["state"], "done", "{view}");
    let work = view["work_secs"].as_f64().unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(
        work > 0.0 && work <= first_run && wall >= first_run + 2.0,
        "work time {work} s counts the batches of the first run ({first_run} s), not the \
         pause (wall {wall} s): {view}"
    );
    assert!(
        view["fps"].as_f64().unwrap() > f64::from(FRAMES) / wall,
        "fps is not over wall time: {view}"
    );
}

#[test]
fn clean_removes_exactly_the_finished_jobs_files() {
    let case = Case::new();
    let done_clip = case.clip("done.mp4", "testsrc2");
    let cut_clip = case.clip("cut.mp4", "smptebars");
    let done_out = case.out("done-styled.mp4");
    let run = case.process(&done_clip, &done_out, "");
    assert_success("process", &run);
    let done_job = job_of(&run);
    let output_bytes = std::fs::read(&done_out).unwrap();
    // An unfinished job beside it, which nothing may touch.
    let cut = case.process(&cut_clip, &case.out("cut-styled.mp4"), "stitch.start=kill");
    assert!(!cut.status.success());
    let cut_job = sp::job_dirs(&case.data)
        .into_iter()
        .find(|j| *j != done_job)
        .unwrap();
    wait_for("the cut job to show interrupted", 30, || {
        case.json(&["status", "--json", "--state", "interrupted"])
            .len()
            .eq(&1)
            .then_some(())
    });

    // A dry run lists the done job's files and bytes, and writes nothing.
    let before = case.snapshot();
    let dry = case.ok(&["clean", "--dry-run"]);
    assert_eq!(case.snapshot(), before, "the dry run wrote nothing:\n{dry}");
    assert!(dry.contains(&done_job) && !dry.contains(&cut_job), "{dry}");
    assert!(dry.contains("would be freed"), "{dry}");
    assert!(
        dry.contains(&format!("jobs/{done_job}/manifest.json")),
        "{dry}"
    );
    assert!(dry.contains("process/0/"), "the input copy goes:\n{dry}");

    // The done job's output name claim names it inside.
    let claims: Vec<PathBuf> = before
        .keys()
        .filter(|p| p.starts_with("jobs/outputs"))
        .filter(|p| {
            std::fs::read_to_string(case.data.join(p)).is_ok_and(|text| text.contains(&done_job))
        })
        .cloned()
        .collect();
    let mine = |p: &Path| {
        let s = p.to_string_lossy();
        s.contains(&done_job)
            || claims.iter().any(|c| c == p)
            || s.starts_with("process/0/") && !s.contains("cut.mp4")
    };
    let cleaned = case.ok(&["clean"]);
    assert!(cleaned.contains("freed"), "{cleaned}");
    let after = case.snapshot();
    let (gone, changed): (Vec<_>, Vec<_>) = before
        .iter()
        .filter(|(p, meta)| after.get(*p) != Some(meta))
        .map(|(p, _)| p.clone())
        .partition(|p| !after.contains_key(p));
    assert!(changed.is_empty(), "nothing was rewritten: {changed:?}");
    for p in &gone {
        assert!(
            mine(p)
                || p.starts_with("output/")
                || p.starts_with("scratch/sources")
                || p.starts_with("logs/consumers"),
            "{} was not the done job's",
            p.display()
        );
    }
    for p in before.keys() {
        let s = p.to_string_lossy();
        if s.contains(&cut_job) || s.contains("cut.mp4") {
            assert!(after.contains_key(p), "{s} of the unfinished job stays");
        }
    }
    assert!(!case.data.join("jobs").join(&done_job).exists());
    assert!(!case.data.join("logs").join(&done_job).exists());
    assert!(
        gone.iter().any(|p| p.starts_with("output/")),
        "the store's copy of the -o output"
    );
    assert_eq!(
        std::fs::read(&done_out).unwrap(),
        output_bytes,
        "the -o file is the user's"
    );
    let listed = case.json(&["status", "--json"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job"], cut_job.as_str());

    // Idempotent, and the clip can be processed again.
    assert_eq!(case.ok(&["clean"]), "no finished jobs to remove\n");
    let again = case.process(&done_clip, &case.out("again.mp4"), "");
    assert_success("process after clean", &again);
    assert_eq!(job_of(&again), done_job, "the same job, planned afresh");

    // A removal killed half-way is not shown as a job, and the next clean finishes it.
    let killed = sp::command(&case.data, ["jobs", "rm", &done_job[..6]])
        .env(stylefleet::fault::FAULTS_VAR, "clean.after-markers=kill")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!killed.status.success(), "killed mid-removal");
    assert!(
        case.data
            .join("jobs")
            .join(&done_job)
            .join("manifest.json")
            .exists()
    );
    let listed = case.json(&["status", "--json"]);
    assert!(
        listed.iter().all(|j| j["job"] != done_job.as_str()),
        "a half-removed job is not listed: {listed:#?}"
    );
    let finished = case.ok(&["clean"]);
    assert!(finished.contains(&done_job), "{finished}");
    assert!(!case.data.join("jobs").join(&done_job).exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `--watch` redraws until Ctrl-C, then exits 0: run it for a while on a pipe (where each screen
/// is printed after the last, without terminal codes) and interrupt it.
#[test]
fn watch_redraws_until_interrupted() {
    let case = Case::new();
    let screen = case.dir.path().join("screen.txt");
    let mut child = sp::command(&case.data, ["status", "--watch", "0.3"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&screen).unwrap())
        .spawn()
        .unwrap();
    // The first screen comes after the Ctrl-C handler is in place; then let it redraw a while.
    let stdout = || std::fs::read_to_string(&screen).unwrap_or_default();
    wait_for("the first screen", 60, || {
        stdout().contains("no jobs").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1200));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends the watch cleanly: {status}");
    let stdout = stdout();
    let screens = stdout.matches("no jobs").count();
    assert!(screens >= 2, "redrawn more than once:\n{stdout}");
    assert!(!stdout.contains('\x1b'), "no terminal codes on a pipe");
}
