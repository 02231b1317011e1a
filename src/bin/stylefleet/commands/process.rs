//! `stylefleet process`: one video through the pipeline, with a progress bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use stylefleet::fleet::process::{ProcessError, ProcessRequest, check_request, process};
use stylefleet::inspect::JobView;
use stylefleet::lifecycle::shutdown_on_signals;
use stylefleet::terminal;

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
}

pub async fn run(args: ProcessArgs, log_format: LogFormat, quiet: bool) -> anyhow::Result<ExitCode> {
    let ProcessArgs {
        input,
        output,
        style,
        workers,
        location,
        planning,
    } = args;
    let output = output.unwrap_or_else(|| default_output(&input));
    let request = ProcessRequest {
        input,
        output: output.clone(),
        style: style.style,
        strength: style.strength,
        preserve_colour: style.preserve_colour,
        workers,
    };
    // Refused before the data folder is opened: a refused command leaves nothing behind.
    if let Err(e) = check_request(&request) {
        terminal::eprint_line(&format!("error: {}", stylefleet::lifecycle::report(&e)));
        return Ok(ExitCode::from(2));
    }
    let ctx = super::context(&location, Some(&planning)).await?;
    let mut worker = super::worker_command(&location, workers, log_format)?;
    // The progress bar is the interface here: workers only speak up about problems (errors
    // only, when quiet).
    if std::env::var_os("RUST_LOG").is_none() {
        let level = if quiet { "error" } else { "warn" };
        worker.env.push(("RUST_LOG".into(), level.into()));
    }
    // Their lines go above the bar rather than through it.
    worker.through_terminal = !quiet && std::io::stderr().is_terminal();
    let mut progress = Progress::new(quiet);
    let shutdown = shutdown_on_signals("the work in hand")?;
    let result = process(&ctx, &request, worker, shutdown, |view| progress.show(view)).await;
    progress.bar.finish_and_clear();
    match result {
        Ok(view) => {
            if !quiet {
                let t = &view.timings;
                terminal::eprint_line(&format!(
                    "job {} done: {} frames; split {:.1} s, style {:.1} s (all batches), stitch {:.1} s, total {:.1} s",
                    view.job,
                    view.frames_total,
                    t.get("split").unwrap_or(&0.0),
                    t.get("batches_style").unwrap_or(&0.0),
                    t.get("stitch").unwrap_or(&0.0),
                    t.get("total").unwrap_or(&0.0),
                ));
            }
            // The path is the result, on stdout for scripts; a reader that went away (`| head -0`)
            // does not undo the job, which is done and stays so.
            if !terminal::print_line(&output.display().to_string()) {
                return Ok(ExitCode::from(BROKEN_PIPE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ProcessError::Failed { job, reason }) => {
            terminal::eprint_line(&format!("error: job {job} failed: {reason}"));
            Ok(ExitCode::FAILURE)
        }
        Err(e @ ProcessError::Interrupted(_)) => {
            terminal::eprint_line(&e.to_string());
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

/// The exit code of a command whose standard output was closed under it, as a shell reports a
/// process ended by SIGPIPE (128 + 13).
const BROKEN_PIPE: u8 = 141;

fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("video");
    input.with_file_name(format!("{stem}.styled.mp4"))
}

/// The progress of one run on stderr: a spinner until the job's frames are known, then a bar
/// with this run's rate and the time left, sized to the terminal; nothing when quiet or when
/// stderr is not a terminal.
struct Progress {
    bar: ProgressBar,
    /// Whether the bar shows frames yet (a spinner before the plan is known).
    counting: bool,
    /// Frames already done when this run first saw the plan, and when: the rate counts only the
    /// frames styled since, so a resumed job's earlier frames do not count as done in no time.
    baseline: Option<(u64, Instant)>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = terminal::bars().add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.set_message("starting");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Self {
            bar,
            counting: false,
            baseline: None,
        }
    }

    fn show(&mut self, view: &JobView) {
        let state = format!("{} {}/{}", view.state, view.batches_done, view.batches_total);
        if view.frames_total == 0 {
            self.bar.set_message(state);
            return;
        }
        if !self.counting {
            if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_bar} {pos}/{len} {msg}")
            {
                self.bar.set_style(style.progress_chars("=> "));
            }
            self.bar.set_length(view.frames_total);
            self.counting = true;
        }
        self.bar.set_position(view.frames_done);
        let (base, since) = *self
            .baseline
            .get_or_insert((view.frames_done, Instant::now()));
        let rate = rate(view.frames_done.saturating_sub(base), since.elapsed());
        let eta = match rate {
            Some(r) if r > 0.0 => short_duration((view.frames_total - view.frames_done.min(view.frames_total)) as f64 / r),
            _ => "--".to_owned(),
        };
        let fps = rate.map_or_else(|| "--".to_owned(), |r| format!("{r:.1}"));
        self.bar.set_message(format!("{fps} fps  ETA {eta}  {state}"));
    }
}

/// Frames per second over this run's time, once there is enough of it to mean something.
fn rate(frames: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs >= 1.0 && frames > 0).then(|| frames as f64 / secs)
}

/// `42s`, `3m05s`, `1h02m`.
fn short_duration(secs: f64) -> String {
    let secs = secs.round().clamp(0.0, 359_999.0) as u64;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_this_run_only_and_waits_for_a_second() {
        assert_eq!(rate(0, Duration::from_secs(5)), None);
        assert_eq!(rate(10, Duration::from_millis(10)), None);
        assert_eq!(rate(30, Duration::from_secs(2)), Some(15.0));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(42.4), "42s");
        assert_eq!(short_duration(185.0), "3m05s");
        assert_eq!(short_duration(3720.0), "1h02m");
        assert_eq!(short_duration(f64::NAN), "0s");
    }
}
