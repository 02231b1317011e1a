//! `stylefleet jobs rm JOB...` and `stylefleet clean`: remove finished jobs and their intermediate
//! files (see [`stylefleet::clean`] for what goes, what stays and in which order).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use stylefleet::clean::{self, Options, Removal};
use stylefleet::inspect::{self, JobView};
use stylefleet::job::{JobId, JobState, now_secs};
use stylefleet::stage::Context;

use crate::args::Location;

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Remove finished (done or failed) jobs and their intermediate files.
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The jobs (ids, or prefixes that no other job shares).
    #[arg(required = true)]
    jobs: Vec<String>,
    #[command(flatten)]
    removal: RemovalArgs,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only jobs planned at least this long ago (`90s`, `30m`, `12h`, `7d`; a bare number is
    /// seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Option<Duration>,
    #[command(flatten)]
    removal: RemovalArgs,
}

/// What `jobs rm` and `clean` share.
#[derive(Debug, Args)]
pub struct RemovalArgs {
    /// Only list what would go and the bytes it would free; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the outputs in the store too (a file written with `process -o` is never touched).
    #[arg(long)]
    outputs: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    location: Location,
}

/// `7d`, `12h`, `30m`, `90s`, `1h 30m`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 90s, 30m, 12h, 7d)"))
}

pub async fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&args.removal.location, None).await?;
    let all = all_views(&ctx, &args.removal.location).await?;
    let mut targets: Vec<JobView> = Vec::new();
    for prefix in &args.jobs {
        let id = inspect::resolve(&ctx.store, prefix, &[]).await?;
        let Some(view) = all.iter().find(|v| v.job == id) else {
            bail!("no job {id}");
        };
        if !targets.iter().any(|t| t.job == id) {
            targets.push(view.clone());
        }
    }
    if let Some(busy) = targets
        .iter()
        .find(|v| !matches!(v.state, JobState::Done | JobState::Failed))
    {
        bail!(
            "job {} is {}: only finished (done or failed) jobs are removed{}",
            busy.job,
            busy.state,
            if busy.state == JobState::Interrupted {
                "; run its `process` command again to finish it"
            } else {
                ""
            }
        );
    }
    run(&ctx, &targets, &all, &[], &args.removal).await
}

pub async fn clean(args: CleanArgs) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&args.removal.location, None).await?;
    let all = all_views(&ctx, &args.removal.location).await?;
    let now = now_secs();
    let targets: Vec<JobView> = all
        .iter()
        .filter(|v| matches!(v.state, JobState::Done | JobState::Failed))
        .filter(|v| {
            args.older_than
                .is_none_or(|age| now - v.created_at >= age.as_secs_f64())
        })
        .cloned()
        .collect();
    let resume: Vec<JobId> = clean::cut_short(&ctx).await?;
    run(&ctx, &targets, &all, &resume, &args.removal).await
}

async fn all_views(ctx: &Context, location: &Location) -> anyhow::Result<Vec<JobView>> {
    let embedded = super::status::embedded(location);
    Ok(inspect::views(&ctx.store, &ctx.logs, ctx.queue.as_ref(), embedded).await?)
}

async fn run(
    ctx: &Context,
    targets: &[JobView],
    all: &[JobView],
    resume: &[JobId],
    args: &RemovalArgs,
) -> anyhow::Result<ExitCode> {
    let options = Options {
        outputs: args.outputs,
    };
    let removals = clean::plan(ctx, targets, all, resume, options).await?;
    if !args.dry_run {
        for removal in &removals {
            clean::remove(ctx, removal).await?;
        }
        if let Err(e) = stylefleet::presence::sweep(&ctx.logs).await {
            tracing::warn!(error = %e, "cannot sweep lapsed presence records");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&removals)?);
    } else {
        print!("{}", report(&removals, args.dry_run));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(removals: &[Removal], dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if removals.is_empty() {
        return "no finished jobs to remove\n".into();
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut total = 0;
    for r in removals {
        total += r.bytes();
        let _ = writeln!(
            out,
            "{} ({}): {verb} {} file(s), {}{}",
            r.job,
            r.state,
            r.store.len() + r.logs.len() + r.scratch.len(),
            bytes(r.bytes()),
            match r.dead_letters {
                0 => String::new(),
                n => format!(", {n} dead letter(s)"),
            }
        );
        if let Some(why) = &r.keeps_records {
            let _ = writeln!(out, "  keeps its records: {why}");
        }
        if dry_run {
            for item in r.store.iter().chain(&r.scratch) {
                let _ = writeln!(out, "  {:>10}  {}", bytes(item.bytes), item.path);
            }
            for item in &r.logs {
                let _ = writeln!(out, "  {:>10}  logs: {}", bytes(item.bytes), item.path);
            }
        }
    }
    let _ = writeln!(
        out,
        "{verb} {} job(s): {} {}",
        removals
            .iter()
            .filter(|r| r.keeps_records.is_none())
            .count(),
        bytes(total),
        if dry_run { "would be freed" } else { "freed" }
    );
    out
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
