//! The consume loop shared by workers (queue `batches`) and the aggregator (queue `stitch`):
//! receive under a peek-lock, keep the lock renewed while the handler works, settle by the
//! handler's [`Outcome`], and drain on shutdown.
//!
//! Lock: [`QueueExt::keep_locked`] renews the delivery's lock while the handler works (every
//! third of the lock duration; see [`crate::queue`]'s `ext` docs). When the lock is lost (renewal
//! is refused, or fails for a whole lock duration), the handler's future is dropped at once,
//! which kills its ffmpeg children, and the delivery is not settled: it can no longer be, and the
//! message comes back (or has come back already) to another receiver, who redoes the work, as
//! handlers are idempotent. Running on would only race that receiver for nothing.
//! [`ConsumeReport::lost`] counts such deliveries.
//!
//! Shutdown: when the token is cancelled the loop stops receiving (a receive under way ends within
//! its wait, and a message it brings is released at once); each delivery in hand gets `grace` to
//! finish, after which it is abandoned so another worker picks it up at once. Nothing is lost
//! either way: the message is completed only after its side effects.
//!
//! In flight: [`ConsumeOptions::in_flight`] deliveries are handled at once, each with its own
//! lock renewal and settlement (the aggregator takes one; a worker takes two, so that the next
//! batch is received and decoded, and the previous one encoded and uploaded, while the network
//! styles one: the style stage lets one batch at a time onto the device). A new receive starts
//! only while fewer than that are in hand, so a worker never holds messages it cannot soon work
//! on, and the queue's other consumers get them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::queue::{BATCHES, Delivery, QueueError, QueueExt, STITCH};
use crate::stage::{Context, Outcome};

/// Something that handles deliveries, several at once when the loop is told to.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Does the work of one delivery and says how it ended.
    async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome;
}

/// The aggregator as a handler.
#[derive(Debug, Default)]
pub struct StitchHandler;

#[async_trait]
impl Handler for StitchHandler {
    async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome {
        crate::stage::aggregate::handle(ctx, delivery).await
    }
}

#[cfg(feature = "style")]
#[async_trait]
impl Handler for crate::stage::style::StyleStage {
    async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome {
        crate::stage::style::StyleStage::handle(self, ctx, delivery).await
    }
}

/// How a consume loop runs.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The queue to consume.
    pub queue: String,
    /// How long the delivery in hand may run on after shutdown before it is abandoned.
    pub grace: Duration,
    /// How long one receive call waits for a message.
    pub wait: Duration,
    /// Stop after this many deliveries (tests, one-shot runs).
    pub max_deliveries: Option<u64>,
    /// Stop when the queue has been empty this long.
    pub exit_when_idle: Option<Duration>,
    /// Deliveries handled at once (at least one).
    pub in_flight: usize,
}

impl ConsumeOptions {
    /// Defaults for `queue`: 30 s grace, 1 s receive wait, one delivery at a time, run until
    /// shut down.
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            grace: Duration::from_secs(30),
            wait: Duration::from_secs(1),
            max_deliveries: None,
            exit_when_idle: None,
            in_flight: 1,
        }
    }
}

/// What a consume loop did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Deliveries completed.
    pub completed: u64,
    /// Deliveries released for a retry (failures and drains).
    pub abandoned: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
    /// Deliveries whose lock was lost before they were settled: the work was dropped (or its
    /// result could not be settled), and another delivery of the message redoes it.
    pub lost: u64,
}

impl ConsumeReport {
    /// Deliveries handled, however they ended.
    pub fn handled(&self) -> u64 {
        self.completed + self.abandoned + self.dead_lettered + self.lost
    }

    fn count(&mut self, ended: Counted) {
        match ended {
            Counted::Completed => self.completed += 1,
            Counted::Abandoned => self.abandoned += 1,
            Counted::DeadLettered => self.dead_lettered += 1,
            Counted::Lost => self.lost += 1,
        }
    }
}

/// Which count of the report a handled delivery goes to.
#[derive(Clone, Copy)]
enum Counted {
    Completed,
    Abandoned,
    DeadLettered,
    Lost,
}

/// Runs the loop until `shutdown` is cancelled (or an exit condition in `options` is met), and
/// until every delivery in hand is settled. While it runs, its presence record says that the
/// queue has a consumer (see [`crate::presence`]).
pub async fn consume<H: Handler>(
    ctx: &Context,
    handler: &H,
    options: &ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, QueueError> {
    let presence = crate::presence::announce(&ctx.logs, &ctx.worker_name, &options.queue);
    let result = consume_until_stopped(ctx, handler, options, shutdown).await;
    presence.withdraw().await;
    result
}

async fn consume_until_stopped<H: Handler>(
    ctx: &Context,
    handler: &H,
    options: &ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, QueueError> {
    let in_flight = options.in_flight.max(1);
    let mut report = ConsumeReport::default();
    let mut idle_since = tokio::time::Instant::now();
    let mut receive_failures = 0u32;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut running = FuturesUnordered::new();
    // A receive is never dropped half-way: it may already have locked a message that nobody
    // would then hold until the lock expired. It ends within `wait`, and what it brings after the
    // shutdown is released.
    let mut receiving: Option<Pin<Box<dyn Future<Output = Received> + Send + '_>>> = None;
    loop {
        let stopping = shutdown.is_cancelled()
            || options
                .max_deliveries
                .is_some_and(|m| report.handled() + running.len() as u64 >= m);
        let idle = running.is_empty()
            && options
                .exit_when_idle
                .is_some_and(|idle| idle_since.elapsed() >= idle);
        if receiving.is_none() {
            if (stopping || idle) && running.is_empty() {
                return Ok(report);
            }
            let backing_off = retry_at.is_some_and(|at| tokio::time::Instant::now() < at);
            if !stopping && !idle && !backing_off && running.len() < in_flight {
                let queue = Arc::clone(&ctx.queue);
                let name = options.queue.clone();
                let wait = options.wait;
                receiving = Some(Box::pin(async move { queue.receive(&name, 1, wait).await }));
            }
        }
        tokio::select! {
            Some(ended) = running.next(), if !running.is_empty() => {
                report.count(ended);
                idle_since = tokio::time::Instant::now();
            }
            received = async {
                match receiving.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            }, if receiving.is_some() => {
                receiving = None;
                let deliveries = match received {
                    Ok(d) => {
                        receive_failures = 0;
                        d
                    }
                    Err(e) if e.is_transient() => {
                        receive_failures += 1;
                        let delay = ctx.settings.retry.delay(receive_failures);
                        tracing::warn!(queue = %options.queue, error = %e, ?delay, "receive failed; backing off");
                        retry_at = Some(tokio::time::Instant::now() + delay);
                        continue;
                    }
                    Err(e) => {
                        // Settle what is in hand before giving up.
                        while let Some(ended) = running.next().await {
                            report.count(ended);
                        }
                        return Err(e);
                    }
                };
                for delivery in deliveries {
                    if shutdown.is_cancelled() {
                        report.abandoned += 1;
                        if let Err(e) = ctx.queue.abandon(&delivery, None).await {
                            tracing::warn!(id = %delivery.id, error = %e, "could not release the delivery");
                        }
                        continue;
                    }
                    idle_since = tokio::time::Instant::now();
                    running.push(process_one(ctx, handler, options, &shutdown, delivery));
                }
            }
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            () = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if retry_at.is_some() && receiving.is_none() => {
                retry_at = None;
            }
            else => {}
        }
    }
}

/// Handles one delivery received outside [`consume`] (a caller that picks which deliveries to
/// work on) exactly as the loop would: under its renewed lock, settled by the handler's outcome,
/// released after `options.grace` once `shutdown` is cancelled. Says how it ended.
pub async fn consume_one<H: Handler>(
    ctx: &Context,
    handler: &H,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    delivery: Delivery,
) -> ConsumeReport {
    let mut report = ConsumeReport::default();
    report.count(process_one(ctx, handler, options, shutdown, delivery).await);
    report
}

/// What one receive brought.
type Received = Result<Vec<Delivery>, QueueError>;

/// How the work on a delivery ended.
enum Ended {
    /// The handler finished with this outcome.
    Handled(Outcome),
    /// The lock was lost first.
    LockLost,
    /// Shutting down, and the grace period ran out first.
    Drained,
}

/// Handles one delivery under its renewed lock and settles it, in a span of its own (see
/// [`crate::telemetry`]); says how it ended, and counts it in the metrics.
async fn process_one<H: Handler>(
    ctx: &Context,
    handler: &H,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    delivery: Delivery,
) -> Counted {
    let (job, batch) = match crate::inspect::job_of_message(&delivery.body) {
        Some((job, batch)) => (Some(job.to_string()), batch),
        None => (None, None),
    };
    let span = tracing::info_span!(
        "delivery",
        otel.name = %format!("{} process", options.queue),
        otel.kind = "consumer",
        messaging.destination.name = %options.queue,
        messaging.message.id = %delivery.id,
        // Signed: the span layer exports unsigned values as text.
        messaging.delivery_count = i64::from(delivery.delivery_count),
        stylefleet.job = job.as_deref(),
        stylefleet.batch = batch.map(i64::from),
        stylefleet.outcome = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let settled = settle_one(ctx, handler, options, shutdown, &delivery)
        .instrument(span.clone())
        .await;
    span.record("stylefleet.outcome", settled.outcome);
    let stage = match options.queue.as_str() {
        BATCHES => Some("batch"),
        STITCH => Some("stitch"),
        _ => None,
    };
    if options.queue == BATCHES {
        crate::telemetry::metrics::batch(settled.outcome, started.elapsed().as_secs_f64());
    }
    if let (Some(stage), Some(reason)) = (stage, &settled.failure) {
        crate::telemetry::metrics::failure(stage, reason);
    }
    settled.counted
}

/// How a delivery was settled: the report's count, the outcome's name for the span and the
/// metrics, and the failure to count, if any.
struct Settled {
    counted: Counted,
    /// `completed`, `retried`, `dead_lettered`, `released`, `drained` or `lost`.
    outcome: &'static str,
    /// `transient`, a dead-letter reason, or `LockLost`.
    failure: Option<String>,
}

/// [`process_one`]'s work: handles the delivery under its renewed lock and settles it; says how
/// it ended.
async fn settle_one<H: Handler>(
    ctx: &Context,
    handler: &H,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    delivery: &Delivery,
) -> Settled {
    let lock_lost = || Settled {
        counted: Counted::Lost,
        outcome: "lost",
        failure: Some("LockLost".to_owned()),
    };
    tracing::debug!(queue = %options.queue, id = %delivery.id, count = delivery.delivery_count, "received");
    let renewal = Arc::clone(&ctx.queue).keep_locked(delivery);
    let lost = renewal.lost();
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(options.grace).await;
    };
    // Leaving the select drops the handler's future unless it finished: that cancels its work.
    // The handler goes first so that work that is done is settled.
    let ended = tokio::select! {
        biased;
        outcome = handler.handle(ctx, delivery) => Ended::Handled(outcome),
        () = lost.cancelled() => Ended::LockLost,
        () = drained => Ended::Drained,
    };
    // Renewal ends before settling, so that the two never overlap.
    let renewed = renewal.stop().await;
    let (counted, outcome, failure, settled) = match ended {
        Ended::LockLost => {
            let error = renewed.err();
            tracing::warn!(
                queue = %options.queue,
                id = %delivery.id,
                count = delivery.delivery_count,
                error = error.as_ref().map(tracing::field::display),
                "the lock was lost: abandoned the work, which a redelivery redoes"
            );
            return lock_lost();
        }
        Ended::Handled(Outcome::Complete) => (
            Counted::Completed,
            "completed",
            None,
            ctx.queue.complete(delivery).await,
        ),
        Ended::Handled(Outcome::Retry { reason, delay }) => {
            tracing::warn!(id = %delivery.id, %reason, ?delay, "retrying later");
            (
                Counted::Abandoned,
                "retried",
                Some("transient".to_owned()),
                ctx.queue.abandon(delivery, Some(delay)).await,
            )
        }
        Ended::Handled(Outcome::DeadLetter {
            reason,
            description,
        }) => {
            tracing::error!(id = %delivery.id, %reason, %description, "dead-lettered");
            let result = ctx.queue.dead_letter(delivery, &reason, &description).await;
            (Counted::DeadLettered, "dead_lettered", Some(reason), result)
        }
        Ended::Handled(Outcome::Release { reason }) => {
            tracing::info!(id = %delivery.id, %reason, "released");
            (
                Counted::Abandoned,
                "released",
                None,
                ctx.queue.abandon(delivery, None).await,
            )
        }
        Ended::Drained => {
            tracing::warn!(id = %delivery.id, grace = ?options.grace, "shutting down: releasing the unfinished delivery");
            (
                Counted::Abandoned,
                "drained",
                None,
                ctx.queue.abandon(delivery, None).await,
            )
        }
    };
    match settled {
        Err(error @ QueueError::LockLost { .. }) => {
            // The lock ran out as the work ended: someone else may redo it, which is harmless.
            tracing::warn!(id = %delivery.id, %error, "the lock was lost before the delivery was settled");
            return lock_lost();
        }
        Err(error) => {
            tracing::warn!(id = %delivery.id, %error, "could not settle the delivery");
        }
        Ok(()) => {}
    }
    Settled {
        counted,
        outcome,
        failure,
    }
}
