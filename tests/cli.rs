#![allow(clippy::unwrap_used)]
//! The command line as a person meets it, through the real binary: refusals that come before
//! anything is written, a closed stdout, `up` on a new data folder, and the terminal itself (a
//! tmux pane of 80 columns: the progress bar and log lines, colour, `--quiet`).

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::frames::pattern_clip;
use support::pipeline::{self as sp, QUICK_UP, Up, assert_success, wait_for};

/// `stylefleet process <clip> -o <out> <extra...>` on `data`, with small batches and one worker.
fn process(data: &Path, clip: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut args: Vec<&OsStr> = vec![
        "process".as_ref(),
        clip.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    args.extend(["--workers", "1", "--batch-frames", "4"].map(OsStr::new));
    let mut cmd = sp::command(data, args);
    cmd.stdin(Stdio::null());
    cmd
}

fn output_of(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Each refusal exits non-zero before the data folder is even created, says what is wrong once
/// on one line, and names a style (never a file) when it guesses what was meant.
#[test]
fn refused_commands_say_why_once_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 8);
    let folder = dir.path().join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let out = dir.path().join("out.mp4");
    let missing = dir.path().join("missing.mp4");
    let under_a_file = clip.join("out.mp4");
    let (clip_s, folder_s, out_s) = (
        clip.to_str().unwrap(),
        folder.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let missing_s = missing.to_str().unwrap();
    let under_s = under_a_file.to_str().unwrap();
    let existing = dir.path().join("exists.mp4");
    std::fs::write(&existing, b"not to be replaced").unwrap();
    let existing_s = existing.to_str().unwrap();
    // (what, arguments after `process`, what the error says)
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "a misspelt style",
            vec![clip_s, "-o", out_s, "-s", "starry-bleu"],
            "did you mean `starry-blue`?",
        ),
        (
            "an index past the last style",
            vec![clip_s, "-o", out_s, "-s", "26"],
            "out of range",
        ),
        (
            "a blend weight that is not a number",
            vec![clip_s, "-o", out_s, "-s", "3:x,4:1"],
            "is not a number",
        ),
        (
            "a style image that does not exist",
            vec![clip_s, "-o", out_s, "-s", "styles/nothing.png"],
            "does not exist",
        ),
        (
            "a folder as the style",
            vec![clip_s, "-o", out_s, "-s", folder_s],
            "is a folder",
        ),
        (
            "a strength above 1",
            vec![clip_s, "-o", out_s, "-s", "0", "--strength", "2"],
            "between 0 and 1",
        ),
        (
            "a strength that is not a number",
            vec![clip_s, "-o", out_s, "-s", "0", "--strength", "NaN"],
            "between 0 and 1",
        ),
        (
            "the input as the output",
            vec![clip_s, "-o", clip_s, "-s", "0"],
            "is the input itself",
        ),
        (
            "a folder as the output",
            vec![clip_s, "-o", folder_s, "-s", "0"],
            "is a folder",
        ),
        (
            "an output under a file",
            vec![clip_s, "-o", under_s, "-s", "0"],
            "cannot create the output folder",
        ),
        (
            "an output that exists, without --force",
            vec![clip_s, "-o", existing_s, "-s", "0"],
            "exists already",
        ),
        (
            "an unknown placeholder in the name template",
            vec![clip_s, "-s", "0", "--name-template", "{name}.mp4"],
            "unknown placeholder",
        ),
        (
            "several inputs and a file as -o",
            vec![clip_s, clip_s, "-o", existing_s, "-s", "0"],
            "is a file",
        ),
        (
            "several inputs that would write one output",
            vec![clip_s, clip_s, "-o", folder_s, "-s", "0"],
            "would both be written",
        ),
        (
            "an input that does not exist",
            vec![missing_s, "-o", out_s, "-s", "0"],
            "cannot read",
        ),
        (
            "a folder as the input",
            vec![folder_s, "-o", out_s, "-s", "0"],
            "is not a file",
        ),
        (
            "a zero size limit",
            vec![clip_s, "-o", out_s, "-s", "0", "--max-side", "0"],
            "--max-side",
        ),
        (
            "a negative duration limit",
            vec![clip_s, "-o", out_s, "-s", "0", "--max-duration=-1"],
            "positive number of seconds",
        ),
    ];
    for (what, args, says) in cases {
        let data = dir.path().join("data");
        let started = Instant::now();
        let out = output_of(sp::command(&data, ["process"].iter().chain(args.iter())));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted\n{stderr}");
        assert_eq!(
            stderr.matches(says).count(),
            1,
            "{what}: `{says}` said once in:\n{stderr}"
        );
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{what}: one error line:\n{stderr}");
        assert!(
            !stderr.contains("tapestry"),
            "{what}: no list of every style:\n{stderr}"
        );
        assert!(!data.exists(), "{what}: the data folder was created");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: refused only after {:?}",
            started.elapsed()
        );
    }
    assert!(!out.exists(), "nothing written at -o");
    assert_eq!(std::fs::read(&existing).unwrap(), b"not to be replaced");
}

/// Several inputs in one `process`: a job each, outputs named by the template in the `-o`
/// folder; `{job}` names an output after its job; an existing output is replaced only with
/// `--force`.
#[test]
fn several_inputs_and_named_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = pattern_clip(dir.path(), "a.mp4", "testsrc2", 64, 48, 8);
    let b = pattern_clip(dir.path(), "b.mp4", "smptebars", 64, 48, 8);
    let outs = dir.path().join("outs");
    let mut both = sp::command(
        &data,
        [
            "process".as_ref(),
            a.as_os_str(),
            b.as_os_str(),
            "-o".as_ref(),
            outs.as_os_str(),
            "-s".as_ref(),
            "0".as_ref(),
            "--strength".as_ref(),
            "0".as_ref(),
            "--workers".as_ref(),
            "1".as_ref(),
        ] as [&OsStr; 11],
    );
    both.stdin(Stdio::null());
    let run = output_of(both);
    assert_success("process a.mp4 b.mp4 -o outs", &run);
    let (out_a, out_b) = (outs.join("a.0.mp4"), outs.join("b.0.mp4"));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [out_a.to_str().unwrap(), out_b.to_str().unwrap()]
    );
    assert!(out_a.is_file() && out_b.is_file());
    assert_eq!(sp::status(&data).len(), 2, "a job each");

    // `{job}`: beside the input, named after its job.
    let named = output_of(process(
        &data,
        &a,
        &dir.path().join("unused"),
        &["-s", "1", "--strength", "0"],
    ));
    assert_success("process a.mp4 -s 1", &named);
    let job = sp::job_of_process(&named);
    let mut templated = sp::command(
        &data,
        [
            "process".as_ref(),
            a.as_os_str(),
            "-s".as_ref(),
            "1".as_ref(),
            "--strength".as_ref(),
            "0".as_ref(),
            "--name-template".as_ref(),
            "{stem}-{job}.mp4".as_ref(),
            "--workers".as_ref(),
            "1".as_ref(),
            "--batch-frames".as_ref(),
            "4".as_ref(),
        ] as [&OsStr; 12],
    );
    templated.stdin(Stdio::null());
    let run = output_of(templated);
    assert_success("process --name-template {stem}-{job}.mp4", &run);
    let expected = dir.path().join(format!("a-{job}.mp4"));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        expected.to_str().unwrap()
    );
    assert!(expected.is_file());

    // The same outputs again: refused before any work without --force, replaced with it.
    let again = |force: bool| {
        let mut args: Vec<&OsStr> = vec![
            "process".as_ref(),
            a.as_os_str(),
            b.as_os_str(),
            "-o".as_ref(),
            outs.as_os_str(),
            "-s".as_ref(),
            "0".as_ref(),
            "--strength".as_ref(),
            "0".as_ref(),
        ];
        if force {
            args.push("--force".as_ref());
        }
        let mut cmd = sp::command(&data, args);
        cmd.stdin(Stdio::null());
        output_of(cmd)
    };
    let refused = again(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::write(&out_a, b"stale").unwrap();
    assert_success("the same with --force", &again(true));
    assert_ne!(std::fs::read(&out_a).unwrap(), b"stale");
}

/// `styles -o` without a sheet, `style-image` given a folder, and `sas` without a credential are
/// each refused with one line that says what to do.
#[test]
fn small_refusals_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_stylefleet");

    let out = Command::new(bin)
        .args(["styles", "-o"])
        .arg(dir.path().join("x.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--sheet"), "{stderr}");
    assert!(!dir.path().join("x.png").exists());

    let out = Command::new(bin)
        .args(["style-image", "-s", "0", "-o"])
        .arg(dir.path().join("y.png"))
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is a folder"), "{stderr}");
    assert!(!stderr.contains("could not be determined"), "{stderr}");

    let mut sas = Command::new(bin);
    sas.args([
        "sas",
        "upload",
        "input/starry-blue/clip.mp4",
        "--store",
        "https://stylefleetdata.blob.core.windows.net",
    ]);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("AZURE_")
            || name.ends_with("_ENDPOINT")
            || name == "STYLEFLEET_IDENTITY"
        {
            sas.env_remove(&key);
        }
    }
    let started = Instant::now();
    let out = sas.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line:\n{stderr}");
    assert!(stderr.contains("az login"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no attempt to reach an endpoint"
    );
}

/// A reader that goes away (`| head -0`) ends `process` quietly, without a panic; the job is
/// done or resumable, and the same command run again reports the output.
#[test]
fn a_closed_stdout_ends_quietly_and_the_job_stays_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 8);
    let out = dir.path().join("out.mp4");

    let mut cmd = process(&data, &clip, &out, &["-s", "0", "--strength", "0"]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the command writes its result
    let closed = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        closed.status.code(),
        Some(141),
        "ends as a closed pipe ends: {stderr}"
    );

    // The first run wrote -o before it found stdout closed: replacing it takes --force.
    let again = output_of(process(
        &data,
        &clip,
        &out,
        &["-s", "0", "--strength", "0", "--force"],
    ));
    assert_success("the same command again", &again);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        out.to_str().unwrap()
    );
    assert_eq!(sp::status(&data).len(), 1, "one job, resumed, not a second");
}

/// A `process` run killed as its stitch starts leaves its stitch message queued; another
/// `process` run (another clip, another style) sharing the data folder finishes its own job and
/// leaves that message alone; the first command run again finishes its job.
#[test]
fn a_process_run_stitches_only_its_own_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = pattern_clip(dir.path(), "first.mp4", "testsrc2", 64, 48, 8);
    let second = pattern_clip(dir.path(), "second.mp4", "smptebars", 64, 48, 8);
    let (out1, out2) = (
        dir.path().join("first.out.mp4"),
        dir.path().join("second.out.mp4"),
    );
    let faults = dir.path().join("faults");
    let style1 = ["-s", "0", "--strength", "0"];

    let mut killed = process(&data, &first, &out1, &style1);
    killed
        .env("STYLEFLEET_FAULTS", "stitch.start=kill")
        .env("STYLEFLEET_FAULT_DIR", &faults)
        .env("STYLEFLEET_MAX_DELIVERIES", "10");
    let killed = output_of(killed);
    assert!(!killed.status.success(), "the fault did not fire");
    let jobs = sp::status(&data);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let first_job = jobs[0]["job"].as_str().unwrap().to_owned();
    // Killed while its stitch waited, with nothing running: `status` calls that interrupted.
    assert_eq!(jobs[0]["state"], "interrupted", "{jobs:?}");
    let deliveries_before = stitch_deliveries(&data, &first_job);

    let mut other = process(&data, &second, &out2, &["-s", "1", "--strength", "0"]);
    other.env("STYLEFLEET_MAX_DELIVERIES", "10");
    let other = output_of(other);
    assert_success("process of another clip and style", &other);
    assert_ne!(sp::job_of_process(&other), first_job);
    let view = sp::job_status(&data, &first_job);
    // Still waiting for its stitch, with nobody running it: not stitched by the other run.
    assert_eq!(
        view["state"], "interrupted",
        "stitched by another run: {view}"
    );
    assert!(!out1.exists());
    // Not even looked at: the other run received its own stitch by id, so the waiting message
    // gained no delivery (five such looks used to dead-letter it).
    assert_eq!(
        stitch_deliveries(&data, &first_job),
        deliveries_before,
        "the other run received the first job's stitch message"
    );

    let mut resumed = process(&data, &first, &out1, &style1);
    resumed
        .env("STYLEFLEET_FAULTS", "stitch.start=kill")
        .env("STYLEFLEET_FAULT_DIR", &faults)
        .env("STYLEFLEET_MAX_DELIVERIES", "10");
    let resumed = output_of(resumed);
    assert_success("the first command again", &resumed);
    assert_eq!(sp::job_of_process(&resumed), first_job);
    assert!(out1.exists());
}

/// How many times the job's stitch message has been delivered, read from the embedded queue's
/// database.
fn stitch_deliveries(data: &Path, job: &str) -> i64 {
    let db = rusqlite::Connection::open(data.join("queue.sqlite")).unwrap();
    db.query_row(
        "SELECT delivery_count FROM messages WHERE id = ?1",
        [format!("{job}:stitch")],
        |row| row.get(0),
    )
    .unwrap()
}

/// `up` on a data folder that does not exist yet makes `input/` and a folder per style, so that
/// the README's `cp clip.mp4 stylefleet-data/input/starry-blue/` works as written.
#[test]
fn up_on_a_new_data_folder_makes_the_drop_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 8);
    let up = Up::start(&data, &dir.path().join("up.log"), &QUICK_UP);
    let drop = data.join("input").join("starry-blue");
    wait_for("input/starry-blue/", 30, || drop.is_dir().then_some(()));
    assert!(
        data.join("input").join("tapestry").is_dir(),
        "a folder per style"
    );
    // A name the store cannot address is refused once, plainly, not retried for ever.
    std::fs::copy(&clip, drop.join("a<b>.mp4")).unwrap();
    wait_for("the refusal of a<b>.mp4", 60, || {
        let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
        log.contains("rename it").then_some(())
    });
    std::fs::copy(&clip, drop.join("clip.mp4")).unwrap();
    let output = data.join("output").join("starry-blue").join("clip.mp4");
    wait_for("output/starry-blue/clip.mp4", 180, || {
        output.is_file().then_some(())
    });
    let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    up.stop();
    assert!(!log.contains("ConsumeReport"), "{log}");
    assert_eq!(log.matches("rename it").count(), 1, "refused once: {log}");
    assert!(!log.contains("split failed"), "{log}");
}

/// A tmux server of its own, with one 80-column pane per command; the screens as text.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(dir: &Path) -> Self {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is needed for the terminal tests (scripts/install-deps.sh installs it)"
        );
        Tmux {
            socket: dir.join("tmux.sock").to_string_lossy().into_owned(),
        }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-S", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `script` (a shell command line) in an 80x50 pane; returns every screen seen while it
    /// ran (sampled) and the last one, wrapped lines joined. The pane's shell prints `EXIT=<code>`
    /// at the end.
    fn run(&self, script: &str, secs: u64) -> (Vec<String>, String) {
        let line = format!("{script}; echo EXIT=$?; sleep 600");
        let out = self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "80",
            "-y",
            "50",
            "bash",
            "--norc",
            "-c",
            &line,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        let last = loop {
            let screen = self.capture(false);
            if self.capture(true).contains("EXIT=") {
                break self.capture(true);
            }
            seen.push(screen);
            assert!(
                Instant::now() < deadline,
                "did not end:\n{}",
                self.capture(true)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        self.tmux(&["kill-session", "-t", "t"]);
        (seen, last)
    }

    /// The pane as text; `joined`: wrapped lines joined into the lines that were written.
    fn capture(&self, joined: bool) -> String {
        let args: &[&str] = if joined {
            &["capture-pane", "-p", "-J", "-t", "t"]
        } else {
            &["capture-pane", "-p", "-t", "t"]
        };
        String::from_utf8_lossy(&self.tmux(args).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The environment and command line of a `process` run in a pane (the pane's shell does not see
/// the test's environment changes).
fn process_line(data: &Path, clip: &Path, out: &Path, extra: &str) -> String {
    let env: String = sp::FAST_QUEUE
        .iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    format!(
        "env -u NO_COLOR -u RUST_LOG {env} {} process {} -o {} -s 0 --strength 0 --workers 1 --batch-frames 4 --data {} {extra}",
        env!("CARGO_BIN_EXE_stylefleet"),
        shell_quote(clip),
        shell_quote(out),
        shell_quote(data),
    )
}

/// In an 80-column terminal, log lines and the progress bar do not write through each other:
/// every line left on the screen is whole (a log line, the summary, the path), the bar never
/// wraps, and it never shows `0/0`.
#[test]
fn the_bar_and_log_lines_share_an_80_column_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 24);
    let out = dir.path().join("out.mp4");
    let tmux = Tmux::new(dir.path());
    let (seen, last) = tmux.run(&process_line(&data, &clip, &out, ""), 240);
    assert!(last.contains("EXIT=0"), "{last}");
    for screen in &seen {
        for line in screen.lines() {
            assert!(!line.contains(" 0/0"), "a bar before the plan:\n{screen}");
        }
    }
    let bars = seen
        .iter()
        .flat_map(|s| s.lines())
        .filter(|l| l.contains(" fps "))
        .count();
    assert!(
        bars > 0,
        "the bar was never seen:\n{}",
        seen.join("\n----\n")
    );
    for line in last.lines().filter(|l| !l.trim().is_empty()) {
        let whole = line.contains(" INFO ")
            || line.contains(" WARN ")
            || line.starts_with("job ")
            || line == out.to_str().unwrap()
            || line.starts_with("EXIT=");
        assert!(whole, "a garbled line {line:?} on:\n{last}");
        assert!(!line.contains(" fps "), "a bar left behind:\n{last}");
    }
}

/// Log lines written to a file carry no colour codes, and `--quiet` leaves the terminal with the
/// result alone.
#[test]
fn no_colour_off_the_terminal_and_quiet_means_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 8);
    let out = dir.path().join("out.mp4");
    let log = dir.path().join("stderr.log");
    let tmux = Tmux::new(dir.path());

    let line = format!(
        "{} 2>{}",
        process_line(&data, &clip, &out, ""),
        shell_quote(&log)
    );
    let (_, last) = tmux.run(&line, 240);
    assert!(last.contains("EXIT=0"), "{last}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("INFO"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a file:\n{logged}"
    );

    std::fs::remove_file(&out).unwrap();
    let (_, last) = tmux.run(&process_line(&data, &clip, &out, "--quiet"), 240);
    let lines: Vec<&str> = last.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines,
        [out.to_str().unwrap(), "EXIT=0"],
        "quiet prints the result only:\n{last}"
    );
}
