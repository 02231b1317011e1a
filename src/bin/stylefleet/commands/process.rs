//! `stylefleet process`: one video through the pipeline, with a progress bar.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use stylefleet::fleet::process::{ProcessError, ProcessRequest, process};
use stylefleet::inspect::JobView;
use stylefleet::lifecycle::shutdown_on_signals;

use crate::args::{Location, LogFormat, Planning, StyleArgs, at_least_one};

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The video.
    input: PathBuf,
    /// The styled video (default: `<input stem>.styled.mp4` beside the input).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    style: StyleArgs,
    /// Worker processes.
    #[arg(long, default_value_t = 2, value_parser = at_least_one())]
    workers: usize,
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    planning: Planning,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: ProcessArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let ProcessArgs {
        input,
        output,
        style,
        workers,
        location,
        planning,
        quiet,
    } = args;
    let ctx = super::context(&location, Some(&planning)).await?;
    let output = output.unwrap_or_else(|| default_output(&input));
    let request = ProcessRequest {
        input,
        output: output.clone(),
        style: style.style,
        strength: style.strength,
        preserve_colour: style.preserve_colour,
        workers,
    };
    let mut worker = super::worker_command(&location, workers, log_format)?;
    // The progress bar is the interface here: workers only speak up about problems.
    if std::env::var_os("RUST_LOG").is_none() {
        worker.env.push(("RUST_LOG".into(), "warn".into()));
    }
    let bar = progress_bar(quiet);
    let shutdown = shutdown_on_signals("the work in hand")?;
    let result = process(&ctx, &request, worker, shutdown, |view| {
        show_progress(&bar, view)
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(view) => {
            println!("{}", output.display());
            let t = &view.timings;
            eprintln!(
                "job {} done: {} frames; split {:.1} s, style {:.1} s (all batches), stitch {:.1} s, total {:.1} s",
                view.job,
                view.frames_total,
                t.get("split").unwrap_or(&0.0),
                t.get("batches_style").unwrap_or(&0.0),
                t.get("stitch").unwrap_or(&0.0),
                t.get("total").unwrap_or(&0.0),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ProcessError::Failed { job, reason }) => {
            eprintln!("error: job {job} failed: {reason}");
            Ok(ExitCode::FAILURE)
        }
        Err(e @ ProcessError::Interrupted(_)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("video");
    input.with_file_name(format!("{stem}.styled.mp4"))
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, view: &JobView) {
    bar.set_length(view.frames_total);
    bar.set_position(view.frames_done);
    bar.set_message(format!(
        "{} ({}/{} batches)",
        view.state, view.batches_done, view.batches_total
    ));
}
