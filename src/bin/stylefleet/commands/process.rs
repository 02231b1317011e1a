//! `stylefleet process`: videos through the pipeline, one job each, with a progress bar; outputs
//! named by a template.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use stylefleet::fleet::process::{
    JOB_PLACEHOLDER, ProcessError, ProcessRequest, check_request, output_for, process,
};
use stylefleet::inspect::JobView;
use stylefleet::lifecycle::shutdown_on_signals;
use stylefleet::terminal;

use crate::args::{Location, LogFormat, Planning, StyleArgs, at_least_one};

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The videos; each is a job of its own.
    #[arg(required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// The styled video; with several inputs, the folder their outputs go to. Default: beside
    /// each input, named by `--name-template`.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// How outputs are named beside their inputs or in the `-o` folder: `{stem}` is the input's
    /// name without its extension, `{style}` the style as given (made safe for a file name),
    /// `{job}` the job id.
    #[arg(long, default_value = DEFAULT_TEMPLATE, value_parser = parse_template)]
    name_template: String,
    /// Replace an output file that exists already (without it, one is refused before any work).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    style: StyleArgs,
    /// Worker processes; a new job's batches are cut into whole rounds of them.
    #[arg(long, default_value_t = 2, value_parser = at_least_one())]
    workers: usize,
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    planning: Planning,
    /// Show the plan (frames, batches), the time the model would take on this machine
    /// (measured on two frames of the video) and the disk needed; write nothing.
    #[arg(long)]
    dry_run: bool,
}

const DEFAULT_TEMPLATE: &str = "{stem}.{style}.mp4";

pub async fn run(
    args: ProcessArgs,
    log_format: LogFormat,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let ProcessArgs {
        inputs,
        output,
        name_template,
        force,
        style,
        workers,
        location,
        planning,
        dry_run,
    } = args;
    // Refused before the data folder is opened: a refused command leaves nothing behind.
    let requests = match requests(
        &inputs,
        output.as_deref(),
        &name_template,
        force,
        &style,
        workers,
    ) {
        Ok(requests) => requests,
        Err(reason) => {
            terminal::eprint_line(&format!("error: {reason}"));
            return Ok(ExitCode::from(2));
        }
    };
    if dry_run {
        for r in &requests {
            super::dry_run::run(&r.input, &r.output, &style, &planning, &location, workers).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut ctx = super::context(&location, Some(&planning)).await?;
    // New jobs are cut into whole rounds of these workers.
    ctx.settings.plan_workers = u32::try_from(workers).unwrap_or(u32::MAX);
    let mut worker = super::worker_command(&location, workers, log_format)?;
    // The progress bar is the interface here: workers only speak up about problems (errors
    // only, when quiet).
    if std::env::var_os("RUST_LOG").is_none() {
        let level = if quiet { "error" } else { "warn" };
        worker.env.push(("RUST_LOG".into(), level.into()));
    }
    // Their lines go above the bar rather than through it.
    worker.through_terminal = !quiet && std::io::stderr().is_terminal();
    let shutdown = shutdown_on_signals("the work in hand")?;
    let mut code = ExitCode::SUCCESS;
    for request in &requests {
        if shutdown.is_cancelled() {
            break;
        }
        let mut progress = Progress::new(quiet);
        let result = process(&ctx, request, worker.clone(), shutdown.clone(), |view| {
            progress.show(view)
        })
        .await;
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
                // The path is the result, on stdout for scripts; a reader that went away
                // (`| head -0`) does not undo the job, which is done and stays so.
                let written = output_for(&request.output, &view.job);
                if !terminal::print_line(&written.display().to_string()) {
                    return Ok(ExitCode::from(BROKEN_PIPE));
                }
            }
            Err(ProcessError::Failed { job, reason }) => {
                terminal::eprint_line(&format!("error: job {job} failed: {reason}"));
                code = ExitCode::FAILURE;
            }
            Err(e @ ProcessError::Interrupted(_)) => {
                terminal::eprint_line(&e.to_string());
                return Ok(ExitCode::from(130));
            }
            Err(e) if requests.len() > 1 => {
                terminal::eprint_line(&format!(
                    "error: {}: {}",
                    request.input.display(),
                    stylefleet::lifecycle::report(&e)
                ));
                code = ExitCode::FAILURE;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

/// The exit code of a command whose standard output was closed under it, as a shell reports a
/// process ended by SIGPIPE (128 + 13).
const BROKEN_PIPE: u8 = 141;

/// One request per input, each checked (input, output path) before anything is written; the
/// first problem found is the reason.
fn requests(
    inputs: &[PathBuf],
    output: Option<&Path>,
    template: &str,
    force: bool,
    style: &StyleArgs,
    workers: usize,
) -> Result<Vec<ProcessRequest>, String> {
    if let (Some(folder), true) = (output, inputs.len() > 1)
        && folder.exists()
        && !folder.is_dir()
    {
        return Err(format!(
            "with several inputs, -o names the folder their outputs go to; {} is a file",
            folder.display()
        ));
    }
    let mut requests: Vec<ProcessRequest> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = || output_name(template, input, &style.style);
        let path = match output {
            Some(file) if inputs.len() == 1 => file.to_owned(),
            Some(folder) => folder.join(name()),
            None => input.with_file_name(name()),
        };
        if let Some(twin) = requests.iter().find(|r| r.output == path) {
            return Err(format!(
                "{} and {} would both be written to {}; put {{stem}} or {{job}} in --name-template",
                twin.input.display(),
                input.display(),
                path.display()
            ));
        }
        let request = ProcessRequest {
            input: input.clone(),
            output: path,
            overwrite: force,
            style: style.style.clone(),
            strength: style.strength,
            preserve_colour: style.preserve_colour,
            workers,
        };
        check_request(&request).map_err(|e| stylefleet::lifecycle::report(&e))?;
        requests.push(request);
    }
    Ok(requests)
}

/// An output's file name from the template (already checked by [`parse_template`]).
fn output_name(template: &str, input: &Path, style: &str) -> String {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("video");
    template
        .replace("{stem}", stem)
        .replace("{style}", &style_for_name(style))
}

/// The style as a file name part: an image's stem, or the spec with anything but letters,
/// digits, `-`, `_` and `.` replaced by `_` (`3:0.7,12:0.3` gives `3_0.7_12_0.3`).
fn style_for_name(style: &str) -> String {
    let path = Path::new(style);
    if path.is_file()
        && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
    {
        return stem.to_owned();
    }
    style
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A `--name-template`: a file name (no folder) whose only `{...}` are `{stem}`, `{style}` and
/// `{job}`.
fn parse_template(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains('/') {
        return Err("a file name without folders, e.g. {stem}.{style}.mp4".to_owned());
    }
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            return Err(format!("an unclosed {{ in {text:?}"));
        };
        let placeholder = &after[..=close];
        if !matches!(placeholder, "{stem}" | "{style}" | JOB_PLACEHOLDER) {
            return Err(format!(
                "unknown placeholder {placeholder}; use {{stem}}, {{style}} or {{job}}"
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("a }} without its {{ in {text:?}"));
    }
    Ok(text.to_owned())
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
        let state = format!(
            "{} {}/{}",
            view.state, view.batches_done, view.batches_total
        );
        if view.frames_total == 0 {
            self.bar.set_message(state);
            return;
        }
        if !self.counting {
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {wide_bar} {pos}/{len} {msg}")
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
            Some(r) if r > 0.0 => short_duration(
                (view.frames_total - view.frames_done.min(view.frames_total)) as f64 / r,
            ),
            _ => "--".to_owned(),
        };
        let fps = rate.map_or_else(|| "--".to_owned(), |r| format!("{r:.1}"));
        self.bar
            .set_message(format!("{fps} fps  ETA {eta}  {state}"));
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
    fn templates_name_outputs_and_are_checked() {
        let input = Path::new("videos/clip.mov");
        assert_eq!(
            output_name(DEFAULT_TEMPLATE, input, "starry-blue"),
            "clip.starry-blue.mp4"
        );
        assert_eq!(
            output_name("{stem}-{style}.mp4", input, "3:0.7,12:0.3"),
            "clip-3_0.7_12_0.3.mp4"
        );
        assert_eq!(output_name("{job}.mp4", input, "0"), "{job}.mp4");
        for good in [DEFAULT_TEMPLATE, "{stem}.{job}.mp4", "out.mp4"] {
            assert!(parse_template(good).is_ok(), "{good}");
        }
        for bad in ["", "a/{stem}.mp4", "{name}.mp4", "{stem.mp4", "stem}.mp4"] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(42.4), "42s");
        assert_eq!(short_duration(185.0), "3m05s");
        assert_eq!(short_duration(3720.0), "1h02m");
        assert_eq!(short_duration(f64::NAN), "0s");
    }
}
