//! `stylefleet status`: jobs newest first (age, style, state, progress, throughput of work time,
//! the files as the user named them, a one-line reason), one job in full (`status JOB`), and a
//! live view (`--watch`).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use stylefleet::inspect::{self, JobDetail, JobView};
use stylefleet::job::{JobId, JobState, now_secs};
use stylefleet::lifecycle::{parse_seconds, shutdown_on_signals};
use stylefleet::stage::Context;

use crate::args::Location;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One job in full (its id, or a prefix of it that no other job shares).
    job: Option<String>,
    #[command(flatten)]
    location: Location,
    /// Print JSON (a list of jobs; with JOB, a list of that one job with its batches and logs).
    #[arg(long)]
    json: bool,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    state: Option<StateFilter>,
    /// Redraw every SECS seconds (default 2) until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2", value_parser = parse_seconds)]
    watch: Option<Duration>,
}

/// The states `--state` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateFilter {
    Queued,
    Running,
    Stitching,
    Done,
    Failed,
    Interrupted,
}

impl StateFilter {
    fn matches(self, state: JobState) -> bool {
        matches!(
            (self, state),
            (StateFilter::Queued, JobState::Queued)
                | (StateFilter::Running, JobState::Running)
                | (StateFilter::Stitching, JobState::Stitching)
                | (StateFilter::Done, JobState::Done)
                | (StateFilter::Failed, JobState::Failed)
                | (StateFilter::Interrupted, JobState::Interrupted)
        )
    }
}

/// Whether the queue is the embedded one, whose consumers are this machine's processes (see
/// [`inspect::views`]).
pub fn embedded(location: &Location) -> bool {
    location
        .queue
        .as_deref()
        .is_none_or(|q| !(q.starts_with("servicebus://") || q.starts_with("sb://")))
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&args.location, None).await?;
    let embedded = embedded(&args.location);
    let Some(every) = args.watch else {
        print!("{}", render(&ctx, &args, embedded).await?);
        return Ok(ExitCode::SUCCESS);
    };
    let stop = shutdown_on_signals("the redraw")?;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let screen = render(&ctx, &args, embedded).await?;
        if terminal {
            // Home and clear, then the screen: one redraw, no scrolling.
            print!("\x1b[H\x1b[2J{screen}");
        } else {
            println!("{screen}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::select! {
            () = stop.cancelled() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One screen (or one JSON document) of what the arguments ask for.
async fn render(ctx: &Context, args: &StatusArgs, embedded: bool) -> anyhow::Result<String> {
    if let Some(prefix) = args.job.as_deref() {
        let dead = inspect::dead_letters_by_job(ctx.queue.as_ref()).await?;
        let named: Vec<JobId> = dead.keys().cloned().collect();
        let job = inspect::resolve(&ctx.store, prefix, &named).await?;
        let consumers = if embedded {
            Some(stylefleet::presence::live(&ctx.logs).await?.len())
        } else {
            None
        };
        let letters = dead.get(&job).map(Vec::as_slice).unwrap_or(&[]);
        let detail = inspect::detail(&ctx.store, &ctx.logs, &job, letters, consumers).await?;
        return Ok(if args.json {
            format!("{}\n", serde_json::to_string_pretty(&[&detail])?)
        } else {
            detail_text(&detail)
        });
    }
    let mut views = inspect::views(&ctx.store, &ctx.logs, ctx.queue.as_ref(), embedded).await?;
    if let Some(state) = args.state {
        views.retain(|v| state.matches(v.state));
    }
    if args.json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&views)?));
    }
    Ok(table(&views, width()))
}

/// The terminal's width, or a wide page when the output is not a terminal.
fn width() -> usize {
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
        .filter(|_| std::io::stdout().is_terminal())
        .unwrap_or(160)
        .max(60)
}

/// "3m ago".
pub fn age(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// `text` cut to `max` characters, on one line, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let more = text.lines().nth(1).is_some();
    if line.chars().count() <= max && !more {
        return line.to_owned();
    }
    let keep = max.saturating_sub(1);
    let mut out: String = line.chars().take(keep).collect();
    out.push('…');
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn progress(v: &JobView) -> String {
    if v.frames_total == 0 {
        return "-".into();
    }
    let pct = v.frames_done as f64 * 100.0 / v.frames_total as f64;
    format!("{}/{} {:>3.0}%", v.frames_done, v.frames_total, pct.floor())
}

/// The list, fitted to `width` columns.
pub fn table(views: &[JobView], width: usize) -> String {
    if views.is_empty() {
        return "no jobs\n".into();
    }
    let ids: Vec<&JobId> = views.iter().map(|v| &v.job).collect();
    let id_len = inspect::short_len(&ids, 6);
    let now = now_secs();
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            [
                v.job.as_str()[..id_len].to_owned(),
                age(now - v.created_at),
                shorten(&v.style, 16),
                v.state.to_string(),
                progress(v),
                if v.fps > 0.0 {
                    format!("{:.1}", v.fps)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let headers = ["ID", "AGE", "STYLE", "STATE", "FRAMES", "FPS"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: [&str; 6], rest: &str| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers to the right, words to the left.
            if i >= 4 {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.push_str(rest);
        s
    };
    let fixed: usize = widths.iter().map(|w| w + 2).sum();
    let room = width.saturating_sub(fixed).max(20);
    let _ = writeln!(out, "{}", line(headers, "INPUT -> OUTPUT / REASON"));
    for (v, row) in views.iter().zip(&rows) {
        let input = file_name(&v.input);
        let rest = match (&v.reason, &v.named_output) {
            (Some(reason), _) => format!("{input}: {reason}"),
            (None, Some(out)) => format!("{input} -> {out}"),
            (None, None) => input.to_owned(),
        };
        let cells = [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]].map(String::as_str);
        let _ = writeln!(out, "{}", line(cells, &shorten(&rest, room)));
    }
    out
}

fn when(t: Option<f64>) -> String {
    match t {
        Some(t) if t > 0.0 => age(now_secs() - t),
        _ => "-".into(),
    }
}

/// `status JOB`: everything about one job.
pub fn detail_text(d: &JobDetail) -> String {
    let v = &d.view;
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "{name:<11} {value}");
    };
    field("job", v.job.as_str());
    field("state", &v.state.to_string());
    if v.state == JobState::Interrupted {
        field(
            "",
            "nothing works on it: run the same `process` command again (or `up`) to resume",
        );
    }
    field("created", &when(Some(v.created_at)));
    field("input", &v.input);
    field("source", &v.source);
    if let (Some(version), Some(size)) = (&d.source_version, d.source_size) {
        field("version", &format!("{version} ({size} bytes)"));
    }
    field("style", &v.style);
    if let Some(settings) = d.settings.as_object() {
        // One line: the encoder by its values, stabilisation on or off (`--json` has it all).
        let text: Vec<String> = settings
            .iter()
            .filter(|(k, _)| *k != "style")
            .map(|(k, val)| match (k.as_str(), val) {
                ("temporal", serde_json::Value::Null) => "temporal=off".to_owned(),
                ("temporal", _) => "temporal=on".to_owned(),
                (_, serde_json::Value::Object(o)) => {
                    let parts: Vec<String> = o
                        .values()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect();
                    format!("{k}={}", parts.join("/"))
                }
                (_, serde_json::Value::String(v)) => format!("{k}={v:?}"),
                _ => format!("{k}={val}"),
            })
            .collect();
        field("settings", &text.join(" "));
    }
    field(
        "progress",
        &format!(
            "{} frames, {}/{} batches",
            progress(v),
            v.batches_done,
            v.batches_total
        ),
    );
    field(
        "work time",
        &format!("{:.1} s ({:.1} frames/s)", v.work_secs, v.fps),
    );
    if let Some(out_name) = &v.named_output {
        field("output", out_name);
    }
    if let Some(output) = &v.output
        && Some(output) != v.named_output.as_ref()
    {
        field("in store", output);
    }
    for (stage, secs) in &v.timings {
        field(&format!("  {stage}"), &format!("{secs:.2} s"));
    }
    field("logs", &d.log_location);
    if let Some(reason) = &v.reason {
        let _ = writeln!(out, "failure:\n  {}", reason.replace('\n', "\n  "));
    }
    if !d.batches.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>5}  {:<13}  {:<13}  {:>8}  {:<22}  {:<9}  {:>8}  FAILURE",
            "BATCH", "FRAMES", "STATE", "ATTEMPTS", "WORKER", "STARTED", "SECS"
        );
        for b in &d.batches {
            let secs = match (b.started_at, b.finished_at) {
                (Some(s), Some(e)) => format!("{:.2}", e - s),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:>5}  {:<13}  {:<13}  {:>8}  {:<22}  {:<9}  {:>8}  {}",
                b.batch,
                format!("{}..{}", b.frames[0], b.frames[1]),
                b.state,
                b.attempts,
                b.worker.as_deref().unwrap_or("-"),
                when(b.started_at),
                secs,
                b.failure.as_deref().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(5.0), "5s ago");
        assert_eq!(age(190.0), "3m ago");
        assert_eq!(age(7300.0), "2h ago");
        assert_eq!(age(3.0 * 86400.0), "3d ago");
        assert_eq!(age(-2.0), "0s ago");
    }

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("a much longer reason", 10), "a much lo…");
        assert_eq!(shorten("first line\nsecond", 40), "first line…");
        assert_eq!(shorten(&"é".repeat(300), 8).chars().count(), 8);
    }
}
