//! `stylefleet worker`: one worker styling batches from the queue until stopped.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;

use stylefleet::consume::ConsumeOptions;
use stylefleet::lifecycle::{parse_seconds, shutdown_on_signals};
use stylefleet::queue::BATCHES;
use stylefleet::settings::{DeviceChoice, WorkerHardware};
use stylefleet::stage::Context;

use crate::args::Location;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    location: Location,
    /// Exit after this many idle seconds.
    #[arg(long, value_parser = parse_seconds)]
    exit_when_idle: Option<Duration>,
    /// Seconds to finish the batch in hand after SIGTERM before releasing it.
    #[arg(long, default_value = "30", env = "STYLEFLEET_SHUTDOWN_GRACE_SECS", value_parser = parse_seconds)]
    grace: Duration,
    /// The device and the chunk encoder.
    #[command(flatten)]
    hardware: WorkerHardware,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals("the work in hand")?;
    // A supervised worker drains and exits with its supervisor instead of running on as an
    // orphan. The parent-death signal is SIGHUP, which only drains: the kernel sends it again
    // for every thread of the dying supervisor that the worker passes through on its way to
    // init, and a repeated SIGTERM would abort with the batch in hand still locked.
    if let Ok(parent) = std::env::var("STYLEFLEET_PARENT_PID") {
        drain_on_hangup(shutdown.clone())?;
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP);
        if nix::unistd::getppid().as_raw().to_string() != parent {
            bail!("the supervisor is gone");
        }
    }
    let ctx = super::context(&args.location, None).await?;
    stylefleet::media::codec::announce(args.hardware.codec).await;
    let options = ConsumeOptions {
        grace: args.grace,
        exit_when_idle: args.exit_when_idle,
        ..ConsumeOptions::new(BATCHES)
    };
    run_worker(&ctx, &options, args.hardware.device, shutdown).await
}

/// Cancels `token` on SIGHUP, however many arrive.
fn drain_on_hangup(token: CancellationToken) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if !token.is_cancelled() {
                tracing::info!("the supervisor is gone: finishing the work in hand");
                token.cancel();
            }
        }
    });
    Ok(())
}

#[cfg(feature = "style")]
async fn run_worker(
    ctx: &Context,
    options: &ConsumeOptions,
    device: DeviceChoice,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let device = device.select().context("--device")?;
    let stage = stylefleet::stage::style::StyleStage::new(device).stopping_with(shutdown.clone());
    let options = ConsumeOptions {
        in_flight: stylefleet::stage::style::in_flight(),
        ..options.clone()
    };
    let report = stylefleet::consume::consume(ctx, &stage, &options, shutdown).await?;
    tracing::info!(
        done = report.completed,
        released = report.abandoned,
        dead_lettered = report.dead_lettered,
        lost = report.lost,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "style"))]
async fn run_worker(
    _: &Context,
    _: &ConsumeOptions,
    _: DeviceChoice,
    _: CancellationToken,
) -> anyhow::Result<ExitCode> {
    bail!("this build has no style stage (built without the `style` feature)")
}
