#![allow(clippy::unwrap_used)]
//! The embedded pipeline end to end, through the `stylefleet` binary and the library:
//!
//! - frame-exact output for every awkward kind of clip (`process`, checked with ffprobe);
//! - the same event twice, and the same bytes uploaded twice, make one job;
//! - malformed messages are dead-lettered on first delivery with a reason, and replaying a
//!   dead-lettered batch brings its job to done (`--dry-run` changes nothing);
//! - bad inputs fail their own job with a one-line reason and touch nothing else;
//! - the encoder options (`--crf`, `--preset`, `--codec`) reach the manifest, the chunks and the
//!   output, a bad value is refused before anything is written, and a worker says which encoder
//!   `auto` became (libx264 where a probe of h264_nvenc fails).
//!
//! Every test works in its own data folder with short queue timings (see
//! `support::pipeline::FAST_QUEUE`) on clips of a few dozen small frames.

mod support;

use std::path::{Path, PathBuf};

use stylefleet::consume::{ConsumeOptions, StitchHandler, consume};
use stylefleet::job::StyleChoice;
use stylefleet::message::BatchMessage;
use stylefleet::queue::{BATCHES, OutgoingMessage, STITCH};
use stylefleet::settings::Settings;
use stylefleet::setup::Location;
use stylefleet::stage::Context;
use stylefleet::stage::split::{SplitOutcome, split};
use stylefleet::store::version_of;
use tokio_util::sync::CancellationToken;

use support::clips;
use support::pipeline::{self as sp, assert_frame_exact, assert_success};

// ---------------------------------------------------------------------------------------------
// Frame-exact output
// ---------------------------------------------------------------------------------------------

/// Styles `clip` with `process` in batches of `batch` and checks the result against the source;
/// returns the data folder's job id.
async fn styles_frame_exact(dir: &Path, clip: &Path, workers: u32, batch: u32) -> String {
    let data = dir.join("data");
    let out = dir.join("styled.mp4");
    let run = sp::process(&data, clip, &out, workers, batch);
    assert_success("stylefleet process", &run);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        out.display().to_string(),
        "process prints the output path"
    );
    assert_frame_exact(clip, &out).await;

    let job = sp::job_of_process(&run);
    let view = sp::job_status(&data, &job);
    assert_eq!(view["state"], "done", "{view}");
    let frames = clips_frames(clip);
    assert_eq!(view["frames_done"], frames, "{view}");
    assert_eq!(view["frames_total"], frames, "{view}");
    // The fewest batches that make whole rounds of the workers (never more than the frames).
    let workers = u64::from(workers);
    let batches = (frames.div_ceil(u64::from(batch)).div_ceil(workers) * workers).min(frames);
    assert_eq!(view["batches_total"], batches, "{view}");
    assert_eq!(
        sp::files(&data.join("jobs").join(&job).join("done")).len() as u64,
        batches,
        "one done marker per batch"
    );
    let outputs = sp::tree(&data.join("output"));
    assert_eq!(outputs.len(), 1, "exactly one output: {outputs:?}");
    assert_eq!(
        std::fs::read(data.join("output").join(&outputs[0])).unwrap(),
        std::fs::read(&out).unwrap(),
        "the copied output is the stored one"
    );
    job
}

/// Video frames in `clip`, counted by ffprobe.
fn clips_frames(clip: &Path) -> u64 {
    support::azurite::check::video_times(clip).len() as u64
}

#[tokio::test]
async fn constant_frame_rate_with_aac() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 24, 25);
    styles_frame_exact(dir.path(), &clip, 2, 8).await;
}

#[tokio::test]
async fn variable_frame_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::vfr(dir.path());
    // The clip really is VFR: its frame intervals differ.
    let times = support::azurite::check::video_times(&clip);
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 1e4).round() as i64)
        .collect();
    assert!(gaps.iter().any(|g| *g != gaps[0]), "not VFR: {gaps:?}");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn odd_width_and_height() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::odd_size(dir.path());
    assert_eq!(sp::geometry(&clip).0 % 2, 1);
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn rotation_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::rotated(dir.path(), 90);
    assert_ne!(sp::geometry(&clip).2, 0, "the source carries a rotation");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

#[tokio::test]
async fn no_audio() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::no_audio(dir.path());
    styles_frame_exact(dir.path(), &clip, 1, 6).await;
    let out = dir.path().join("styled.mp4");
    assert_eq!(sp::stream_start(&out, "a"), None, "no audio appears");
}

#[tokio::test]
async fn a_single_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::single_frame(dir.path());
    assert_eq!(clips_frames(&clip), 1);
    styles_frame_exact(dir.path(), &clip, 1, 4).await;
}

#[tokio::test]
async fn a_frame_count_the_batch_size_does_not_divide() {
    let dir = tempfile::tempdir().unwrap();
    // 23 frames in batches of at most 5: five batches, balanced (5, 5, 5, 4, 4), never a short
    // tail of 3.
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 23, 25);
    let job = styles_frame_exact(dir.path(), &clip, 1, 5).await;
    assert_eq!(
        planned_ranges(&dir.path().join("data"), &job),
        [(0, 5), (5, 10), (10, 15), (15, 19), (19, 23)]
    );
}

#[tokio::test]
async fn two_workers_get_whole_rounds_of_batches() {
    let dir = tempfile::tempdir().unwrap();
    // 23 frames in batches of at most 5 for two workers: six batches (three each), not five that
    // leave one worker styling the last alone.
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 23, 25);
    let job = styles_frame_exact(dir.path(), &clip, 2, 5).await;
    assert_eq!(
        planned_ranges(&dir.path().join("data"), &job),
        [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 23)]
    );
}

#[tokio::test]
async fn another_worker_count_resumes_the_same_job_with_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let data = dir.path().join("data");
    // Two workers: 12 frames at 4 are three batches, made four (two rounds).
    let first = sp::process(&data, &clip, &dir.path().join("first.mp4"), 2, 4);
    assert_success("process --workers 2", &first);
    let job = sp::job_of_process(&first);
    let planned = planned_ranges(&data, &job);
    assert_eq!(planned, [(0, 3), (3, 6), (6, 9), (9, 12)]);
    // The same video with three workers is the same job, not a second one cut for three: the
    // worker count is how a job runs, not what it makes.
    let second_out = dir.path().join("second.mp4");
    let second = sp::process(&data, &clip, &second_out, 3, 4);
    assert_success("process --workers 3", &second);
    assert_eq!(sp::job_of_process(&second), job);
    assert_eq!(sp::job_dirs(&data).len(), 1, "{:?}", sp::job_dirs(&data));
    assert_eq!(planned_ranges(&data, &job), planned);
    assert_frame_exact(&clip, &second_out).await;
}

/// The frame ranges of `job`'s batches, as its manifest plans them.
fn planned_ranges(data: &Path, job: &str) -> Vec<(u64, u64)> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("jobs").join(job).join("manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["frames"][0].as_u64().unwrap(),
                b["frames"][1].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_single_keyframe_for_the_whole_clip() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::single_keyframe(dir.path());
    let keyframes = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
        ])
        .args(["-show_entries", "frame=pts", "-of", "csv=p=0"])
        .arg(&clip)
        .output()
        .unwrap();
    let keyframes = String::from_utf8_lossy(&keyframes.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(keyframes, 1, "the source has one keyframe");
    styles_frame_exact(dir.path(), &clip, 1, 8).await;
}

// ---------------------------------------------------------------------------------------------
// One job per source: the same event twice, the same bytes twice
// ---------------------------------------------------------------------------------------------

/// A library context on the embedded default in `data`, batches of `batch_frames`.
async fn library_context(data: &Path, batch_frames: u64) -> Context {
    let settings = Settings {
        batch_frames,
        ..Settings::default()
    };
    stylefleet::setup::context(&Location::embedded(data), settings)
        .await
        .unwrap()
}

fn style_zero() -> StyleChoice {
    StyleChoice::new("0", 1.0, false)
}

#[tokio::test]
async fn the_same_event_twice_and_the_same_bytes_twice_make_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let data = dir.path().join("data");
    let ctx = library_context(&data, 4).await;
    let path = "input/0/clip.mp4";
    ctx.store.upload(&clip, path, false).await.unwrap();

    let first = split(&ctx, path, &style_zero()).await.unwrap();
    let SplitOutcome::Planned {
        job,
        batches: 3,
        posted: 3,
        created: true,
    } = first.clone()
    else {
        panic!("first event: {first:?}")
    };
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 3);
    let manifest_path = data.join("jobs").join(job.as_str()).join("manifest.json");
    let manifest = std::fs::read(&manifest_path).unwrap();

    // The same event again: the job is found, not planned again, and no batch is queued twice.
    let second = split(&ctx, path, &style_zero()).await.unwrap();
    assert!(
        matches!(&second, SplitOutcome::Planned { job: j, batches: 3, created: false, .. } if *j == job),
        "second event: {second:?}"
    );
    assert_eq!(
        ctx.queue.backlog(BATCHES).await.unwrap(),
        3,
        "no duplicates"
    );
    assert_eq!(
        std::fs::read(&manifest_path).unwrap(),
        manifest,
        "the plan is written once"
    );

    // The same bytes uploaded again under the same name: a new version as the store sees it (new
    // ETag and modification time), still the same job.
    let before = ctx.store.head(path).await.unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = dir.path().join("again.mp4");
    std::fs::copy(&clip, &again).unwrap();
    ctx.store.upload(&again, path, false).await.unwrap();
    let after = ctx.store.head(path).await.unwrap().unwrap();
    assert_ne!(
        version_of(&before),
        version_of(&after),
        "the re-upload is a new version for the store"
    );
    let third = split(&ctx, path, &style_zero()).await.unwrap();
    assert!(
        matches!(&third, SplitOutcome::Planned { job: j, created: false, .. } if *j == job),
        "same bytes again: {third:?}"
    );
    assert_eq!(sp::job_dirs(&data), [job.to_string()], "one job folder");
    assert_eq!(
        ctx.queue.backlog(BATCHES).await.unwrap(),
        3,
        "no duplicates"
    );

    // Different bytes under the same name are a new job (so the checks above can fail).
    let other = clips::cfr_with_aac(dir.path(), 64, 48, 13, 25);
    ctx.store.upload(&other, path, false).await.unwrap();
    let fourth = split(&ctx, path, &style_zero()).await.unwrap();
    assert!(
        matches!(&fourth, SplitOutcome::Planned { job: j, batches: 4, created: true, .. } if *j != job),
        "new bytes: {fourth:?}"
    );
    assert_eq!(sp::job_dirs(&data).len(), 2);
}

#[tokio::test]
async fn processing_the_same_bytes_twice_reuses_the_job_and_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let data = dir.path().join("data");
    let first_out = dir.path().join("first.mp4");
    let first = sp::process(&data, &clip, &first_out, 1, 4);
    assert_success("first process", &first);
    let job = sp::job_of_process(&first);
    let stored = data.join("output/0").join(clip.file_name().unwrap());
    let written = std::fs::metadata(&stored).unwrap().modified().unwrap();
    let done_dir = data.join("jobs").join(&job).join("done");
    let markers: Vec<_> = sp::files(&done_dir)
        .iter()
        .map(|m| std::fs::read(done_dir.join(m)).unwrap())
        .collect();
    assert_eq!(markers.len(), 3);

    // The same bytes from another folder under the same name, as a user re-running the command
    // on a copy would.
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).unwrap();
    let copy = copy_dir.join(clip.file_name().unwrap());
    std::fs::copy(&clip, &copy).unwrap();
    let second_out = dir.path().join("second.mp4");
    let second = sp::process(&data, &copy, &second_out, 1, 4);
    assert_success("second process", &second);
    assert_eq!(sp::job_of_process(&second), job, "the same job");
    assert_eq!(
        sp::job_dirs(&data),
        std::slice::from_ref(&job),
        "one job folder"
    );
    assert_eq!(sp::tree(&data.join("output")).len(), 1, "one output");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().modified().unwrap(),
        written,
        "the output is written once"
    );
    let markers_after: Vec<_> = sp::files(&done_dir)
        .iter()
        .map(|m| std::fs::read(done_dir.join(m)).unwrap())
        .collect();
    assert_eq!(markers_after, markers, "no batch was redone");
    assert_eq!(
        std::fs::read(&second_out).unwrap(),
        std::fs::read(&first_out).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Poison messages and replay
// ---------------------------------------------------------------------------------------------

/// `stylefleet worker` until the batch queue has been idle for 2 s; must exit 0.
fn run_worker(data: &Path) -> std::process::Output {
    let out = sp::stylefleet(data, ["worker", "--exit-when-idle", "2"]);
    assert_success("stylefleet worker", &out);
    out
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_on_first_delivery_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ctx = library_context(&data, 4).await;
    let missing_job = "0123456789abcdef";
    let poison = [
        (
            "garbage",
            b"\x00\x01 not json at all {".to_vec(),
            "MalformedMessage",
        ),
        (
            "future",
            format!(r#"{{"v":2,"job":"{missing_job}","batch":0,"frames":[0,4]}}"#).into_bytes(),
            "UnknownMessageVersion",
        ),
        (
            "wrong-shape",
            br#"{"v":1,"job":"not a job id","batch":"zero"}"#.to_vec(),
            "MalformedMessage",
        ),
        (
            "empty-range",
            format!(r#"{{"v":1,"job":"{missing_job}","batch":1,"frames":[4,4]}}"#).into_bytes(),
            "InvalidMessage",
        ),
        (
            "no-such-job",
            format!(r#"{{"v":1,"job":"{missing_job}","batch":0,"frames":[0,4]}}"#).into_bytes(),
            "UnknownJob",
        ),
    ];
    let messages = poison
        .iter()
        .map(|(id, body, _)| OutgoingMessage::new(*id, body.clone()))
        .collect();
    ctx.queue.send(BATCHES, messages).await.unwrap();

    run_worker(&data);

    let letters = sp::dlq_list(&data, &[]);
    assert_eq!(letters.len(), poison.len(), "{letters:#?}");
    for (id, _, reason) in &poison {
        let letter = letters
            .iter()
            .find(|l| l["id"] == *id)
            .unwrap_or_else(|| panic!("{id} is not dead-lettered: {letters:#?}"));
        assert_eq!(letter["reason"], *reason, "{letter}");
        assert_eq!(letter["queue"], BATCHES, "{letter}");
        assert_eq!(
            letter["delivery_count"], 1,
            "dead-lettered on first sight: {letter}"
        );
        assert!(
            !letter["description"].as_str().unwrap().is_empty(),
            "a description for people: {letter}"
        );
    }
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
    // Status is not confused by bodies that name no job.
    assert_eq!(sp::status(&data), Vec::<serde_json::Value>::new());

    // Dry runs change nothing.
    for action in ["replay", "purge"] {
        let dry = sp::stylefleet(&data, ["dlq", action, "--dry-run"]);
        assert_success("dlq --dry-run", &dry);
        let said = String::from_utf8_lossy(&dry.stdout);
        assert!(said.contains(&format!("would {action} 5 of 5")), "{said}");
        assert_eq!(
            sp::dlq_list(&data, &[]),
            letters,
            "after {action} --dry-run"
        );
        assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn replaying_a_dead_lettered_batch_brings_its_job_to_done() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let data = dir.path().join("data");
    let ctx = library_context(&data, 4).await;
    let path = "input/0/clip.mp4";
    ctx.store.upload(&clip, path, false).await.unwrap();
    let planned = split(&ctx, path, &style_zero()).await.unwrap();
    let SplitOutcome::Planned {
        job, batches: 3, ..
    } = planned.clone()
    else {
        panic!("{planned:?}")
    };

    // One of the job's batches goes to the dead-letter queue, and a message of no job beside it.
    let taken = ctx
        .queue
        .receive(BATCHES, 1, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let [delivery] = taken.as_slice() else {
        panic!("{taken:?}")
    };
    let batch = BatchMessage::parse(&delivery.body).unwrap();
    ctx.queue
        .dead_letter(delivery, "TestFailure", "moved aside by the test")
        .await
        .unwrap();
    ctx.queue
        .send(
            BATCHES,
            vec![OutgoingMessage::new("junk", b"junk".to_vec())],
        )
        .await
        .unwrap();

    // The workers do the rest; the job cannot finish and says why.
    run_worker(&data);
    let failed = sp::job_status(&data, job.as_str());
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("TestFailure"),
        "{failed}"
    );
    assert_eq!(failed["batches_done"], 2, "{failed}");
    assert_eq!(ctx.queue.backlog(STITCH).await.unwrap(), 0, "no stitch yet");
    let letters = sp::dlq_list(&data, &["--job", job.as_str()]);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["id"], batch.id());
    assert_eq!(sp::dlq_list(&data, &[]).len(), 2, "the job's and the junk");

    // A dry run changes nothing.
    let dry = sp::stylefleet(&data, ["dlq", "replay", "--job", job.as_str(), "--dry-run"]);
    assert_success("dlq replay --dry-run", &dry);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would replay 1 of 1"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert_eq!(sp::dlq_list(&data, &["--job", job.as_str()]), letters);
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
    assert_eq!(sp::job_status(&data, job.as_str())["state"], "failed");

    // The replay re-sends the batch under its id and leaves the other dead letter alone.
    let replay = sp::stylefleet(&data, ["dlq", "replay", "--job", job.as_str()]);
    assert_success("dlq replay", &replay);
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("replayed 1 of 1"),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    assert_eq!(
        sp::dlq_list(&data, &["--job", job.as_str()]),
        Vec::<serde_json::Value>::new()
    );
    let rest = sp::dlq_list(&data, &[]);
    assert_eq!(rest.len(), 1, "{rest:#?}");
    assert_eq!(rest[0]["id"], "junk");
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 1);
    assert_ne!(
        sp::job_status(&data, job.as_str())["state"],
        "failed",
        "revived"
    );

    // A worker styles it, which completes the set and posts the stitch; the aggregator stitches.
    run_worker(&data);
    assert_eq!(ctx.queue.backlog(STITCH).await.unwrap(), 1);
    let options = ConsumeOptions {
        max_deliveries: Some(1),
        exit_when_idle: Some(std::time::Duration::from_secs(10)),
        ..ConsumeOptions::new(STITCH)
    };
    let report = consume(&ctx, &StitchHandler, &options, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.completed, 1, "{report:?}");

    let done = sp::job_status(&data, job.as_str());
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["batches_done"], 3, "{done}");
    assert_eq!(done["output"], "output/0/clip.mp4", "{done}");
    assert_eq!(sp::tree(&data.join("output")).len(), 1);
    assert_frame_exact(&clip, &data.join("output/0/clip.mp4")).await;
}

// ---------------------------------------------------------------------------------------------
// Bad inputs
// ---------------------------------------------------------------------------------------------

/// Runs `process` on a bad input in `data`: it must fail with exit code 1 and one `error:` line
/// that contains `words` and names the job and its reason, write no output, queue nothing, and
/// leave a failed job whose status gives the same reason. Returns the job and the reason.
fn refused(data: &Path, clip: &Path, words: &str) -> (String, String) {
    let out = clip.with_extension("styled.mp4");
    let run = sp::process(data, clip, &out, 1, 4);
    assert_eq!(run.status.code(), Some(1), "{}: {run:?}", clip.display());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    let [line] = errors.as_slice() else {
        panic!("want one error line, got:\n{stderr}")
    };
    assert!(line.contains(words), "{line:?} should say {words:?}");
    let job = sp::job_of_process(&run);
    let reason = line
        .split_once(" failed: ")
        .map(|(_, r)| r.to_owned())
        .unwrap_or_else(|| panic!("no reason in {line:?}"));
    assert!(!out.exists(), "no output for a refused input");
    assert!(run.stdout.is_empty(), "nothing on stdout");
    let view = sp::job_status(data, &job);
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["reason"], reason.as_str(), "{view}");
    assert_eq!(view["batches_total"], 0, "{view}");
    (job, reason)
}

/// Nothing waits in either queue, nothing is dead-lettered, no output exists.
async fn nothing_queued(data: &Path) {
    let ctx = library_context(data, 4).await;
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
    assert_eq!(ctx.queue.backlog(STITCH).await.unwrap(), 0);
    assert_eq!(sp::dlq_list(data, &[]), Vec::<serde_json::Value>::new());
}

/// Files users drop that are not videos to style, and words their job's reason must contain.
const BAD_INPUTS: [(clips::MakeClip, &str); 5] = [
    (clips::zero_byte, "empty"),
    (clips::truncated, "truncated"),
    (clips::text_as_mp4, "not a media file"),
    (clips::audio_only, "no video stream"),
    (clips::png_image, "still image"),
];

/// Each bad input, alone in its data folder, fails its job with the reason and leaves nothing
/// queued, dead-lettered or written.
#[tokio::test]
async fn bad_inputs_are_refused() {
    for (make, words) in BAD_INPUTS {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        refused(&data, &make(dir.path()), words);
        nothing_queued(&data).await;
        assert!(sp::tree(&data.join("output")).is_empty(), "{words}");
    }
}

#[tokio::test]
async fn bad_inputs_leave_other_jobs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let good_out = dir.path().join("good.mp4");
    let run = sp::process(&data, &good, &good_out, 1, 4);
    assert_success("process the good clip", &run);
    let good_job = sp::job_of_process(&run);
    let stored = data.join("output/0").join(good.file_name().unwrap());
    let before = (
        std::fs::read(&stored).unwrap(),
        std::fs::metadata(&stored).unwrap().modified().unwrap(),
        sp::tree(&data.join("jobs").join(&good_job)),
    );

    let mut failed = Vec::new();
    for (make, words) in BAD_INPUTS {
        failed.push(refused(&data, &make(dir.path()), words));
    }

    let jobs = sp::status(&data);
    assert_eq!(jobs.len(), 1 + BAD_INPUTS.len(), "{jobs:#?}");
    for (job, reason) in &failed {
        let view = jobs.iter().find(|j| j["job"] == job.as_str()).unwrap();
        assert_eq!(view["state"], "failed");
        assert_eq!(view["reason"], reason.as_str());
    }
    let view = jobs.iter().find(|j| j["job"] == good_job.as_str()).unwrap();
    assert_eq!(view["state"], "done", "{view}");
    let after = (
        std::fs::read(&stored).unwrap(),
        std::fs::metadata(&stored).unwrap().modified().unwrap(),
        sp::tree(&data.join("jobs").join(&good_job)),
    );
    assert!(after == before, "the good job's files are untouched");
    assert_eq!(sp::tree(&data.join("output")).len(), 1, "no other output");
    nothing_queued(&data).await;
}

// ---------------------------------------------------------------------------------------------
// The same through the fleet (`stylefleet up`)
// ---------------------------------------------------------------------------------------------

/// The state of every job by source path, from `status --json`.
fn states_by_source(data: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    sp::status(data)
        .into_iter()
        .map(|j| (j["source"].as_str().unwrap().to_owned(), j))
        .collect()
}

fn planned_events(up: &sp::Up) -> usize {
    up.events()
        .iter()
        .filter(|e| e["fields"]["message"] == "job planned")
        .count()
}

#[tokio::test]
async fn the_fleet_makes_one_job_of_a_file_dropped_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 12, 25);
    let data = dir.path().join("data");
    let log = dir.path().join("up.log");
    let up = sp::Up::start(&data, &log, &sp::QUICK_UP);
    sp::drop_into(&data, "0", &clip, "clip.mp4");
    let stored = data.join("output/0/clip.mp4");
    sp::wait_for("the first drop to be styled", 90, || {
        let jobs = states_by_source(&data);
        (jobs.get("input/0/clip.mp4")?["state"] == "done").then_some(())
    });
    let job = sp::job_dirs(&data);
    assert_eq!(job.len(), 1);
    let written = std::fs::metadata(&stored).unwrap().modified().unwrap();
    let job_files = sp::tree(&data.join("jobs"));
    let done_dir = data.join("jobs").join(&job[0]).join("done");
    let markers: Vec<_> = sp::files(&done_dir)
        .iter()
        .map(|m| std::fs::read(done_dir.join(m)).unwrap())
        .collect();

    // The same bytes dropped again under the same name: a new file event for the store.
    std::thread::sleep(std::time::Duration::from_millis(20));
    sp::drop_into(&data, "0", &clip, "clip.mp4");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    up.stop();

    // A restarted fleet sees the file again, as it sees every file after a restart.
    let up = sp::Up::start(&data, &log, &sp::QUICK_UP);
    sp::wait_for("the restarted fleet to watch", 30, || {
        let starts = up
            .events()
            .iter()
            .filter(|e| e["fields"]["message"] == "fleet up; watching input/")
            .count();
        (starts == 2).then_some(())
    });
    // Settling (0.3 s) and a few polls (0.2 s) later the file has been seen and split again.
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert_eq!(planned_events(&up), 1, "planned once over both runs");
    up.stop();

    assert_eq!(sp::job_dirs(&data), job, "one job");
    assert_eq!(sp::tree(&data.join("jobs")), job_files, "no new job files");
    assert_eq!(sp::tree(&data.join("output")).len(), 1, "one output");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().modified().unwrap(),
        written,
        "the output is written once"
    );
    let markers_after: Vec<_> = sp::files(&done_dir)
        .iter()
        .map(|m| std::fs::read(done_dir.join(m)).unwrap())
        .collect();
    assert_eq!(markers_after, markers, "no batch was redone");
    let ctx = library_context(&data, 4).await;
    assert_eq!(ctx.queue.backlog(BATCHES).await.unwrap(), 0);
    // What the restarted fleet's splitter concluded about the re-dropped file: that job, done.
    let again = split(&ctx, "input/0/clip.mp4", &style_zero())
        .await
        .unwrap();
    assert!(
        matches!(&again, SplitOutcome::Done { job: j } if j.as_str() == job[0]),
        "{again:?}"
    );
    assert_frame_exact(&clip, &stored).await;
}

#[tokio::test]
async fn the_fleet_fails_each_bad_input_alone_while_a_good_clip_completes() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    std::fs::create_dir(&made).unwrap();
    let good = clips::cfr_with_aac(&made, 64, 48, 12, 25);
    let bad = [
        (clips::zero_byte(&made), "zero.mp4", "empty"),
        (clips::truncated(&made), "truncated.mp4", "truncated"),
        (clips::text_as_mp4(&made), "text.mp4", "not a media file"),
        (
            clips::audio_only(&made),
            "audio_only.mp4",
            "no video stream",
        ),
        (clips::png_image(&made), "picture.png", "still image"),
    ];
    let data = dir.path().join("data");
    let log = dir.path().join("up.log");
    let up = sp::Up::start(&data, &log, &sp::QUICK_UP);
    for (file, name, _) in &bad {
        sp::drop_into(&data, "0", file, name);
    }
    sp::drop_into(&data, "0", &good, "good.mp4");

    let jobs = sp::wait_for("every drop to end", 90, || {
        let jobs = states_by_source(&data);
        let ended = jobs.len() == bad.len() + 1
            && jobs
                .values()
                .all(|j| j["state"] == "done" || j["state"] == "failed");
        ended.then_some(jobs)
    });
    up.stop();
    for (_, name, words) in &bad {
        let job = &jobs[&format!("input/0/{name}")];
        assert_eq!(job["state"], "failed", "{job}");
        let reason = job["reason"].as_str().unwrap();
        assert!(
            reason.contains(words),
            "{name}: {reason:?} should say {words:?}"
        );
        assert!(!reason.contains('\n'), "one line: {reason:?}");
    }
    let job = &jobs["input/0/good.mp4"];
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        sp::tree(&data.join("output")),
        [Path::new("0/good.mp4")],
        "only the good clip has an output"
    );
    assert_frame_exact(&good, &data.join("output/0/good.mp4")).await;
    nothing_queued(&data).await;
}

// ---------------------------------------------------------------------------------------------
// Encoder options
// ---------------------------------------------------------------------------------------------

/// `process` of `clip` in its own data folder `dir/<name>` with the encoder options `options`;
/// returns the data folder and the output.
fn process_with(dir: &Path, name: &str, clip: &Path, options: &[&str]) -> (PathBuf, PathBuf) {
    let data = dir.join(name);
    let out = dir.join(format!("{name}.mp4"));
    let mut args = vec![
        "process".as_ref(),
        clip.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--style".as_ref(),
        "0".as_ref(),
        "--quiet".as_ref(),
        "--workers".as_ref(),
        "1".as_ref(),
        "--batch-frames".as_ref(),
        "4".as_ref(),
    ];
    args.extend(options.iter().map(std::ffi::OsStr::new));
    let run = sp::stylefleet(&data, args);
    assert_success(&format!("process {options:?}"), &run);
    (data, out)
}

/// The bytes of every chunk of the one job in `data`.
fn chunk_bytes(data: &Path) -> u64 {
    let jobs = sp::job_dirs(data);
    let [job] = jobs.as_slice() else {
        panic!("one job expected, found {jobs:?}")
    };
    let chunks = data.join("jobs").join(job).join("chunks");
    sp::files(&chunks)
        .iter()
        .map(|f| std::fs::metadata(chunks.join(f)).unwrap().len())
        .sum()
}

#[tokio::test]
async fn encoder_options_reach_the_manifest_the_chunks_and_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clips::pattern_with_aac(dir.path(), "detail.mp4", "mandelbrot", 96, 64, 8, 25);
    let (rough, rough_out) = process_with(
        dir.path(),
        "rough",
        &clip,
        &["--crf", "30", "--preset", "ultrafast"],
    );
    assert_frame_exact(&clip, &rough_out).await;
    let job = &sp::job_dirs(&rough)[0];
    let manifest = support::fleet::manifest(&rough, job);
    assert_eq!(manifest["encoder"]["crf"], 30, "{manifest}");
    assert_eq!(manifest["encoder"]["preset"], "ultrafast", "{manifest}");
    assert_eq!(manifest["encoder"]["codec"], "auto", "{manifest}");
    let marker = support::fleet::done_marker(&rough, job, 0);
    let encoder = marker["encoder"].as_str().unwrap_or_default();
    assert!(
        ["libx264", "h264_nvenc"].contains(&encoder),
        "the done marker names the encoder that ran: {marker}"
    );

    let (fine, fine_out) = process_with(
        dir.path(),
        "fine",
        &clip,
        &["--crf", "10", "--preset", "ultrafast", "--codec", "libx264"],
    );
    assert_frame_exact(&clip, &fine_out).await;
    let fine_job = &sp::job_dirs(&fine)[0];
    assert_ne!(fine_job, job, "the encoder is part of the job's identity");
    assert_eq!(
        support::fleet::done_marker(&fine, fine_job, 0)["encoder"],
        "libx264"
    );
    let (rough_bytes, fine_bytes) = (chunk_bytes(&rough), chunk_bytes(&fine));
    assert!(
        rough_bytes < fine_bytes,
        "CRF 30 chunks ({rough_bytes} bytes) are smaller than CRF 10 chunks ({fine_bytes} bytes)"
    );
    let size = |f: &Path| std::fs::metadata(f).unwrap().len();
    assert!(
        size(&rough_out) < size(&fine_out),
        "the output follows the chunks' settings (stabilised outputs are encoded again)"
    );
}

#[test]
fn bad_encoder_values_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("never-read.mp4");
    for (args, env, words) in [
        (&["--crf", "52"][..], None, "--crf"),
        (&["--crf=-1"][..], None, "--crf"),
        (&["--preset", "turbo"][..], None, "--preset"),
        (&["--codec", "vp9"][..], None, "--codec"),
        (&[][..], Some(("STYLEFLEET_CRF", "99")), "--crf"),
        (&[][..], Some(("STYLEFLEET_PRESET", "warp")), "--preset"),
    ] {
        let data = dir.path().join("data");
        let mut cmd = sp::command(&data, ["process", "--style", "0", "--quiet"]);
        cmd.arg(&clip).args(args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?} {env:?}: {stderr}");
        assert!(!data.exists(), "{args:?} {env:?} wrote {}", data.display());
    }
}

#[test]
fn a_worker_says_which_encoder_auto_became() {
    let dir = tempfile::tempdir().unwrap();
    let worker = |codec: Option<&str>| {
        let mut cmd = sp::command(
            &dir.path().join("data"),
            ["worker", "--exit-when-idle", "0.2"],
        );
        cmd.env("RUST_LOG", "info").env_remove("STYLEFLEET_CODEC");
        if let Some(codec) = codec {
            cmd.env("STYLEFLEET_CODEC", codec);
        }
        let out = cmd.output().unwrap();
        assert_success("stylefleet worker", &out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("chunk encoder"))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one line says which encoder runs:\n{stderr}"
        );
        lines[0].clone()
    };
    let detected = worker(None);
    let ffmpeg_has_nvenc = String::from_utf8_lossy(
        &std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .unwrap()
            .stdout,
    )
    .contains(" h264_nvenc ");
    let gpu = Path::new("/dev/nvidia0").exists();
    let fell_back = detected.contains("libx264") && detected.contains("probe encode failed");
    match (ffmpeg_has_nvenc, gpu) {
        (false, _) => assert!(
            detected.contains("libx264") && detected.contains("no h264_nvenc"),
            "{detected}"
        ),
        // The probe encode is what tells: ffmpeg lists the encoder, the machine has no NVENC.
        (true, false) => assert!(fell_back, "{detected}"),
        // A GPU without NVENC (A100, H100) falls back too.
        (true, true) => assert!(
            fell_back || (detected.contains("h264_nvenc") && detected.contains("succeeded")),
            "{detected}"
        ),
    }
    let forced = worker(Some("libx264"));
    assert!(
        forced.contains("libx264") && forced.contains("chosen by"),
        "{forced}"
    );
}
