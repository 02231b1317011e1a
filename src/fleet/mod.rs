//! The embedded fleet on one machine: a folder watcher that splits new uploads, worker processes
//! scaled by the KEDA rule, the aggregator, and a reconciler that turns dead letters into failed
//! jobs. `stylefleet up` runs [`run`]; `stylefleet process` runs [`process`] for one video through
//! the same pieces. [`ui`] is the web page `up --ui` serves beside it.

pub mod autoscale;
pub mod process;
pub mod ui;
pub mod watcher;
pub mod workers;

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consume::{ConsumeOptions, StitchHandler, consume};
use crate::inspect::{InspectError, dead_letters_by_job, job_of_message, view};
use crate::job::{FailureRecord, JobId, JobState, paths};
use crate::queue::{BATCHES, STITCH};
use crate::stage::Context;
use crate::stage::split::{SplitOutcome, split, style_for_input};
use crate::store::Store;
use autoscale::{Autoscaler, ScaleRule};
use watcher::Watcher;
use workers::{WorkerCommand, WorkerPool};

/// How the fleet runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The scaling rule for workers.
    pub scale: ScaleRule,
    /// How a worker is started.
    pub worker: WorkerCommand,
    /// How often the watcher and the autoscaler look.
    pub poll: Duration,
    /// Stillness before an upload counts as completely written.
    pub settle: Duration,
    /// Time a worker gets to drain on shutdown.
    pub grace: Duration,
}

/// The worker count as the autoscaler moves it, published by [`run`] after every decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerCount {
    /// Worker processes running (not counting those draining).
    pub running: usize,
    /// The most there may be.
    pub max: usize,
    /// Batch messages waiting or in flight, from which the autoscaler decided.
    pub backlog: u64,
}

/// Runs the fleet until `shutdown` is cancelled, then drains: workers finish or release their
/// batch, the aggregator finishes its stitch. The worker count goes to `worker_count` as it changes
/// (nothing needs to listen).
pub async fn run(
    ctx: &Context,
    options: &FleetOptions,
    shutdown: CancellationToken,
    worker_count: &watch::Sender<WorkerCount>,
) {
    crate::setup::sweep_leftovers(ctx, crate::setup::CLI_UPLOADS).await;
    let aggregator = {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let consume_options = ConsumeOptions {
            grace: options.grace,
            ..ConsumeOptions::new(STITCH)
        };
        tokio::spawn(async move { consume(&ctx, &StitchHandler, &consume_options, shutdown).await })
    };
    let mut pool = WorkerPool::new(options.worker.clone());
    let mut scaler = Autoscaler::new(options.scale.clone());
    let mut watcher = Watcher::new(options.settle);
    let mut active: HashSet<JobId> = HashSet::new();
    // Uploads already split, by path and the version the watcher saw: a new version of a file is
    // a new upload (a new job), not a path seen before.
    let mut finished: HashSet<(String, watcher::Version)> = HashSet::new();
    tracing::info!(
        store = ctx.store.spec(),
        max_workers = options.scale.max_workers,
        "fleet up; watching input/"
    );
    loop {
        if let Err(e) = tick(ctx, &mut watcher, &mut active, &mut finished).await {
            tracing::warn!(error = %e, "fleet tick failed; retrying");
        }
        let backlog = ctx.queue.backlog(BATCHES).await.unwrap_or(0);
        crate::telemetry::metrics::queue_depth(BATCHES, backlog);
        if crate::telemetry::metrics::read()
            && let Ok(stitches) = ctx.queue.backlog(STITCH).await
        {
            crate::telemetry::metrics::queue_depth(STITCH, stitches);
        }
        let target = scaler.decide(backlog, pool.len(), tokio::time::Instant::now());
        if target != pool.len() {
            tracing::info!(backlog, from = pool.len(), to = target, "scaling workers");
        }
        if let Err(e) = pool.scale_to(target) {
            tracing::error!(error = %e, "cannot start a worker");
        }
        worker_count.send_if_modified(|count| {
            let now = WorkerCount {
                running: pool.len(),
                max: options.scale.max_workers,
                backlog,
            };
            std::mem::replace(count, now) != now
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(options.poll) => {}
        }
    }
    tracing::info!("draining: stopping workers and the aggregator");
    pool.shutdown(options.grace + Duration::from_secs(5)).await;
    worker_count.send_modify(|count| count.running = 0);
    match aggregator.await {
        Ok(Ok(report)) => tracing::info!(
            stitched = report.completed,
            released = report.abandoned,
            dead_lettered = report.dead_lettered,
            lost = report.lost,
            "aggregator stopped"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "aggregator failed"),
        Err(e) => tracing::error!(error = %e, "aggregator task failed"),
    }
}

/// One round of the fleet's bookkeeping: mark jobs with dead letters failed, forget finished
/// jobs, and split ready uploads while the flood limits allow.
async fn tick(
    ctx: &Context,
    watcher: &mut Watcher,
    active: &mut HashSet<JobId>,
    finished: &mut HashSet<(String, watcher::Version)>,
) -> Result<(), InspectError> {
    reconcile_dead_letters(ctx).await?;
    let mut still = HashSet::new();
    for job in active.drain() {
        let state = view(&ctx.store, &job, &[])
            .await
            .map(|v| v.state)
            .unwrap_or(JobState::Failed);
        if !matches!(state, JobState::Done | JobState::Failed) {
            still.insert(job);
        }
    }
    *active = still;
    for (path, version) in watcher.poll(&ctx.store).await? {
        let seen = (path.clone(), version);
        if finished.contains(&seen) {
            continue;
        }
        if active.len() >= ctx.settings.flood.max_active_jobs
            || ctx.queue.backlog(BATCHES).await.unwrap_or(0) >= ctx.settings.flood.max_backlog
        {
            tracing::debug!(%path, active = active.len(), "flood limit reached; the upload waits its turn");
            break;
        }
        if !Store::is_addressable(&path) {
            // Listed, yet never readable under its own name: say so once instead of retrying for
            // ever.
            tracing::error!(
                %path,
                "input refused: its file name holds characters the store cannot address \
                 (such as < > | # % ^ ` {{ }} [ ] ~); rename it"
            );
            finished.insert(seen);
            continue;
        }
        let style = match style_for_input(ctx, &path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%path, error = %e, "ignoring");
                finished.insert(seen);
                continue;
            }
        };
        match split(ctx, &path, &style).await {
            Ok(SplitOutcome::Planned {
                job,
                batches,
                posted,
                created,
            }) => {
                if created || posted > 0 {
                    tracing::info!(%path, %job, batches, posted, "job planned");
                }
                active.insert(job);
                finished.insert(seen);
            }
            Ok(SplitOutcome::Rejected { job, reason }) => {
                tracing::warn!(%path, %job, %reason, "input refused");
                finished.insert(seen);
            }
            Ok(SplitOutcome::Done { .. }) => {
                finished.insert(seen);
            }
            Err(e) => tracing::warn!(%path, error = %e, "split failed; will retry"),
        }
    }
    Ok(())
}

/// Records a failure for every job whose message sits in a dead-letter queue without one (for
/// example a message the queue dead-lettered itself after its delivery limit, when every attempt
/// died with its worker), so that no job waits forever.
pub async fn reconcile_dead_letters(ctx: &Context) -> Result<(), InspectError> {
    for (job, letters) in dead_letters_by_job(ctx.queue.as_ref()).await? {
        for dl in letters {
            let Some((_, batch)) = job_of_message(&dl.body) else {
                continue;
            };
            let path = match batch {
                Some(b) => paths::failed(&job, b),
                None => paths::failed_stitch(&job),
            };
            if ctx.store.exists(&path).await? {
                continue;
            }
            let reason = format!("{}: {}", dl.info.reason, dl.info.description);
            let record = FailureRecord {
                batch: batch.unwrap_or(u32::MAX),
                reason,
                at: crate::job::now_secs(),
            };
            ctx.store.put_json_create(&path, &record).await?;
            let message = batch.map_or_else(|| "stitch".to_owned(), |b| format!("batch {b}"));
            tracing::warn!(%job, %message, reason = %record.reason, "job failed: message dead-lettered");
        }
    }
    Ok(())
}
