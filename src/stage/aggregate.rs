//! The aggregator: joins a job's chunks in order, copies the audio and other streams from the
//! source, verifies the result against the source, and writes the output once.
//!
//! A job with temporal stabilisation (its manifest says so) has its chunks decoded and blended in
//! one sequential pass, frame after frame, before they are joined
//! ([`stitch_stabilised`](crate::media::stitch_stabilised)): the workers style their batches in
//! parallel as ever, and the one cheap ordered step runs where every batch is already done, so
//! batch seams are ordinary frame pairs and no worker waits on another.
//!
//! Output naming: two jobs may want one name (the same file name uploaded twice with other bytes,
//! one clip at two strengths). A name is owned by the job that creates `jobs/outputs/<name>.json`
//! (create-only: the claim itself is the atomic step); a job that finds its name owned by another
//! job, or taken by a file no job wrote, takes `<stem>-<job>.mp4` beside it. The job then records
//! its choice once in `jobs/<job>/output.json`, uploads the output create-only, and only then
//! writes `done`: no job is ever reported done with another job's file, and a retry after a crash
//! at any step finds its own name and its own output again.
//!
//! One stitch per job at a time: the stitch holds a lease (`jobs/<job>/stitch-lease.json`,
//! heartbeat while it works). A duplicate `stitch` that finds a live lease is completed at once when
//! it is a first delivery (the holder's own message is still in flight and settles the job), and
//! retried after the lease's remaining time when it is a redelivery (it may be the holder's own
//! message after the holder died). The lease saves work; correctness rests on the create-only
//! output, so two stitches racing past it still write one output.
//!
//! Failures are classified where they happen: a chunk that ffmpeg refuses, an output that does not
//! verify, an output name taken by something else fail for good on the first delivery; the job
//! turns `failed` with the reason and the message is dead-lettered, where a replay revives it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::{DoneMarker, JobId, JobState, Manifest, Status, now_secs, paths};
use crate::message::StitchMessage;
use crate::queue::Delivery;
use crate::stage::{Context, Failure, JobLog, Outcome, StageError};

/// How long a stitch lease lasts without a heartbeat.
const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often the holder renews its lease.
const LEASE_HEARTBEAT: Duration = Duration::from_secs(15);

/// The output a job claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputClaim {
    /// The job.
    pub job: JobId,
    /// The output path in the store.
    pub output: String,
}

/// Handles one stitch delivery.
pub async fn handle(ctx: &Context, delivery: &Delivery) -> Outcome {
    let message = match StitchMessage::parse(&delivery.body) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::DeadLetter {
                reason: e.reason().into(),
                description: e.to_string(),
            };
        }
    };
    let manifest = match ctx
        .store
        .get_json::<Manifest>(&paths::manifest(&message.job))
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Outcome::DeadLetter {
                reason: "UnknownJob".into(),
                description: format!("job {} has no manifest", message.job),
            };
        }
        Err(e) => {
            return ctx.outcome(
                Err(e.into()),
                delivery.delivery_count,
                "reading the manifest",
            );
        }
    };
    let mut log = JobLog::new(
        &message.job,
        format!("stitch.attempt-{}", delivery.delivery_count),
    );
    let lease = match Lease::acquire(ctx, &message.job).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(held)) => {
            // Past the lease's end, with a margin for the clocks of holder and reader.
            let left = Duration::from_secs_f64((held.expires_at - now_secs()).max(0.0) + 2.0);
            return if delivery.delivery_count <= 1 {
                tracing::info!(job = %message.job, holder = %held.holder, "duplicate stitch: another stitch of this job is under way");
                Outcome::Complete
            } else {
                Outcome::Retry {
                    reason: format!(
                        "{} holds the stitch lease of job {}",
                        held.holder, message.job
                    ),
                    delay: left,
                }
            };
        }
        Err(e) => {
            return ctx.outcome(Err(e), delivery.delivery_count, "taking the stitch lease");
        }
    };
    let result = stitch(ctx, &manifest, &mut log).await;
    lease.release(ctx).await;
    let outcome = ctx.outcome(
        result,
        delivery.delivery_count,
        &format!("stitching job {}", message.job),
    );
    match &outcome {
        Outcome::Complete | Outcome::Release { .. } => {}
        Outcome::Retry { reason, delay } => log.warn(format!("will retry in {delay:?}: {reason}")),
        Outcome::DeadLetter {
            reason,
            description,
        } => {
            log.warn(format!("failed for good ({reason}): {description}"));
            ctx.fail_batch(
                &message.job,
                &manifest.source.path,
                None,
                manifest.batches.len() as u32,
                description,
            )
            .await;
        }
    }
    log.flush(&ctx.logs).await;
    outcome
}

/// Stitches the job's output unless it is already written.
pub async fn stitch(
    ctx: &Context,
    manifest: &Manifest,
    log: &mut JobLog,
) -> Result<(), StageError> {
    let job = &manifest.job;
    let started = Instant::now();
    if let Some(status) = ctx.store.get_json::<Status>(&paths::status(job)).await?
        && status.state == JobState::Done
        && ctx.store.exists(&paths::output_claim(job)).await?
    {
        log.info("already stitched (redelivery)");
        return Ok(());
    }
    // Every batch must be done; the counter posted this message, so a gap means a replayed or
    // forged message: wait for the batches rather than fail.
    let mut markers = Vec::with_capacity(manifest.batches.len());
    for batch in &manifest.batches {
        match ctx
            .store
            .get_json::<DoneMarker>(&paths::done(job, batch.index))
            .await?
        {
            Some(marker) if marker.frames == batch.len() => markers.push(marker),
            Some(marker) => {
                return Err(StageError::permanent(format!(
                    "batch {} has {} frames, the plan says {}",
                    batch.index,
                    marker.frames,
                    batch.len()
                )));
            }
            None => {
                return Err(StageError::transient(format!(
                    "batch {} is not done yet",
                    batch.index
                )));
            }
        }
    }

    crate::fault::hit("stitch.start")?;
    let output = claim_output(ctx, manifest).await?;
    crate::fault::hit("stitch.after-claim")?;
    // Seconds per phase of the stitch, logged and kept in the status beside the total.
    let mut phases = std::collections::BTreeMap::new();
    if !ctx.store.exists(&output).await? {
        let phase = Instant::now();
        let work = ctx.scratch.join("stitch").join(job.as_str());
        tokio::fs::create_dir_all(&work).await.map_err(|e| {
            StageError::Transient(Failure::new(format!("cannot create {}", work.display()), e))
        })?;
        let mut chunks = Vec::with_capacity(manifest.batches.len());
        for batch in &manifest.batches {
            let name = format!("{:05}.mp4", batch.index);
            chunks.push(
                ctx.store
                    .materialize(&paths::chunk(job, batch.index), &work, &name)
                    .await?,
            );
        }
        // Each chunk was checked against its range and the job's codec before its done marker
        // was written (and each marker's count against the plan above): the join takes the
        // plan's counts instead of probing every chunk again. The output is verified below.
        let counts: Vec<usize> = manifest.batches.iter().map(|b| b.len() as usize).collect();
        let source = ctx.pinned_source(manifest).await?;
        phases.insert("stitch_fetch", phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        let stitched = work.join("output.mp4");
        // Signed: the span layer exports unsigned values as text.
        let frames = i64::try_from(manifest.probe.frames.len()).unwrap_or(i64::MAX);
        let step = |name: &'static str| {
            tracing::info_span!(
                "step",
                otel.name = name,
                stylefleet.job = %job,
                stylefleet.frames = frames,
            )
        };
        match &manifest.temporal {
            None => crate::media::stitch::stitch_checked(
                &source,
                &manifest.probe,
                &chunks,
                &counts,
                &stitched,
            )
            .instrument(step("stitch.concat"))
            .await
            .map_err(|e| StageError::media("stitching", e))?,
            Some(temporal) => {
                let report = crate::media::stitch_stabilised(
                    &source,
                    &manifest.probe,
                    &chunks,
                    &counts,
                    &stitched,
                    &manifest.encoder,
                    temporal,
                )
                .instrument(step("stitch.stabilise"))
                .await
                .map_err(|e| StageError::media("stitching with temporal stabilisation", e))?;
                log.info(format!(
                    "stabilised {} frames in {:.1} s of flow and blend: {:.0}% of pixels reliable, {} restarts (cuts, fades); probes {:.3} s, join {:.3} s",
                    report.frames,
                    report.filter_seconds,
                    100.0 * report.reliable,
                    report.restarts,
                    report.probe_seconds,
                    report.join_seconds
                ));
                phases.insert("stitch_stabilise_filter", report.filter_seconds);
                phases.insert("stitch_stabilise_probe", report.probe_seconds);
                phases.insert("stitch_stabilise_join", report.join_seconds);
            }
        }
        let joined = match manifest.temporal {
            None => "stitch_join",
            Some(_) => "stitch_stabilise",
        };
        phases.insert(joined, phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        crate::media::verify(&manifest.probe, &stitched)
            .instrument(step("stitch.verify"))
            .await
            .map_err(|e| {
                StageError::Permanent(Failure::new(
                    "the stitched output does not match the source",
                    e,
                ))
            })?;
        phases.insert("stitch_verify", phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        let created = ctx
            .store
            .upload(&stitched, &output, true)
            .instrument(step("stitch.upload"))
            .await?;
        if !created {
            // The name is this job's (its claim says so), so what is there must be this job's
            // output from an attempt that died before `done`: check that rather than trust it.
            check_existing_output(ctx, manifest, &output, &work).await?;
        }
        phases.insert("stitch_upload", phase.elapsed().as_secs_f64());
        crate::fault::hit("stitch.after-upload")?;
        let _ = tokio::fs::remove_dir_all(&work).await;
        let spent: Vec<String> = phases
            .iter()
            .map(|(phase, secs)| format!("{phase} {secs:.3} s"))
            .collect();
        log.info(format!("wrote {output} ({})", spent.join(", ")));
    }

    let mut timings = std::collections::BTreeMap::new();
    for marker in &markers {
        for (k, v) in &marker.timings {
            *timings.entry(format!("batches_{k}")).or_insert(0.0) += v;
        }
    }
    timings.insert("stitch".into(), started.elapsed().as_secs_f64());
    for (phase, secs) in phases {
        timings.insert(phase.into(), secs);
    }
    if let Some(previous) = ctx.store.get_json::<Status>(&paths::status(job)).await?
        && let Some(split) = previous.timings.get("split")
    {
        timings.insert("split".into(), *split);
    }
    timings.insert("total".into(), now_secs() - manifest.created_at);
    let status = Status {
        job: job.clone(),
        source: manifest.source.path.clone(),
        state: JobState::Done,
        reason: None,
        batches_total: manifest.batches.len() as u32,
        output: Some(output),
        timings,
        updated_at: now_secs(),
    };
    ctx.store.put_json(&paths::status(job), &status).await?;
    crate::telemetry::metrics::job(crate::telemetry::metrics::JobEvent::Done);
    Ok(())
}

/// The output name this job owns: the one it recorded before, else the first of its preferred
/// name and `<stem>-<job>.mp4` whose owner claim it creates (or already holds) and where no file
/// stands that no job wrote.
async fn claim_output(ctx: &Context, manifest: &Manifest) -> Result<String, StageError> {
    let job = &manifest.job;
    if let Some(claim) = ctx
        .store
        .get_json::<OutputClaim>(&paths::output_claim(job))
        .await?
    {
        return Ok(claim.output);
    }
    let preferred = manifest.output.clone();
    let stem = preferred.strip_suffix(".mp4").unwrap_or(&preferred);
    let own = format!("{stem}-{job}.mp4");
    let mut chosen = None;
    for candidate in [preferred.clone(), own] {
        let claim = OutputClaim {
            job: job.clone(),
            output: candidate.clone(),
        };
        let owner = paths::output_owner(&candidate);
        if !ctx.store.put_json_create(&owner, &claim).await? {
            match ctx.store.get_json::<OutputClaim>(&owner).await? {
                Some(theirs) if theirs.job == *job => {}
                Some(theirs) => {
                    tracing::info!(%job, name = %candidate, owner = %theirs.job, "output name owned by another job");
                    continue;
                }
                None => return Err(StageError::transient("an output claim vanished")),
            }
        }
        // No job of ours has written it yet (the job's choice below comes first), so a file
        // there was put by hand or by an older version: leave it alone.
        if ctx.store.exists(&candidate).await? {
            tracing::warn!(%job, name = %candidate, "a file no job claimed holds this output name");
            continue;
        }
        chosen = Some(candidate);
        break;
    }
    let Some(output) = chosen else {
        return Err(StageError::permanent(format!(
            "no free output name for job {job}: {preferred} and its job-suffixed name are taken by files no job wrote"
        )));
    };
    ctx.store
        .put_json_create(
            &paths::output_claim(job),
            &OutputClaim {
                job: job.clone(),
                output,
            },
        )
        .await?;
    // Whoever won the create race (a concurrent stitch of the same job) decided the name.
    match ctx
        .store
        .get_json::<OutputClaim>(&paths::output_claim(job))
        .await?
    {
        Some(claim) => Ok(claim.output),
        None => Err(StageError::transient("the output claim vanished")),
    }
}

/// Checks that the file at `output` is this job's output (an upload that finished before a crash):
/// it must match the source frame for frame; otherwise the job fails with the reason.
async fn check_existing_output(
    ctx: &Context,
    manifest: &Manifest,
    output: &str,
    work: &std::path::Path,
) -> Result<(), StageError> {
    let local = match ctx.store.local_path(output) {
        Some(path) => path,
        None => {
            let to = work.join("existing.mp4");
            ctx.store.download(output, &to).await?;
            to
        }
    };
    crate::media::verify(&manifest.probe, &local)
        .await
        .map_err(|e| {
            StageError::Permanent(Failure::new(
                format!("{output} already exists and is not this job's output"),
                e,
            ))
        })
}

/// Who holds a job's stitch lease, until when (the holder's clock, seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder (host and pid).
    pub holder: String,
    /// When the lease lapses unless renewed.
    pub expires_at: f64,
}

/// A held stitch lease; renewed in the background until released.
struct Lease {
    /// The job.
    job: JobId,
    /// Ends the heartbeat task when the lease is released or dropped.
    heartbeat: tokio_util::sync::DropGuard,
}

impl Lease {
    /// Takes the job's lease, or returns the live lease another holder has.
    async fn acquire(ctx: &Context, job: &JobId) -> Result<Result<Lease, LeaseRecord>, StageError> {
        let path = paths::stitch_lease(job);
        let mine = || LeaseRecord {
            holder: ctx.worker_name.clone(),
            expires_at: now_secs() + LEASE_TTL.as_secs_f64(),
        };
        if !ctx.store.put_json_create(&path, &mine()).await? {
            match ctx.store.get_json::<LeaseRecord>(&path).await? {
                Some(held)
                    if held.holder != ctx.worker_name
                        && held.expires_at > now_secs()
                        && !died_here(&held.holder) =>
                {
                    return Ok(Err(held));
                }
                // Lapsed (its holder died) or ours from an earlier attempt: take it over. Two
                // takers may both pass here; the create-only output keeps that correct.
                _ => ctx.store.put_json(&path, &mine()).await?,
            }
        }
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        let task_ctx = ctx.clone();
        let task_path = path.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = task_stop.cancelled() => return,
                    _ = tokio::time::sleep(LEASE_HEARTBEAT) => {}
                }
                let record = LeaseRecord {
                    holder: task_ctx.worker_name.clone(),
                    expires_at: now_secs() + LEASE_TTL.as_secs_f64(),
                };
                if let Err(e) = task_ctx.store.put_json(&task_path, &record).await {
                    tracing::warn!(error = %e, "cannot renew the stitch lease");
                }
            }
        });
        Ok(Ok(Lease {
            job: job.clone(),
            heartbeat: stop.drop_guard(),
        }))
    }

    /// Stops the heartbeat and gives the lease up (only its own: a lease taken over after this
    /// holder was presumed dead is the new holder's).
    async fn release(self, ctx: &Context) {
        drop(self.heartbeat);
        let path = paths::stitch_lease(&self.job);
        match ctx.store.get_json::<LeaseRecord>(&path).await {
            Ok(Some(held)) if held.holder == ctx.worker_name => {}
            _ => return,
        }
        if let Err(e) = ctx.store.delete(&path).await {
            tracing::warn!(job = %self.job, error = %e, "cannot release the stitch lease");
        }
    }
}

/// Whether `holder` (`<host>:<pid>`, see [`crate::setup::worker_name`]) is a process of this host
/// that no longer runs: its lease need not be waited out (a `process` command killed mid-stitch
/// and started again takes its job's stitch over at once).
pub(crate) fn died_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    let this_host = crate::setup::worker_name();
    let same_host = this_host
        .rsplit_once(':')
        .is_some_and(|(here, _)| here == host);
    same_host
        && pid > 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

#[cfg(test)]
mod tests {
    use super::died_here;

    #[test]
    fn a_lease_of_a_dead_process_of_this_host_is_free() {
        let host = crate::setup::worker_name();
        let (host, me) = host.rsplit_once(':').unwrap_or(("localhost", "1"));
        assert!(!died_here(&format!("{host}:{me}")), "this process runs");
        // Above the kernel's pid limit: no such process.
        assert!(died_here(&format!("{host}:2147483646")));
        assert!(
            !died_here("another-host:2147483646"),
            "other hosts are not judged"
        );
        assert!(!died_here("garbage"));
    }
}
