//! The worker container's entrypoint: configuration from flags or the environment, logs to stderr (JSON
//! when `STYLEFLEET_LOG_FORMAT=json`), signals mapped to the shutdown token: the first SIGTERM
//! (or Ctrl-C) drains, the second exits at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use stylefleet::lifecycle;
use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet::telemetry::Service;
use stylefleet_worker::config::WorkerConfig;
use stylefleet_worker::health::Health;

fn main() -> ExitCode {
    let config: WorkerConfig = lifecycle::parse_args();
    lifecycle::main(
        Service::WORKER,
        lifecycle::json_logs_from_env(),
        run(config),
    )
}

async fn run(config: WorkerConfig) -> anyhow::Result<ExitCode> {
    // Signals first: a SIGTERM during start-up must not kill the process uncleanly.
    let shutdown = lifecycle::shutdown_on_signals("the batch in hand")?;
    let location = Location::from_env();
    let ctx = setup::context(&location, Settings::default()).await?;
    tracing::info!(
        store = ctx.store.spec(),
        queue = %location.queue_spec(),
        worker = %ctx.worker_name,
        "starting"
    );
    let health = Health::new("?");
    // Probes come from outside the container: listen on every interface.
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.service.health_port));
    stylefleet_worker::run(&ctx, &config, health, addr, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
