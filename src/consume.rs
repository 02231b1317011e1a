//! The consume loop shared by workers (queue `batches`) and the aggregator (queue `stitch`):
//! receive under a peek-lock, keep the lock renewed while the handler works, settle by the
//! handler's [`Outcome`], and drain on shutdown.
//!
//! Shutdown: when the token is cancelled the loop stops receiving (a receive under way ends within
//! its wait, and a message it brings is released at once); the delivery in hand gets
//! `grace` to finish, after which it is abandoned so another worker picks it up at once. Nothing is
//! lost either way: the message is completed only after its side effects.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::queue::{Delivery, QueueError};
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
                .is_some_and(|m| report.completed + report.abandoned + report.dead_lettered >= m)
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

async fn process_one<H: Handler>(
    ctx: &Context,
    handler: &mut H,
    options: &ConsumeOptions,
    shutdown: &CancellationToken,
    delivery: &Delivery,
    report: &mut ConsumeReport,
) {
    tracing::debug!(queue = %options.queue, id = %delivery.id, count = delivery.delivery_count, "received");
    let renewing = CancellationToken::new();
    let renewal = tokio::spawn(renew_until_cancelled(
        ctx.clone(),
        delivery.clone(),
        renewing.clone(),
    ));
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(options.grace).await;
    };
    let outcome = tokio::select! {
        outcome = handler.handle(ctx, delivery) => Some(outcome),
        _ = drained => None,
    };
    renewing.cancel();
    let _ = renewal.await;
    let settled = match outcome {
        Some(Outcome::Complete) => {
            report.completed += 1;
            ctx.queue.complete(delivery).await
        }
        Some(Outcome::Retry { reason, delay }) => {
            report.abandoned += 1;
            tracing::warn!(id = %delivery.id, %reason, ?delay, "retrying later");
            ctx.queue.abandon(delivery, Some(delay)).await
        }
        Some(Outcome::DeadLetter {
            reason,
            description,
        }) => {
            report.dead_lettered += 1;
            tracing::error!(id = %delivery.id, %reason, %description, "dead-lettered");
            ctx.queue.dead_letter(delivery, &reason, &description).await
        }
        None => {
            report.abandoned += 1;
            tracing::warn!(id = %delivery.id, grace = ?options.grace, "shutting down: releasing the unfinished delivery");
            ctx.queue.abandon(delivery, None).await
        }
    };
    if let Err(e) = settled {
        // A lost lock means someone else may redo the work; handlers are idempotent.
        tracing::warn!(id = %delivery.id, error = %e, "could not settle the delivery");
    }
}

/// Renews the delivery's lock at a third of its remaining time until cancelled.
async fn renew_until_cancelled(ctx: Context, delivery: Delivery, stop: CancellationToken) {
    let mut locked_until = delivery.locked_until;
    loop {
        let left = locked_until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let wait = (left / 3).max(Duration::from_millis(100));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match ctx.queue.renew_lock(&delivery).await {
            Ok(until) => locked_until = until,
            Err(e) => {
                tracing::warn!(id = %delivery.id, error = %e, "lock renewal failed");
                if matches!(e, QueueError::LockLost { .. }) {
                    return;
                }
            }
        }
    }
}
