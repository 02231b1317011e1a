//! The `stylefleet` command line: one video (`process`), the embedded fleet (`up`, `worker`),
//! inspection, repair and cleanup (`status`, `dlq`, `jobs rm`, `clean`), the models on single
//! images (`style-image`, `styles`), and its own completions and man pages (`completions`, `man`).
//!
//! # Layout
//!
//! - `main.rs`: the top-level parser and the list of subcommands.
//! - `args.rs`: arguments several subcommands share (location, planning, style).
//! - `commands/`: one module per subcommand, each with its own arguments and what it does;
//!   `commands/mod.rs` dispatches and builds what they share (the stage context, the worker
//!   command line); `commands/sheet.rs` serves `styles --sheet` (tile sizes, a picture or a
//!   video frame), `commands/dry_run.rs` serves `process --dry-run`, `commands/docs.rs` the
//!   completions and man pages.

mod args;
mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use args::LogFormat;

/// Neural style transfer over every frame of a video, in parallel, frame-exact, with its audio.
#[derive(Debug, Parser)]
#[command(name = "stylefleet", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true, env = "STYLEFLEET_LOG_FORMAT")]
    log_format: LogFormat,
    /// Errors only: no progress bar, no informational lines (`RUST_LOG`, when set, still decides
    /// which logs show).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Style one video through the pipeline and write the result.
    Process(commands::process::ProcessArgs),
    /// Run the embedded fleet: watch `<data>/input/<style>/`, scale workers, stitch outputs.
    Up(commands::up::UpArgs),
    /// Run one worker: style batches from the queue until stopped.
    Worker(commands::worker::WorkerArgs),
    /// Jobs, newest first: state, progress, throughput and failure reasons; one job in full.
    Status(commands::status::StatusArgs),
    /// Manage jobs: `jobs rm JOB...` removes finished ones.
    Jobs {
        #[command(subcommand)]
        action: commands::clean::JobsAction,
    },
    /// Remove every finished job and its intermediate files (`--dry-run` to see what would go).
    Clean(commands::clean::CleanArgs),
    /// Inspect and repair the dead-letter queues.
    Dlq {
        #[command(subcommand)]
        action: commands::dlq::DlqAction,
    },
    /// Style one image.
    StyleImage(commands::images::StyleImageArgs),
    /// Mint a short-lived URL for an outside user to upload one video to `input/` or download one
    /// result from `output/` (a user delegation SAS on Azure; never an account key).
    Sas(commands::sas::SasArgs),
    /// List the built-in styles, or render all of them, labelled, on a picture or a frame of a
    /// video (`--sheet`).
    Styles(commands::images::StylesArgs),
    /// Print a shell completion script (e.g. `stylefleet completions bash`).
    Completions(commands::docs::CompletionsArgs),
    /// Print the man page, or write one per subcommand into a folder (`--dir`).
    Man(commands::docs::ManArgs),
}

fn main() -> ExitCode {
    let cli: Cli = stylefleet::lifecycle::parse_args();
    stylefleet::lifecycle::main_with(
        stylefleet::lifecycle::Logging {
            json: matches!(cli.log_format, LogFormat::Json),
            quiet: cli.quiet,
            service: stylefleet::telemetry::Service::CLI,
        },
        commands::run(cli.command, cli.log_format, cli.quiet),
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn counts_below_one_and_bad_seconds_are_refused() {
        for args in [
            &[
                "stylefleet",
                "process",
                "v.mp4",
                "-s",
                "0",
                "--workers",
                "0",
            ][..],
            &[
                "stylefleet",
                "process",
                "v.mp4",
                "-s",
                "0",
                "--batch-frames",
                "0",
            ],
            &["stylefleet", "up", "--max-workers", "0"],
            &["stylefleet", "up", "--max-active-jobs", "0"],
            &["stylefleet", "up", "--cooldown=-1"],
            &["stylefleet", "up", "--poll", "NaN"],
            &["stylefleet", "worker", "--device", "tpu"],
            &["stylefleet", "dlq", "list", "--older-than", "soon"],
        ] {
            let err = stylefleet::lifecycle::parse_from::<Cli>(args.iter().copied())
                .expect_err(&args.join(" "));
            // A value outside an enum is InvalidValue; one a parser refuses, ValueValidation.
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{args:?}: {err}"
            );
        }
    }
}
