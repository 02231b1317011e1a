#![allow(clippy::unwrap_used)]
//! What users do, through the real CLI and the real fleet: the same file name for two videos, a
//! re-upload while the job of the old bytes runs, a style image replaced under the same name, one
//! clip at two strengths, and an output that cannot be written. Each ends in exactly one output per
//! job made of that job's own frames (compared frame by frame), or in a visible failure that a
//! re-run revives.
//!
//! Outputs are compared with their sources at strength 0 (the network runs, the blend keeps the
//! original pictures), or, where strength is not the user's to choose (`up`), with reference
//! outputs of the same style made by `process` in a data folder of their own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;

use support::azurite::Azurite;
use support::frames::{assert_made_of, pattern_clip, per_frame_psnr};
use support::pipeline::{self as sp, QUICK_UP, Up, assert_success, wait_for};

/// Where the store is: the data folder (the embedded default) or a container in Azurite.
enum Backend {
    Folder,
    Azurite(Azurite),
}

impl Backend {
    fn azurite() -> Self {
        Backend::Azurite(Azurite::start())
    }

    /// `stylefleet <args> --data <data>`, pointed at this backend's store.
    fn command<I, S>(&self, data: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = sp::command(data, args);
        if let Backend::Azurite(azurite) = self {
            azurite.apply_env(&mut cmd);
            cmd.args(["--store", "az://behaviour"]);
        }
        cmd
    }

    /// `status --json`.
    fn status(&self, data: &Path) -> Vec<Value> {
        let out = run("status", self.command(data, ["status", "--json"]), 60);
        match sp::json_of("status --json", &out) {
            Value::Array(jobs) => jobs,
            other => panic!("status --json is not a list: {other}"),
        }
    }

    fn job(&self, data: &Path, id: &str) -> Value {
        self.status(data)
            .into_iter()
            .find(|j| j["job"] == id)
            .unwrap_or_else(|| panic!("status --json does not list job {id}"))
    }

    /// `dlq list --json` for one job.
    fn dead_letters(&self, data: &Path, job: &str) -> Vec<Value> {
        let out = run(
            "dlq list",
            self.command(data, ["dlq", "list", "--json", "--job", job]),
            60,
        );
        match sp::json_of("dlq list --json", &out) {
            Value::Array(letters) => letters,
            other => panic!("dlq list --json is not a list: {other}"),
        }
    }

    /// The bytes of a store object.
    fn read(&self, data: &Path, path: &str) -> Vec<u8> {
        match self {
            Backend::Folder => std::fs::read(data.join(path)).expect("read the store file"),
            Backend::Azurite(azurite) => {
                let store =
                    stylefleet::store::Store::open(&azurite.container_url("behaviour")).unwrap();
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(store.get(path))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{path} is not in the container"))
                    .to_vec()
            }
        }
    }

    /// Paths of the store objects under `prefix`, sorted.
    fn list(&self, data: &Path, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Backend::Folder => sp::tree(&data.join(prefix))
                .iter()
                .map(|p| format!("{prefix}/{}", p.display()))
                .collect(),
            Backend::Azurite(azurite) => {
                let store =
                    stylefleet::store::Store::open(&azurite.container_url("behaviour")).unwrap();
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(store.list(prefix))
                    .unwrap()
                    .iter()
                    .map(|m| m.location.to_string())
                    .collect()
            }
        };
        names.sort();
        names
    }

    /// `process` with this backend's store: see [`process_in_batches`].
    fn process(
        &self,
        data: &Path,
        clip: &Path,
        out: &Path,
        style: &str,
        strength: &str,
    ) -> Command {
        let mut cmd = process_in_batches(data, clip, out, style, strength, 8);
        if let Backend::Azurite(azurite) = self {
            azurite.apply_env(&mut cmd);
            cmd.args(["--store", "az://behaviour"]);
        }
        cmd
    }

    /// The outputs of the done jobs, sorted.
    fn done_outputs(&self, data: &Path) -> Vec<String> {
        let mut outputs: Vec<String> = self
            .status(data)
            .iter()
            .filter(|j| j["state"] == "done")
            .map(|j| {
                j["output"]
                    .as_str()
                    .expect("a done job names its output")
                    .to_owned()
            })
            .collect();
        outputs.sort();
        outputs
    }
}

/// `stylefleet process <clip> -o <out> --style <style> --strength <s> --batch-frames 8 --workers 2`.
fn process_command(data: &Path, clip: &Path, out: &Path, style: &str, strength: &str) -> Command {
    process_in_batches(data, clip, out, style, strength, 8)
}

/// [`process_command`] with batches of `batch` frames.
fn process_in_batches(
    data: &Path,
    clip: &Path,
    out: &Path,
    style: &str,
    strength: &str,
    batch: u32,
) -> Command {
    let batch = batch.to_string();
    let mut cmd = sp::command(
        data,
        [
            "process".as_ref(),
            clip.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--style".as_ref(),
            style.as_ref(),
            "--strength".as_ref(),
            strength.as_ref(),
            "--workers".as_ref(),
            "2".as_ref(),
            "--batch-frames".as_ref(),
            batch.as_ref(),
        ] as [&std::ffi::OsStr; 12],
    );
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Waits for `child` at most `secs` (reading its output meanwhile), killing it and panicking
/// after that: a command that hangs is a failure of its own (the promise is that every job ends).
fn finish(what: &str, child: Child, secs: u64) -> Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().expect("the waiter ends").expect("output");
            panic!(
                "{what} did not end within {secs} s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn run(what: &str, mut cmd: Command, secs: u64) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    finish(what, cmd.spawn().expect("spawn"), secs)
}

/// The jobs `status --json` lists, by id.
fn jobs(data: &Path) -> Vec<Value> {
    sp::status(data)
}

/// A one-colour-ish style image made from a lavfi pattern, as a PNG.
fn style_image(dir: &Path, name: &str, pattern: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = dir.join(name);
    support::clips::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{pattern}=size=128x128"),
        "-frames:v",
        "1",
        out.to_str().expect("utf-8"),
    ]);
    out
}

fn two_videos_with_one_name(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let clip_a = pattern_clip(&a, "clip.mp4", "testsrc2", 64, 48, 48);
    let clip_b = pattern_clip(&b, "clip.mp4", "smptebars", 64, 48, 48);
    let (out_a, out_b) = (a.join("out.mp4"), b.join("out.mp4"));

    // Both runs share the data folder; the second starts while the first is planning or styling.
    let first = backend
        .process(&data, &clip_a, &out_a, "0", "0")
        .spawn()
        .unwrap();
    let second = backend
        .process(&data, &clip_b, &out_b, "0", "0")
        .spawn()
        .unwrap();
    let first = finish("process a/clip.mp4", first, 300);
    let second = finish("process b/clip.mp4", second, 300);
    assert_success("process a/clip.mp4", &first);
    assert_success("process b/clip.mp4", &second);

    assert_made_of(&out_a, &clip_a, &clip_b);
    assert_made_of(&out_b, &clip_b, &clip_a);
    let job_a = sp::job_of_process(&first);
    let job_b = sp::job_of_process(&second);
    assert_ne!(job_a, job_b, "two videos are two jobs");
    let outputs = backend.done_outputs(&data);
    assert_eq!(outputs.len(), 2, "two done jobs, two outputs: {outputs:?}");
    assert_ne!(outputs[0], outputs[1], "no two jobs share an output");
    assert_eq!(
        backend.list(&data, "jobs/outputs").len(),
        2,
        "one name claim per job"
    );
    // The outputs in the store are the files the runs copied out.
    for (job, out) in [(&job_a, &out_a), (&job_b, &out_b)] {
        let view = backend.job(&data, job);
        let stored = backend.read(&data, view["output"].as_str().unwrap());
        assert_eq!(stored, std::fs::read(out).unwrap());
    }
}

#[test]
fn two_videos_with_one_name_processed_at_once_each_get_their_own_frames() {
    two_videos_with_one_name(Backend::Folder);
}

#[test]
fn two_videos_with_one_name_processed_at_once_on_azurite() {
    two_videos_with_one_name(Backend::azurite());
}

fn a_new_style_image(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 16);
    let first_image = style_image(&dir.path().join("a"), "starry.png", "mandelbrot");
    let second_image = style_image(&dir.path().join("b"), "starry.png", "smptebars");
    let (out1, out2, out3) = (
        dir.path().join("out1.mp4"),
        dir.path().join("out2.mp4"),
        dir.path().join("out3.mp4"),
    );
    let style = |image: &Path| image.to_str().unwrap().to_owned();

    let one = run(
        "process with a/starry.png",
        backend.process(&data, &clip, &out1, &style(&first_image), "1"),
        300,
    );
    assert_success("process with a/starry.png", &one);
    let two = run(
        "process with b/starry.png",
        backend.process(&data, &clip, &out2, &style(&second_image), "1"),
        300,
    );
    assert_success("process with b/starry.png", &two);
    assert_ne!(
        sp::job_of_process(&one),
        sp::job_of_process(&two),
        "another image is another job, whatever its name"
    );
    // Styled with another image, the frames differ from the first output's.
    let similarity = per_frame_psnr(&out2, &out1);
    let mean = similarity.iter().sum::<f64>() / similarity.len() as f64;
    assert!(
        mean < 30.0,
        "the second output looks like the first ({mean:.1} dB): the old image was used"
    );
    // The first image again: the first job, already done, the same output.
    let three = run(
        "process with a/starry.png again",
        backend.process(&data, &clip, &out3, &style(&first_image), "1"),
        300,
    );
    assert_success("process with a/starry.png again", &three);
    assert_eq!(sp::job_of_process(&three), sp::job_of_process(&one));
    assert_eq!(std::fs::read(&out3).unwrap(), std::fs::read(&out1).unwrap());
}

#[test]
fn a_new_style_image_under_the_old_name_is_a_new_job() {
    a_new_style_image(Backend::Folder);
}

#[test]
fn a_new_style_image_under_the_old_name_is_a_new_job_on_azurite() {
    a_new_style_image(Backend::azurite());
}

fn one_clip_at_two_strengths(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 40);
    let other = pattern_clip(dir.path(), "other.mp4", "smptebars", 64, 48, 40);
    let (plain, styled) = (dir.path().join("plain.mp4"), dir.path().join("styled.mp4"));

    let a = backend
        .process(&data, &clip, &plain, "0", "0")
        .spawn()
        .unwrap();
    let b = backend
        .process(&data, &clip, &styled, "0", "1")
        .spawn()
        .unwrap();
    let a = finish("process --strength 0", a, 300);
    let b = finish("process --strength 1", b, 300);
    assert_success("process --strength 0", &a);
    assert_success("process --strength 1", &b);

    let outputs = backend.done_outputs(&data);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_ne!(outputs[0], outputs[1], "both jobs reported one file");
    assert!(outputs.contains(&"output/0/clip.mp4".to_owned()));
    // Strength 0 is the source's pictures; strength 1 is not: each run got its own job's file.
    assert_made_of(&plain, &clip, &other);
    let styled_vs_source = per_frame_psnr(&styled, &clip);
    assert!(
        styled_vs_source.iter().all(|p| *p < 28.0),
        "the strength-1 output holds unstyled frames: {styled_vs_source:?}"
    );
    for (job, out) in [
        (sp::job_of_process(&a), &plain),
        (sp::job_of_process(&b), &styled),
    ] {
        let view = backend.job(&data, &job);
        let stored = backend.read(&data, view["output"].as_str().unwrap());
        assert_eq!(
            stored,
            std::fs::read(out).unwrap(),
            "job {job} reports another file"
        );
    }
}

#[test]
fn one_clip_at_two_strengths_at_once_makes_two_outputs() {
    one_clip_at_two_strengths(Backend::Folder);
}

#[test]
fn one_clip_at_two_strengths_at_once_makes_two_outputs_on_azurite() {
    one_clip_at_two_strengths(Backend::azurite());
}

/// A stitch that fails for good (a permanent fault placed at its start, once) fails the job
/// visibly on its first delivery; the same command run again finishes it.
fn a_failed_stitch(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 24);
    let other = pattern_clip(dir.path(), "other.mp4", "smptebars", 64, 48, 24);
    let out = dir.path().join("out.mp4");
    let mut cmd = backend.process(&data, &clip, &out, "0", "0");
    cmd.env("STYLEFLEET_FAULTS", "stitch.start=fail")
        .env("STYLEFLEET_FAULT_DIR", dir.path().join("faults"));
    let failed = run("process with a failing stitch", cmd, 300);
    assert!(!failed.status.success(), "a failed stitch reported success");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("injected fault at stitch.start"),
        "{stderr}"
    );
    let job = sp::job_of_process(&failed);
    let view = backend.job(&data, &job);
    assert_eq!(view["state"], "failed", "{view}");
    let letters = backend.dead_letters(&data, &job);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["queue"], "stitch");
    assert_eq!(letters[0]["delivery_count"], 1);

    let mut again = backend.process(&data, &clip, &out, "0", "0");
    again
        .env("STYLEFLEET_FAULTS", "stitch.start=fail")
        .env("STYLEFLEET_FAULT_DIR", dir.path().join("faults"));
    let revived = run("process again", again, 300);
    assert_success("process again", &revived);
    assert_eq!(sp::job_of_process(&revived), job);
    assert_made_of(&out, &clip, &other);
    assert_eq!(backend.job(&data, &job)["state"], "done");
    assert!(backend.dead_letters(&data, &job).is_empty());
}

#[test]
fn a_failed_stitch_fails_the_job_at_once_and_a_rerun_revives_it() {
    a_failed_stitch(Backend::Folder);
}

#[test]
fn a_failed_stitch_fails_the_job_at_once_and_a_rerun_revives_it_on_azurite() {
    a_failed_stitch(Backend::azurite());
}

#[test]
fn an_output_that_cannot_be_written_fails_visibly_and_a_rerun_revives_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 24);
    let other = pattern_clip(dir.path(), "other.mp4", "smptebars", 64, 48, 24);
    let out = dir.path().join("out.mp4");
    // Something that is not a video stands where the output goes: a folder.
    let squatter = data.join("output/0/clip.mp4");
    std::fs::create_dir_all(squatter.join("inside")).unwrap();

    let failed = run(
        "process into a blocked output",
        process_command(&data, &clip, &out, "0", "0"),
        300,
    );
    assert!(
        !failed.status.success(),
        "a blocked output reported success"
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("output/0/clip.mp4"),
        "the reason does not name the output: {stderr}"
    );
    let job = sp::job_of_process(&failed);
    let view = sp::job_status(&data, &job);
    assert_eq!(view["state"], "failed", "{view}");
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("output/0/clip.mp4")),
        "{view}"
    );
    let letters = sp::dlq_list(&data, &["--job", &job]);
    assert_eq!(letters.len(), 1, "the stitch is dead-lettered: {letters:?}");
    assert_eq!(letters[0]["queue"], "stitch");
    assert_eq!(
        letters[0]["delivery_count"], 1,
        "a failure that cannot pass is not retried"
    );
    assert!(!out.exists(), "nothing written at -o");

    // The cause is removed; the same command finishes the same job.
    std::fs::remove_dir_all(&squatter).unwrap();
    let revived = run(
        "process again",
        process_command(&data, &clip, &out, "0", "0"),
        300,
    );
    assert_success("process again", &revived);
    assert_eq!(sp::job_of_process(&revived), job);
    assert_made_of(&out, &clip, &other);
    assert_eq!(sp::job_status(&data, &job)["state"], "done");
    assert!(sp::dlq_list(&data, &[]).is_empty());
}

#[test]
fn process_refuses_an_output_that_is_its_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = pattern_clip(dir.path(), "clip.mp4", "testsrc2", 64, 48, 8);
    let before = std::fs::read(&clip).unwrap();
    let out = run(
        "process -o <input>",
        process_command(&data, &clip, &clip, "0", "1"),
        60,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the input itself"), "{stderr}");
    assert_eq!(
        std::fs::read(&clip).unwrap(),
        before,
        "the source is intact"
    );
    assert!(sp::job_dirs(&data).is_empty(), "no job was created");

    let folder = dir.path().join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let out = run(
        "process -o <folder>",
        process_command(&data, &clip, &folder, "0", "1"),
        60,
    );
    assert!(!out.status.success());
    assert!(sp::job_dirs(&data).is_empty(), "no job was created");
}

/// The reference output of `clip` styled with built-in style 0 in batches of 4, made by `process`
/// in a data folder of its own.
fn reference(dir: &Path, clip: &Path, name: &str) -> PathBuf {
    let data = dir.join(format!("ref-{name}"));
    let out = dir.join(format!("ref-{name}.mp4"));
    // The same batches as the fleet below, so the same chunks.
    let cmd = process_in_batches(&data, clip, &out, "0", "1", 4);
    let done = run("reference process", cmd, 300);
    assert_success("reference process", &done);
    out
}

#[test]
fn a_reupload_while_its_job_runs_is_a_new_job_and_nothing_mixes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = pattern_clip(dir.path(), "first.mp4", "testsrc2", 64, 48, 40);
    let second = pattern_clip(dir.path(), "second.mp4", "smptebars", 64, 48, 40);
    let first_ref = reference(dir.path(), &first, "first");
    let second_ref = reference(dir.path(), &second, "second");

    let up = Up::start(&data, &dir.path().join("up.log"), &QUICK_UP);
    let dropped = sp::drop_into(&data, "0", &first, "v.mp4");
    let first_job = wait_for("the first job to start styling", 120, || {
        jobs(&data)
            .into_iter()
            .find(|j| j["batches_done"].as_u64().is_some_and(|d| d >= 1) && j["state"] != "done")
    });
    // Replaced in place, as `cp` does, while the first job is mid-way.
    std::fs::copy(&second, &dropped).unwrap();
    let view = sp::job_status(&data, first_job["job"].as_str().unwrap());
    assert!(
        view["batches_done"].as_u64() < view["batches_total"].as_u64(),
        "the first job finished before the re-upload: the test proves nothing ({view})"
    );

    let done = wait_for("both uploads to be done", 300, || {
        let all = jobs(&data);
        (all.len() == 2 && all.iter().all(|j| j["state"] == "done")).then_some(all)
    });
    up.stop();
    let output_of = |job: &str| {
        let view = done.iter().find(|j| j["job"] == job).expect("job listed");
        data.join(view["output"].as_str().expect("output"))
    };
    let first_id = first_job["job"].as_str().unwrap();
    let second_id = done
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .find(|id| *id != first_id)
        .unwrap()
        .to_owned();
    assert_made_of(&output_of(first_id), &first_ref, &second_ref);
    assert_made_of(&output_of(&second_id), &second_ref, &first_ref);
    assert_ne!(output_of(first_id), output_of(&second_id));
}
