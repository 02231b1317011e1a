//! `stylefleet status`: jobs, their state, progress, throughput and failure reasons.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use stylefleet::inspect;

use crate::args::Location;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One job (id or unique prefix).
    job: Option<String>,
    #[command(flatten)]
    location: Location,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let ctx = super::context(&args.location, None).await?;
    let dead = inspect::dead_letters_by_job(ctx.queue.as_ref()).await?;
    let mut ids = inspect::job_ids(&ctx.store).await?;
    if let Some(prefix) = args.job.as_deref() {
        ids.retain(|id| id.as_str().starts_with(prefix));
        if ids.is_empty() {
            bail!("no job matches {prefix}");
        }
    }
    let mut views = Vec::new();
    for id in &ids {
        let letters = dead.get(id).map(Vec::as_slice).unwrap_or(&[]);
        match inspect::view(&ctx.store, id, letters).await {
            Ok(v) => views.push(v),
            Err(inspect::InspectError::NoSuchJob(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("no jobs");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<9}  {:>9}  {:>13}  {:>7}  SOURCE / OUTPUT / REASON",
        "JOB", "STATE", "BATCHES", "FRAMES", "FPS"
    );
    for v in &views {
        let detail = match (&v.reason, &v.output) {
            (Some(reason), _) => format!("{}: {reason}", v.source),
            (None, Some(out)) => format!("{} -> {out}", v.source),
            _ => v.source.clone(),
        };
        println!(
            "{:<16}  {:<9}  {:>9}  {:>13}  {:>7.2}  {detail}",
            v.job.as_str(),
            v.state.to_string(),
            format!("{}/{}", v.batches_done, v.batches_total),
            format!("{}/{}", v.frames_done, v.frames_total),
            v.fps
        );
    }
    Ok(ExitCode::SUCCESS)
}
