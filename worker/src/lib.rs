//! stylefleet-worker: the container entrypoint of a style worker. It reads its configuration from
//! the environment, picks the device and warms the model up on a tiny frame before taking work,
//! consumes the `batches` queue (the consume loop renews each batch's lock while it is styled),
//! serves a health endpoint, and on shutdown stops receiving and finishes or releases the batch in
//! hand within the grace period, so that scaling in never loses work.
//!
//! # Layout
//!
//! - [`config`]: the flags, or the environment the container gets.
//! - [`health`]: the `/healthz` snapshot and its server.
//! - [`run`]: the worker's life, from device to drained; the binary maps signals to its token.

pub mod config;
pub mod health;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use candle_core::Device;
use tokio_util::sync::CancellationToken;

use stylefleet::consume::{ConsumeOptions, ConsumeReport, Handler, consume};
use stylefleet::queue::{BATCHES, Delivery, QueueError};
use stylefleet::stage::style::StyleStage;
use stylefleet::stage::{Context, Outcome};
use stylefleet_models::{Frame, ModelError, StyleOptions, StyleSpec, Stylizer};

use config::{DeviceChoice, WorkerConfig};
use health::{Health, WorkerState};

/// Why a worker stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No usable device.
    #[error("device: {0}")]
    Device(String),
    /// The model does not run on the device.
    #[error("warming up the model on {device}: {source}")]
    WarmUp {
        /// The device.
        device: String,
        /// The cause.
        #[source]
        source: ModelError,
    },
    /// The warm-up task stopped.
    #[error("the warm-up task stopped: {0}")]
    Task(#[source] tokio::task::JoinError),
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

/// Picks the device `choice` asks for.
pub fn select_device(choice: DeviceChoice) -> Result<Device, WorkerError> {
    choice
        .select()
        .map_err(|e| WorkerError::Device(e.to_string()))
}

/// The device in words, for logs and `/healthz`.
pub fn describe(device: &Device) -> String {
    if device.is_cuda() {
        "cuda:0".into()
    } else if device.is_metal() {
        "metal:0".into()
    } else {
        "cpu".into()
    }
}

/// Loads the built-in network on `device` and styles one tiny frame, so that device
/// initialisation (a CUDA context, kernel loading) and any weight problem show before the worker
/// takes a batch, not under a lock. Blocking.
pub fn warm_up(device: &Device) -> Result<(), WorkerError> {
    let failed = |source| WorkerError::WarmUp {
        device: describe(device),
        source,
    };
    let spec: StyleSpec = "0".parse().map_err(failed)?;
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), device).map_err(failed)?;
    let side = 16;
    let frame = Frame {
        width: side,
        height: side,
        data: vec![128; Frame::byte_len(side, side)],
    };
    let styled = stylizer.style_batch(&[frame]).map_err(failed)?;
    if styled.len() != 1 {
        return Err(WorkerError::Device(format!(
            "the warm-up returned {} frames instead of 1",
            styled.len()
        )));
    }
    Ok(())
}

/// A handler that keeps the health record up to date around another one.
#[derive(Debug)]
pub struct Tracked<H> {
    /// The handler doing the work.
    pub inner: H,
    /// Where its progress shows.
    pub health: Health,
}

#[async_trait]
impl<H: Handler> Handler for Tracked<H> {
    async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome {
        self.health.begin(&delivery.id);
        let outcome = self.inner.handle(ctx, delivery).await;
        self.health.end(&delivery.id, &outcome);
        outcome
    }
}

/// Runs a worker until `shutdown` is cancelled (or it has been idle for
/// `config.service.exit_when_idle`): device, warm-up, health endpoint on `health_addr`, then the consume
/// loop on `batches`. After `shutdown` the batch in hand gets `config.service.grace` to finish before it
/// is abandoned for another worker.
pub async fn run(
    ctx: &Context,
    config: &WorkerConfig,
    health: Health,
    health_addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, WorkerError> {
    let device = select_device(config.hardware.device)?;
    stylefleet::setup::sweep_leftovers(ctx, &[]).await;
    stylefleet::media::codec::announce(config.hardware.codec).await;
    health.set_device(describe(&device));
    tracing::info!(device = %describe(&device), "warming up the model");
    let warm = {
        let device = device.clone();
        tokio::task::spawn_blocking(move || warm_up(&device))
    };
    tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("stopped before taking work");
            health.set_state(WorkerState::Stopped);
            return Ok(ConsumeReport::default());
        }
        warmed = warm => {
            if let Err(e) = warmed.map_err(WorkerError::Task).and_then(|r| r) {
                health.set_error(e.to_string());
                return Err(e);
            }
        }
    }

    let listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|source| WorkerError::Health {
            addr: health_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(health_addr);
    // The endpoint lives as long as the process: it also answers while draining.
    tokio::spawn(health::serve(listener, health.clone()));
    health.set_state(WorkerState::Ready);
    tracing::info!(health = %bound, grace = ?config.service.grace, "ready: taking batches");

    let draining = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.set_state(WorkerState::Draining);
            tracing::info!("stopping: no more batches; finishing the one in hand");
        })
    };
    let options = ConsumeOptions {
        grace: config.service.grace,
        exit_when_idle: config.service.exit_when_idle,
        wait: Duration::from_secs(1),
        in_flight: stylefleet::stage::style::in_flight(),
        ..ConsumeOptions::new(BATCHES)
    };
    let handler = Tracked {
        inner: StyleStage::new(device).stopping_with(shutdown.clone()),
        health: health.clone(),
    };
    let report = consume(ctx, &handler, &options, shutdown).await;
    draining.abort();
    health.set_state(WorkerState::Stopped);
    let report = report?;
    tracing::info!(
        completed = report.completed,
        abandoned = report.abandoned,
        dead_lettered = report.dead_lettered,
        lost = report.lost,
        "worker stopped"
    );
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_warms_up() {
        let device = select_device(DeviceChoice::Cpu).unwrap();
        assert_eq!(describe(&device), "cpu");
        warm_up(&device).unwrap();
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_cuda_is_refused() {
        let err = select_device(DeviceChoice::Cuda).unwrap_err();
        assert!(err.to_string().contains("no GPU"), "{err}");
    }
}
