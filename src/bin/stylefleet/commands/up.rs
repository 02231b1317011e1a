//! `stylefleet up`: the embedded fleet (watcher, autoscaled workers, aggregator) until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use stylefleet::fleet::autoscale::ScaleRule;
use stylefleet::fleet::ui::{self, UiOptions};
use stylefleet::fleet::{self, FleetOptions, WorkerCount};
use stylefleet::lifecycle::{parse_seconds, shutdown_on_signals};
use stylefleet::terminal;

use crate::args::{Location, LogFormat, Planning, at_least_one};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    planning: Planning,
    /// Most worker processes; a new job's batches are cut into whole rounds of them.
    #[arg(long, default_value_t = 2, value_parser = at_least_one())]
    max_workers: usize,
    /// Queued batches per worker (KEDA `messageCount`).
    #[arg(long, default_value_t = 2)]
    messages_per_worker: u64,
    /// Seconds a lower desire must hold before workers are stopped.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    cooldown: Duration,
    /// Seconds between looks at the input folder and the queue.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    poll: Duration,
    /// Seconds an upload must stay unchanged to count as completely written.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    settle: Duration,
    /// Seconds a worker may finish its batch after being asked to stop.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    grace: Duration,
    /// Serve a live web page of the fleet at this address (`127.0.0.1:8080`, `localhost:8080`):
    /// jobs, frames, failures, dead letters with replay, workers.
    #[arg(long, value_name = "ADDR", value_parser = parse_ui_addr)]
    ui: Option<SocketAddr>,
    /// Let `--ui` listen on an address other than loopback: anyone who reaches it can replay
    /// dead letters.
    #[arg(long, requires = "ui")]
    ui_public: bool,
}

/// An address for `--ui`: `IP:PORT`, or `localhost:PORT` for the IPv4 loopback.
fn parse_ui_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an address such as 127.0.0.1:8080"))
}

pub async fn run(args: UpArgs, log_format: LogFormat, quiet: bool) -> anyhow::Result<ExitCode> {
    let ui_options = args.ui.map(|addr| UiOptions {
        addr,
        public: args.ui_public,
    });
    if let Some(options) = &ui_options {
        ui::check_addr(options)?;
    }
    let mut ctx = super::context(&args.location, Some(&args.planning)).await?;
    // New jobs are cut into whole rounds of the fleet at its largest.
    ctx.settings.plan_workers = u32::try_from(args.max_workers).unwrap_or(u32::MAX);
    let options = FleetOptions {
        scale: ScaleRule {
            max_workers: args.max_workers,
            messages_per_worker: args.messages_per_worker,
            activation: 0,
            cooldown: args.cooldown,
        },
        worker: super::worker_command(&args.location, args.max_workers, log_format)?,
        poll: args.poll,
        settle: args.settle,
        grace: args.grace,
    };
    let shutdown = shutdown_on_signals("the work in hand")?;
    let (worker_count, watched) = tokio::sync::watch::channel(WorkerCount::default());
    let page = match &ui_options {
        Some(ui_options) => {
            let page = ui::start(ctx.clone(), ui_options, watched, shutdown.clone()).await?;
            tracing::info!(url = %page.url(), "web page up");
            if !quiet {
                terminal::eprint_line(&format!("web page at {}", page.url()));
            }
            Some(page)
        }
        None => None,
    };
    let input = match ctx.store.local_path("input") {
        Some(local) => {
            create_drop_folders(&local)?;
            local
        }
        None => PathBuf::from("input"),
    };
    if !quiet {
        terminal::eprint_line(&format!(
            "watching {}/<style>/ ; outputs go to output/<style>/ ; Ctrl-C drains and stops",
            input.display()
        ));
    }
    fleet::run(&ctx, &options, shutdown, &worker_count).await;
    if let Some(page) = page {
        page.stopped().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `input/` and one folder in it per built-in style, so that a new data folder is ready
/// for `cp clip.mp4 <data>/input/starry-blue/` (folders for blends and indices are made by the
/// user as needed; the watcher takes any of them).
fn create_drop_folders(input: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(input).with_context(|| format!("creating {}", input.display()))?;
    #[cfg(feature = "style")]
    for style in stylefleet_models::styles() {
        let folder = input.join(style.name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    Ok(())
}
