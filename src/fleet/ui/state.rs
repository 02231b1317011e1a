//! What the page shows, read the way `status` and `dlq list` read it: the jobs from the store's
//! markers, the dead letters from the queue, and the worker count from the running fleet. Nothing
//! here is stored; every poll reads afresh.

use std::collections::HashMap;

use serde::Serialize;

use crate::dlq::{self, Listed};
use crate::fleet::WorkerCount;
use crate::inspect::{InspectError, JobView, dead_letters_by_job, job_ids, job_of_message, view};
use crate::job::{JobId, Manifest, Status, paths};
use crate::stage::Context;

/// The most jobs the page lists (the newest).
pub const MAX_JOBS: usize = 100;

/// One job on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// What `status` shows.
    #[serde(flatten)]
    pub view: JobView,
    /// The style asked for (a name, an index or a style image), when the job was planned.
    pub style: Option<String>,
    /// When the job was planned (or refused), in seconds since the epoch.
    pub created_at: f64,
    /// The batch of the job's latest done chunk, whose frame the thumbnails show.
    pub thumbnail: Option<u32>,
}

/// One dead letter on the page.
#[derive(Debug, Clone, Serialize)]
pub struct LetterRow {
    /// What `dlq list` shows.
    #[serde(flatten)]
    pub listed: Listed,
    /// The job its body names.
    pub job: Option<JobId>,
    /// The batch its body names (none for a stitch).
    pub batch: Option<u32>,
}

/// Everything the page shows at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Worker processes, as the autoscaler last left them.
    pub workers: WorkerCount,
    /// Jobs, newest first, at most [`MAX_JOBS`].
    pub jobs: Vec<JobRow>,
    /// Jobs in the store (the page may list fewer).
    pub jobs_total: usize,
    /// Dead letters of both queues, oldest first.
    pub dead_letters: Vec<LetterRow>,
}

/// Reads the snapshot.
pub async fn snapshot(ctx: &Context, workers: WorkerCount) -> Result<Snapshot, InspectError> {
    let dead = dead_letters_by_job(ctx.queue.as_ref()).await?;
    let ids = job_ids(&ctx.store).await?;
    let jobs_total = ids.len();
    let mut jobs = Vec::with_capacity(ids.len());
    for job in ids {
        match job_row(ctx, &job, &dead).await {
            Ok(row) => jobs.push(row),
            // A job being planned right now has markers but no manifest yet.
            Err(InspectError::NoSuchJob(_)) => {}
            Err(e) => return Err(e),
        }
    }
    jobs.sort_by(|a, b| {
        b.created_at
            .total_cmp(&a.created_at)
            .then_with(|| a.view.job.cmp(&b.view.job))
    });
    jobs.truncate(MAX_JOBS);
    let dead_letters = dlq::list(ctx.queue.as_ref(), &dlq::Filter::default())
        .await?
        .into_iter()
        .map(|listed| {
            let named = job_of_message(listed.body.as_bytes());
            LetterRow {
                job: named.as_ref().map(|(job, _)| job.clone()),
                batch: named.and_then(|(_, batch)| batch),
                listed,
            }
        })
        .collect();
    Ok(Snapshot {
        workers,
        jobs,
        jobs_total,
        dead_letters,
    })
}

async fn job_row(
    ctx: &Context,
    job: &JobId,
    dead: &HashMap<JobId, Vec<crate::queue::DeadLetter>>,
) -> Result<JobRow, InspectError> {
    let letters = dead.get(job).map(Vec::as_slice).unwrap_or_default();
    let view = view(&ctx.store, job, letters).await?;
    let (style, created_at) = match ctx
        .store
        .get_json::<Manifest>(&paths::manifest(job))
        .await?
    {
        Some(m) => (Some(m.style.spec), m.created_at),
        None => {
            let refused = ctx.store.get_json::<Status>(&paths::rejected(job)).await?;
            (None, refused.map_or(0.0, |s| s.updated_at))
        }
    };
    let thumbnail = ctx
        .store
        .list(&paths::done_dir(job))
        .await?
        .iter()
        .filter_map(|meta| {
            meta.location
                .filename()?
                .strip_suffix(".json")?
                .parse::<u32>()
                .ok()
        })
        .max();
    Ok(JobRow {
        view,
        style,
        created_at,
        thumbnail,
    })
}
