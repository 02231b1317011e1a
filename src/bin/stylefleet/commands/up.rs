//! `stylefleet up`: the embedded fleet (watcher, autoscaled workers, aggregator) until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use stylefleet::fleet::autoscale::ScaleRule;
use stylefleet::fleet::{self, FleetOptions};
use stylefleet::lifecycle::{parse_seconds, shutdown_on_signals};

use crate::args::{Location, LogFormat, Planning, at_least_one};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    planning: Planning,
    /// Most worker processes.
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
}

pub async fn run(args: UpArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&args.location, Some(&args.planning)).await?;
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
    let input = ctx
        .store
        .local_path("input")
        .unwrap_or_else(|| PathBuf::from("input/"));
    eprintln!(
        "watching {}/<style>/ ; outputs go to output/<style>/ ; Ctrl-C drains and stops",
        input.display()
    );
    fleet::run(&ctx, &options, shutdown_on_signals("the work in hand")?).await;
    Ok(ExitCode::SUCCESS)
}
