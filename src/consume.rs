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
//! its wait, and a message it brings is released at once); the delivery in hand gets
//! `grace` to finish, after which it is abandoned so another worker picks it up at once. Nothing is
//! lost either way: the message is completed only after its side effects.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::queue::{Delivery, QueueError, QueueExt};
use crate::stage::{Context, Outcome};

/// Something that handles one delivery.
#[async_trait]
pub trait Handler: Send {
    /// Does the work of one delivery and says how it ended.
    async fn handle(&mut self, ctx: &Context, delivery: &Delivery) -> Outcome;
}

/// The aggregator as a handler.
#[derive(Debug, Default)]
pub struct StitchHandler;

#[async_trait]
impl Handler for StitchHandler {
    async fn handle(&mut self, ctx: &Context, delivery: &Delivery) -> Outcome {
        crate::stage::aggregate::handle(ctx, delivery).await
    }
}

#[cfg(feature = "style")]
#[async_trait]
impl Handler for crate::stage::style::StyleStage {
    async fn handle(&mut self, ctx: &Context, delivery: &Delivery) -> Outcome {
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
}

impl ConsumeOptions {
    /// Defaults for `queue`: 30 s grace, 1 s receive wait, run until shut down.
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            grace: Duration::from_secs(30),
            wait: Duration::from_secs(1),
            max_deliveries: None,
            exit_when_idle: None,
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
}

/// Runs the loop until `shutdown` is cancelled (or an exit condition in `options` is met).
pub async fn consume<H: Handler>(
    ctx: &Context,
    handler: &mut H,
    options: &ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, QueueError> {
    let mut report = ConsumeReport::default();
    let mut idle_since = tokio::time::Instant::now();
    let mut receive_failures = 0u32;
    loop {
        if shutdown.is_cancelled()
            || options
                .max_deliveries
                .is_some_and(|m| report.handled() >= m)
        {
            return Ok(report);
        }
        if options
            .exit_when_idle
            .is_some_and(|idle| idle_since.elapsed() >= idle)
        {
            return Ok(report);
        }
        // Not raced against the shutdown: a receive dropped half-way may already have locked a
        // message that nobody would then hold until the lock expired. It ends within `wait`,
        // and what it brings after the shutdown is released below.
        let received = ctx.queue.receive(&options.queue, 1, options.wait).await;
        let deliveries = match received {
            Ok(d) => {
                receive_failures = 0;
                d
            }
            Err(e) if e.is_transient() => {
                receive_failures += 1;
                let delay = ctx.settings.retry.delay(receive_failures);
                tracing::warn!(queue = %options.queue, error = %e, ?delay, "receive failed; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(report),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
            Err(e) => return Err(e),
        };
        if deliveries.is_empty() {
            continue;
        }
        if shutdown.is_cancelled() {
            for delivery in &deliveries {
                report.abandoned += 1;
                if let Err(e) = ctx.queue.abandon(delivery, None).await {
                    tracing::warn!(id = %delivery.id, error = %e, "could not release the delivery");
                }
            }
            return Ok(report);
        }
        for delivery in deliveries {
            process_one(ctx, handler, options, &shutdown, &delivery, &mut report).await;
        }
        idle_since = tokio::time::Instant::now();
    }
}

/// How the work on a delivery ended.
enum Ended {
    /// The handler finished with this outcome.
    Handled(Outcome),
    /// The lock was lost first.
    LockLost,
    /// Shutting down, and the grace period ran out first.
    Drained,
}

/// Which count of the report a settled delivery goes to.
#[derive(Clone, Copy)]
enum Settled {
    Completed,
    Abandoned,
    DeadLettered,
}

async fn process_one<H: Handler>(
    ctx: &Context,
    handler: &mut H,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    delivery: &Delivery,
    report: &mut ConsumeReport,
) {
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
    let (counted, settled) = match ended {
        Ended::LockLost => {
            report.lost += 1;
            let error = renewed.err();
            tracing::warn!(
                queue = %options.queue,
                id = %delivery.id,
                count = delivery.delivery_count,
                error = error.as_ref().map(tracing::field::display),
                "the lock was lost: abandoned the work, which a redelivery redoes"
            );
            return;
        }
        Ended::Handled(Outcome::Complete) => {
            (Settled::Completed, ctx.queue.complete(delivery).await)
        }
        Ended::Handled(Outcome::Retry { reason, delay }) => {
            tracing::warn!(id = %delivery.id, %reason, ?delay, "retrying later");
            (
                Settled::Abandoned,
                ctx.queue.abandon(delivery, Some(delay)).await,
            )
        }
        Ended::Handled(Outcome::DeadLetter {
            reason,
            description,
        }) => {
            tracing::error!(id = %delivery.id, %reason, %description, "dead-lettered");
            (
                Settled::DeadLettered,
                ctx.queue.dead_letter(delivery, &reason, &description).await,
            )
        }
        Ended::Drained => {
            tracing::warn!(id = %delivery.id, grace = ?options.grace, "shutting down: releasing the unfinished delivery");
            (Settled::Abandoned, ctx.queue.abandon(delivery, None).await)
        }
    };
    match settled {
        Err(error @ QueueError::LockLost { .. }) => {
            // The lock ran out as the work ended: someone else may redo it, which is harmless.
            report.lost += 1;
            tracing::warn!(id = %delivery.id, %error, "the lock was lost before the delivery was settled");
            return;
        }
        Err(error) => {
            tracing::warn!(id = %delivery.id, %error, "could not settle the delivery");
        }
        Ok(()) => {}
    }
    match counted {
        Settled::Completed => report.completed += 1,
        Settled::Abandoned => report.abandoned += 1,
        Settled::DeadLettered => report.dead_lettered += 1,
    }
}
