//! The entrypoint, in one of two modes:
//!
//! - `stylefleet-functions` (or `stylefleet-functions handler`): the custom handler the Functions
//!   host starts: the HTTP server on `FUNCTIONS_CUSTOMHANDLER_PORT` until SIGTERM or Ctrl-C.
//! - `stylefleet-functions aggregate`: the `stitch` queue consumer of the aggregator container
//!   (see [`stylefleet_functions::aggregator`] for why it is not a function), with a health endpoint
//!   on `STYLEFLEET_HEALTH_PORT` (flags or environment: `aggregate --help`); the first SIGTERM
//!   drains, the second exits at once.
//!
//! Both read the same environment configuration through [`stylefleet::setup`].

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use stylefleet::lifecycle;
use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet::telemetry::Service;
use stylefleet_functions::aggregator::{self, AggregatorConfig};
use stylefleet_functions::health::Health;
use stylefleet_functions::server::{self, App};

/// The port when the host names none (a local run without the host).
const DEFAULT_PORT: u16 = 7071;

/// The Azure Functions app of stylefleet. Configuration comes from the environment (see
/// functions/README.md).
#[derive(Debug, Parser)]
#[command(name = "stylefleet-functions", version)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// What this process runs.
#[derive(Debug, Subcommand)]
enum Mode {
    /// The Azure Functions custom handler (splitter); the default.
    Handler,
    /// Consume the stitch queue (the aggregator container).
    Aggregate(AggregatorConfig),
}

fn main() -> ExitCode {
    let cli: Cli = lifecycle::parse_args();
    let json = lifecycle::json_logs_from_env();
    match cli.mode.unwrap_or(Mode::Handler) {
        Mode::Handler => lifecycle::main(Service::FUNCTIONS, json, handler()),
        Mode::Aggregate(config) => lifecycle::main(Service::AGGREGATOR, json, aggregate(config)),
    }
}

/// Where data and work live, from the environment. Without a data folder, scratch goes to the
/// temporary folder: the app folder is read-only on Flex Consumption.
fn location() -> Location {
    let mut location = Location::from_env();
    if location.scratch.is_none() && std::env::var_os("STYLEFLEET_DATA").is_none() {
        location.scratch = Some(std::env::temp_dir().join("stylefleet-functions"));
    }
    location
}

async fn handler() -> anyhow::Result<ExitCode> {
    // Signals first: a SIGTERM during start-up must not kill the process uncleanly.
    let shutdown = lifecycle::shutdown_on_signals("the invocations in hand")?;
    let port = match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Ok(p) => p
            .parse::<u16>()
            .with_context(|| format!("FUNCTIONS_CUSTOMHANDLER_PORT={p:?}"))?,
        Err(_) => DEFAULT_PORT,
    };
    let settings = setup::settings_from_env(Settings::default())?;
    // Every split probes the upload.
    prepare_tools(&location())?;
    check_tool("ffprobe").await?;
    let ctx = setup::context(&location(), settings).await?;
    let app = App::new(ctx);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    tracing::info!(
        port = listener.local_addr()?.port(),
        store = app.ctx.store.spec(),
        layout = ?app.layout,
        "stylefleet-functions ready"
    );
    server::serve(listener, Arc::new(app), shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn aggregate(config: AggregatorConfig) -> anyhow::Result<ExitCode> {
    let shutdown = lifecycle::shutdown_on_signals("the stitch in hand")?;
    // Stitching runs ffmpeg; verifying the output runs ffprobe.
    prepare_tools(&location())?;
    check_tool("ffmpeg").await?;
    check_tool("ffprobe").await?;
    let location = location();
    let ctx = setup::context(&location, Settings::default()).await?;
    tracing::info!(
        store = ctx.store.spec(),
        queue = %location.queue_spec(),
        aggregator = %ctx.worker_name,
        "starting the aggregator"
    );
    // Probes come from outside the container: listen on every interface.
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.health_port));
    aggregator::run(&ctx, &config, Health::new(), addr, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the packaged ffmpeg and ffprobe from runnable copies in the scratch folder when the
/// package left them without the execute bit (a Flex Consumption zip is mounted read-only, and
/// the host sets the bit only on this handler).
fn prepare_tools(location: &Location) -> anyhow::Result<()> {
    let dir = location.scratch_dir().join("tools");
    let copied = stylefleet::media::runnable_tools(&dir)
        .with_context(|| format!("copying ffmpeg and ffprobe to {}", dir.display()))?;
    if let Some(dir) = copied {
        tracing::info!(
            dir = %dir.display(),
            "the packaged ffmpeg and ffprobe are not executable; running copies"
        );
    }
    Ok(())
}

/// Fails at start, with where it looked, when `tool` (ffmpeg or ffprobe) cannot run. The stages
/// run them from beside this executable when they are there (or from runnable copies of those,
/// see [`prepare_tools`]), else from `PATH`.
async fn check_tool(tool: &str) -> anyhow::Result<()> {
    let program = stylefleet::media::tool_path(tool);
    let status = tokio::process::Command::new(&program)
        .args(["-hide_banner", "-version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| {
            format!(
                "cannot run {}: put static ffmpeg and ffprobe beside this executable or on PATH",
                program.display()
            )
        })?;
    anyhow::ensure!(
        status.success(),
        "{} -version failed: {status}",
        program.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_mode_is_the_handler_and_aggregate_takes_the_service_flags() {
        let cli: Cli = lifecycle::parse_from(["stylefleet-functions"]).unwrap();
        assert!(cli.mode.is_none());
        let cli: Cli =
            lifecycle::parse_from(["stylefleet-functions", "aggregate", "--grace", "5"]).unwrap();
        match cli.mode {
            Some(Mode::Aggregate(config)) => {
                assert_eq!(config.grace, std::time::Duration::from_secs(5))
            }
            other => panic!("{other:?}"),
        }
        assert!(lifecycle::parse_from::<Cli>(["stylefleet-functions", "split"]).is_err());
    }
}
