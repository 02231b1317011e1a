//! The worker container's entrypoint: configuration from the environment, logs to stderr (JSON
//! when `STYLEFLEET_LOG_FORMAT=json`), signals mapped to the shutdown token: the first SIGTERM
//! (or Ctrl-C) drains, the second exits at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet_worker::config::WorkerConfig;
use stylefleet_worker::health::Health;

fn main() -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // Signals first: a SIGTERM during start-up must not kill the process uncleanly.
    let shutdown = shutdown_on_signals()?;
    let config = WorkerConfig::from_env()?;
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
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.health_port));
    stylefleet_worker::run(&ctx, &config, health, addr, shutdown).await?;
    Ok(())
}

/// A token cancelled by the first SIGTERM or Ctrl-C; the second exits at once (the batch in hand
/// is then redelivered when its lock expires).
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                cancel.cancel();
            } else {
                eprintln!("aborted: second signal");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("STYLEFLEET_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
