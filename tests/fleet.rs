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

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use serde_json::Value;

use support::azurite::check;
use support::clips;
use support::fleet::*;

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
