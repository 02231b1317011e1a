//! `stylefleet dlq`: list, show, replay and purge dead-lettered messages.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use stylefleet::dlq::{self, Filter};
use stylefleet::inspect;
use stylefleet::job::JobId;
use stylefleet::lifecycle::parse_seconds;
use stylefleet::stage::Context;

use crate::args::Location;

/// Filters shared by the dead-letter commands.
#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Only this queue (`batches` or `stitch`).
    // Not `--queue`: the flattened location already has it (the queue service), and clap
    // refuses two arguments with one name.
    #[arg(long = "queue-name", id = "queue_name", value_name = "NAME")]
    queue: Option<String>,
    /// Only messages of this job (its id, or a prefix of it that no other job shares).
    #[arg(long)]
    job: Option<String>,
    /// Only messages whose reason or description contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Only messages dead-lettered at least this many seconds ago.
    #[arg(long, value_parser = parse_seconds)]
    older_than: Option<Duration>,
    #[command(flatten)]
    location: Location,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead-lettered messages.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead-lettered message in full.
    Show {
        /// The message id.
        id: String,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Re-send matching messages to their queue (same id), then remove them from the dead-letter queue.
    Replay {
        #[command(flatten)]
        filter: DlqFilter,
        /// Only say what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete matching messages from the dead-letter queue. Without a filter it asks first (on a
    /// terminal), or needs `--yes`.
    Purge {
        #[command(flatten)]
        filter: DlqFilter,
        /// Only say what would be purged.
        #[arg(long)]
        dry_run: bool,
        /// Purge without asking, even with no filter.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

impl DlqFilter {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.job.is_none()
            && self.reason.is_none()
            && self.older_than.is_none()
    }
}

/// The library's filter, with `--job` resolved from the prefix the user typed to one job id
/// (among the jobs in the store and those the dead letters name).
async fn filter_of(ctx: &Context, f: &DlqFilter, id: Option<String>) -> anyhow::Result<Filter> {
    let job = match f.job.as_deref() {
        None => None,
        Some(prefix) => {
            let named: Vec<JobId> = inspect::dead_letters_by_job(ctx.queue.as_ref())
                .await?
                .into_keys()
                .collect();
            Some(
                inspect::resolve(&ctx.store, prefix, &named)
                    .await?
                    .to_string(),
            )
        }
    };
    Ok(Filter {
        queue: f.queue.clone(),
        job,
        reason: f.reason.clone(),
        older_than: f.older_than,
        id,
    })
}

pub async fn run(action: DlqAction) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { filter, json } => {
            let ctx = super::context(&filter.location, None).await?;
            let listed =
                dlq::list(ctx.queue.as_ref(), &filter_of(&ctx, &filter, None).await?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else if listed.is_empty() {
                println!("no dead-lettered messages");
            } else {
                println!(
                    "{:<8}  {:<26}  {:<24}  {:>7}  DESCRIPTION",
                    "QUEUE", "ID", "REASON", "AGE(s)"
                );
                for l in &listed {
                    println!(
                        "{:<8}  {:<26}  {:<24}  {:>7}  {}",
                        l.queue, l.id, l.reason, l.age_secs, l.description
                    );
                }
            }
        }
        DlqAction::Show { id, filter } => {
            let ctx = super::context(&filter.location, None).await?;
            let f = filter_of(&ctx, &filter, Some(id.clone())).await?;
            let listed = dlq::list(ctx.queue.as_ref(), &f).await?;
            if listed.is_empty() {
                bail!("no dead-lettered message with id {id}");
            }
            println!("{}", serde_json::to_string_pretty(&listed)?);
        }
        DlqAction::Replay { filter, dry_run } => return bulk(&filter, true, dry_run, true).await,
        DlqAction::Purge {
            filter,
            dry_run,
            yes,
        } => return bulk(&filter, false, dry_run, yes).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a purge of every dead letter may go ahead: `--yes`, or a "y" on a terminal. Without a
/// terminal to ask on, it is refused.
fn confirm_purge_all(total: u64) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to purge all {total} dead-lettered message(s) without a filter: nobody to ask \
             (stdin is not a terminal); add --yes to purge them all, or a filter (--job, \
             --reason, --queue-name, --older-than)"
        );
    }
    eprint!("purge all {total} dead-lettered message(s) of every job? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

async fn bulk(
    filter: &DlqFilter,
    replay: bool,
    dry_run: bool,
    confirmed: bool,
) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&filter.location, None).await?;
    let f = filter_of(&ctx, filter, None).await?;
    let total = dlq::list(ctx.queue.as_ref(), &f).await?.len() as u64;
    if !replay
        && !dry_run
        && !confirmed
        && filter.is_empty()
        && total > 0
        && !confirm_purge_all(total)?
    {
        println!("nothing purged");
        return Ok(ExitCode::FAILURE);
    }
    let bar = indicatif::ProgressBar::new(total);
    let verb = match (replay, dry_run) {
        (true, true) => "would replay",
        (true, false) => "replayed",
        (false, true) => "would purge",
        (false, false) => "purged",
    };
    let report = dlq::bulk(
        ctx.queue.as_ref(),
        Some(&ctx.store),
        &f,
        replay,
        dry_run,
        |l| {
            bar.inc(1);
            bar.println(format!("{verb} {} {} ({})", l.queue, l.id, l.reason));
        },
    )
    .await?;
    bar.finish_and_clear();
    println!(
        "{verb} {} of {} matching message(s)",
        if dry_run {
            report.matched
        } else {
            report.acted
        },
        report.matched
    );
    Ok(ExitCode::SUCCESS)
}
