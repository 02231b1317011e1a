//! `stylefleet dlq`: list, show, replay and purge dead-lettered messages.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use stylefleet::dlq::{self, Filter};
use stylefleet::lifecycle::parse_seconds;

use crate::args::Location;

/// Filters shared by the dead-letter commands.
#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Only this queue (`batches` or `stitch`).
    // Not `--queue`: the flattened location already has it (the queue service), and clap
    // refuses two arguments with one name.
    #[arg(long = "queue-name", id = "queue_name", value_name = "NAME")]
    queue: Option<String>,
    /// Only messages of this job.
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
    /// Delete matching messages from the dead-letter queue.
    Purge {
        #[command(flatten)]
        filter: DlqFilter,
        /// Only say what would be purged.
        #[arg(long)]
        dry_run: bool,
    },
}

fn filter_of(f: &DlqFilter, id: Option<String>) -> Filter {
    Filter {
        queue: f.queue.clone(),
        job: f.job.clone(),
        reason: f.reason.clone(),
        older_than: f.older_than,
        id,
    }
}

pub async fn run(action: DlqAction) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { filter, json } => {
            let ctx = super::context(&filter.location, None).await?;
            let listed = dlq::list(ctx.queue.as_ref(), &filter_of(&filter, None)).await?;
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
            let listed =
                dlq::list(ctx.queue.as_ref(), &filter_of(&filter, Some(id.clone()))).await?;
            if listed.is_empty() {
                bail!("no dead-lettered message with id {id}");
            }
            println!("{}", serde_json::to_string_pretty(&listed)?);
        }
        DlqAction::Replay { filter, dry_run } => return bulk(&filter, true, dry_run).await,
        DlqAction::Purge { filter, dry_run } => return bulk(&filter, false, dry_run).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn bulk(filter: &DlqFilter, replay: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&filter.location, None).await?;
    let f = filter_of(filter, None);
    let total = dlq::list(ctx.queue.as_ref(), &f).await?.len() as u64;
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
