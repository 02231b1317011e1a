//! The aggregator on Azure: `stylefleet-functions aggregate`, a consumer of the `stitch` queue
//! that runs the shared consume loop ([`stylefleet::consume`]) with the stitch stage, in a CPU
//! container (infra `aggregator.bicep`) that KEDA scales on the queue from zero.
//!
//! Why not a function. A Functions custom handler never holds the message: the host completes it
//! on a 2xx answer and abandons it otherwise, and has no answer for "dead-letter this, because".
//! A stitch that can never succeed then either loops until Service Bus gives up (dead-lettered as
//! `MaxDeliveryCountExceeded`, the real reason lost, after ten stitch attempts) or is answered 2xx
//! and completed (nothing left for `stylefleet dlq replay` to revive). The consume loop settles the
//! message itself, as the workers do: a permanent failure is dead-lettered on its first delivery
//! with the stage's reason and description (the job turns `failed` with the same reason), a
//! transient one is abandoned with backoff until the last allowed delivery, the lock is renewed
//! while the stitch runs, and SIGTERM drains. A replay of the dead letter then revives the job.
//!
//! The mode lives in the Functions crate because that crate already links the pipeline without
//! Candle: the aggregator needs ffmpeg, the stores and the queue, not the style networks.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use stylefleet::consume::{ConsumeOptions, ConsumeReport, Handler, StitchHandler, consume};
use stylefleet::queue::{Delivery, QueueError, STITCH};
use stylefleet::stage::{Context, Outcome};

use crate::health::{self, Health, Phase};

/// What the aggregator takes besides the location ([`stylefleet::setup::Location::from_env`]) and
/// the queue settings ([`stylefleet::setup::queue_config_from_env`]: `STYLEFLEET_MAX_DELIVERIES` is
/// the `stitch` queue's max delivery count, at whose last attempt a transient failure fails the
/// job): the health port and the shutdown timings, as flags of `aggregate` or from the
/// environment.
pub type AggregatorConfig = stylefleet::lifecycle::ServiceArgs;

/// Why the aggregator stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The health endpoint cannot listen.
    #[error("the health endpoint cannot listen on {addr}: {source}")]
    Health {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The queue failed for good.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A handler that keeps the health record up to date around another one.
#[derive(Debug)]
pub struct Tracked<H> {
    /// The handler doing the work.
    pub inner: H,
    /// Where its progress shows.
    pub health: Health,
}

// The signature `#[async_trait]` gives the trait's method, written out: this crate does without
// the macro crate for one small impl.
impl<H: Handler> Handler for Tracked<H> {
    fn handle<'s, 'c, 'd, 'f>(
        &'s self,
        ctx: &'c Context,
        delivery: &'d Delivery,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'f>>
    where
        's: 'f,
        'c: 'f,
        'd: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.health.begin(&delivery.id);
            let outcome = self.inner.handle(ctx, delivery).await;
            self.health.end(&delivery.id, &outcome);
            outcome
        })
    }
}

/// Runs the aggregator until `shutdown` is cancelled (or it has been idle for
/// `config.exit_when_idle`): the health endpoint on `health_addr`, then the consume loop on
/// `stitch`. After `shutdown` the stitch in hand gets `config.grace` to finish before it is
/// abandoned for another replica.
pub async fn run(
    ctx: &Context,
    config: &AggregatorConfig,
    health: Health,
    health_addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, AggregatorError> {
    let listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|source| AggregatorError::Health {
            addr: health_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(health_addr);
    // The endpoint lives as long as the process: it also answers while draining.
    tokio::spawn(health::serve(listener, health.clone()));
    stylefleet::setup::sweep_leftovers(ctx, stylefleet::setup::AGGREGATOR_UPLOADS).await;
    health.set_state(Phase::Ready);
    tracing::info!(
        health = %bound,
        grace = ?config.grace,
        max_deliveries = ctx.max_delivery_count,
        "ready: taking stitch messages"
    );

    let draining = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.set_state(Phase::Draining);
            tracing::info!("stopping: no more stitch messages; finishing the one in hand");
        })
    };
    let options = ConsumeOptions {
        grace: config.grace,
        exit_when_idle: config.exit_when_idle,
        ..ConsumeOptions::new(STITCH)
    };
    let handler = Tracked {
        inner: StitchHandler,
        health: health.clone(),
    };
    let report = consume(ctx, &handler, &options, shutdown).await;
    draining.abort();
    health.set_state(Phase::Stopped);
    let report = report?;
    tracing::info!(
        completed = report.completed,
        abandoned = report.abandoned,
        dead_lettered = report.dead_lettered,
        "aggregator stopped"
    );
    Ok(report)
}
