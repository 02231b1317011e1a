//! Removing finished jobs and what they leave behind: `stylefleet jobs rm` and `stylefleet clean`.
//!
//! What goes, for a job that is done or failed (never one that is queued, running or stitching):
//! its records and markers (`jobs/<job>/`), its chunks, its logs, the copy of the input that
//! `process` put under `process/` (unless another job reads the same copy), the output's copy in
//! the store when `process` already wrote it to the user's `-o` file (same size), and in the
//! scratch folder the job's chunk files and its pinned source copy (unless another job pins the
//! same bytes). The outputs the user asked for stay, unless `outputs` is set: then the store's
//! output goes too, with its name claim (the file that `process` wrote with `-o` is the user's
//! and is never touched).
//!
//! The job's dead letters go too (they name a job that is no more).
//!
//! A job of the fleet's `input/` folder whose input is still there keeps its small records: the
//! fleet looks at every input again when it starts, and without them it would style the video
//! again. Only its chunks and scratch files go (a failed one is left whole, since reviving it
//! needs its chunks); removing the input first lets the job go entirely.
//!
//! Crash-safe and idempotent: a removal first writes `jobs/<job>/removing.json`, then deletes the
//! done markers (so that nothing reads the job as further along than its files), the chunks and
//! the rest, the manifest next to last and the mark last. A job with the mark is not shown by
//! `status` (it is half gone), and the next `clean` finishes it. Deleting what is already gone
//! is not an error.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::inspect::{InspectError, JobView};
use crate::job::{JobId, JobState, Manifest, Request, Status, now_secs, paths};
use crate::stage::Context;
use crate::stage::aggregate::OutputClaim;
use crate::store::StoreError;

/// Errors while planning or removing.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The jobs could not be read.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// A local file could not be removed.
    #[error("cannot remove {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job is not finished.
    #[error("job {job} is {state}: only finished (done or failed) jobs are removed")]
    NotFinished {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
}

/// What to remove besides the intermediate files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The outputs in the store too.
    pub outputs: bool,
}

/// One object or file to remove, with its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Where: a store path, `logs:<path>` in the log store, or a local path in the scratch folder.
    pub path: String,
    /// Bytes.
    pub bytes: u64,
}

/// What removing one job does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// The job.
    pub job: JobId,
    /// Its state.
    pub state: JobState,
    /// Objects in the store, in the order they go (records last).
    pub store: Vec<Item>,
    /// Objects in the log store.
    pub logs: Vec<Item>,
    /// Files and folders in the scratch folder.
    pub scratch: Vec<Item>,
    /// The job's dead letters, purged with it.
    pub dead_letters: u64,
    /// Why the job's records stay, when they do (see the module docs).
    pub keeps_records: Option<String>,
}

impl Removal {
    /// Bytes this removal frees.
    pub fn bytes(&self) -> u64 {
        self.store
            .iter()
            .chain(&self.logs)
            .chain(&self.scratch)
            .map(|i| i.bytes)
            .sum()
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty() && self.logs.is_empty() && self.scratch.is_empty()
    }
}

/// Jobs a removal cut short (they carry the `removing` mark): the next `clean` finishes them.
pub async fn cut_short(ctx: &Context) -> Result<Vec<JobId>, CleanError> {
    let mut out = Vec::new();
    for id in crate::inspect::job_ids(&ctx.store).await? {
        if ctx.store.exists(&paths::removing(&id)).await? {
            out.push(id);
        }
    }
    Ok(out)
}

/// Plans the removal of `targets` (views of finished jobs, or of interrupted ones that the user
/// named); `all` are every job's views (to keep what other jobs still need), `unfinished` the
/// removals cut short to finish as well. Writes nothing.
pub async fn plan(
    ctx: &Context,
    targets: &[JobView],
    all: &[JobView],
    resume: &[JobId],
    options: Options,
) -> Result<Vec<Removal>, CleanError> {
    let going: HashSet<&JobId> = targets.iter().map(|v| &v.job).chain(resume).collect();
    // What the jobs that stay still read: their source copies and pinned versions.
    let mut kept_sources = HashSet::new();
    let mut kept_versions = HashSet::new();
    for v in all.iter().filter(|v| !going.contains(&v.job)) {
        kept_sources.insert(v.source.clone());
        if let Some(m) = ctx
            .store
            .get_json::<Manifest>(&paths::manifest(&v.job))
            .await?
        {
            kept_versions.insert(m.source.version);
        }
    }
    let mut removals = Vec::new();
    for v in targets {
        if matches!(
            v.state,
            JobState::Queued | JobState::Running | JobState::Stitching
        ) {
            return Err(CleanError::NotFinished {
                job: v.job.clone(),
                state: v.state,
            });
        }
        removals
            .push(plan_one(ctx, &v.job, v.state, &kept_sources, &kept_versions, options).await?);
    }
    for job in resume {
        if targets.iter().any(|v| v.job == *job) {
            continue;
        }
        removals.push(
            plan_one(
                ctx,
                job,
                JobState::Done,
                &kept_sources,
                &kept_versions,
                options,
            )
            .await?,
        );
    }
    Ok(removals)
}

async fn plan_one(
    ctx: &Context,
    job: &JobId,
    state: JobState,
    kept_sources: &HashSet<String>,
    kept_versions: &HashSet<String>,
    options: Options,
) -> Result<Removal, CleanError> {
    let store = &ctx.store;
    let manifest = store.get_json::<Manifest>(&paths::manifest(job)).await?;
    let status = store.get_json::<Status>(&paths::status(job)).await?;
    let request = store
        .get_json::<Request>(&paths::request(job))
        .await
        .ok()
        .flatten();
    let claim = store
        .get_json::<OutputClaim>(&paths::output_claim(job))
        .await
        .ok()
        .flatten();
    let source = manifest
        .as_ref()
        .map(|m| m.source.path.clone())
        .or_else(|| status.as_ref().map(|s| s.source.clone()));
    let resuming = store.exists(&paths::removing(job)).await?;

    // A fleet job whose input is still there keeps its records (see the module docs).
    let fleet_input = source
        .as_deref()
        .filter(|s| s.starts_with("input/"))
        .map(str::to_owned);
    let keeps_records = match &fleet_input {
        Some(input) if !resuming && store.exists(input).await? => Some(format!(
            "its input {input} is still there (the fleet would style it again); remove the \
             input to remove the job"
        )),
        _ => None,
    };

    let mut objects: Vec<(String, u64)> = store
        .list(&paths::job_dir(job))
        .await?
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    let mut items = Vec::new();
    let mut scratch = Vec::new();
    let chunk_dir = ctx.scratch.join("chunks").join(job.as_str());
    if let Some(reason) = keeps_records {
        // Only the chunks of a done job: a failed one needs them to be revived.
        if state == JobState::Done {
            items.extend(
                objects
                    .iter()
                    .filter(|(p, _)| p.contains("/chunks/"))
                    .map(|(p, b)| Item {
                        path: p.clone(),
                        bytes: *b,
                    }),
            );
            scratch.extend(local_item(&chunk_dir));
        }
        return Ok(Removal {
            job: job.clone(),
            state,
            store: items,
            logs: Vec::new(),
            scratch,
            dead_letters: 0,
            keeps_records: Some(reason),
        });
    }

    // Done markers first, then chunks, the rest of the records, the manifest, and the mark last.
    let rank = |path: &str| {
        if path.contains("/done/") {
            0
        } else if path.contains("/chunks/") {
            1
        } else if path.ends_with("/manifest.json") {
            4
        } else if path.ends_with("/removing.json") {
            5
        } else {
            3
        }
    };
    objects.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    let (before, records): (Vec<_>, Vec<_>) = objects.into_iter().partition(|(p, _)| rank(p) < 3);
    let item = |(path, bytes): (String, u64)| Item { path, bytes };
    items.extend(before.into_iter().map(item));

    // The output's copy in the store: the user's result, unless `process` already wrote it out.
    if let Some(claim) = &claim
        && claim.job == *job
        && let Some(meta) = store.head(&claim.output).await?
    {
        let copied_out = request.as_ref().is_some_and(|r| {
            std::fs::metadata(&r.output).is_ok_and(|m| m.is_file() && m.len() == meta.size)
        });
        if options.outputs || copied_out {
            items.push(Item {
                path: claim.output.clone(),
                bytes: meta.size,
            });
            let owner = paths::output_owner(&claim.output);
            if store
                .get_json::<OutputClaim>(&owner)
                .await
                .ok()
                .flatten()
                .is_some_and(|o| o.job == *job)
            {
                items.push(Item {
                    path: owner,
                    bytes: 0,
                });
            }
        }
    }
    // The input copy `process` made, unless a job that stays reads it.
    if let Some(source) = source.as_deref().filter(|s| s.starts_with("process/"))
        && !kept_sources.contains(source)
        && let Some(meta) = store.head(source).await?
    {
        items.push(Item {
            path: source.to_owned(),
            bytes: meta.size,
        });
    }
    items.extend(records.into_iter().map(item));
    if !resuming {
        // The mark goes first in fact (see `remove`), and last in the list.
        items.push(Item {
            path: paths::removing(job),
            bytes: 0,
        });
    }

    let logs = ctx
        .logs
        .list(&paths::log_dir(job))
        .await?
        .into_iter()
        .map(|m| Item {
            path: m.location.to_string(),
            bytes: m.size,
        })
        .collect();

    scratch.extend(local_item(&chunk_dir));
    if let Some(m) = &manifest
        && !kept_versions.contains(&m.source.version)
    {
        let pin = ctx
            .scratch
            .join("sources")
            .join(m.source.fingerprint().file_name(m.source.extension()));
        scratch.extend(local_item(&pin));
    }
    let dead_letters = crate::dlq::list(ctx.queue.as_ref(), &dead_letters_of(job))
        .await?
        .len() as u64;
    Ok(Removal {
        job: job.clone(),
        state,
        store: items,
        logs,
        scratch,
        dead_letters,
        keeps_records: None,
    })
}

fn dead_letters_of(job: &JobId) -> crate::dlq::Filter {
    crate::dlq::Filter {
        job: Some(job.to_string()),
        ..Default::default()
    }
}

/// A local file or folder with its size, if it exists.
fn local_item(path: &Path) -> Option<Item> {
    let bytes = size_of(path)?;
    Some(Item {
        path: path.display().to_string(),
        bytes,
    })
}

fn size_of(path: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return Some(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        total += size_of(&entry.path()).unwrap_or(0);
    }
    Some(total)
}

/// Carries out a planned removal (see the module docs for the order).
pub async fn remove(ctx: &Context, removal: &Removal) -> Result<(), CleanError> {
    let mark = paths::removing(&removal.job);
    let whole = removal.keeps_records.is_none();
    if whole && removal.store.iter().any(|i| i.path == mark) {
        ctx.store
            .put_json(&mark, &serde_json::json!({ "at": now_secs() }))
            .await?;
    }
    if removal.dead_letters > 0 {
        crate::dlq::bulk(
            ctx.queue.as_ref(),
            None,
            &dead_letters_of(&removal.job),
            false,
            false,
            |_| {},
        )
        .await
        .map_err(|e| match e {
            crate::dlq::DlqError::Queue(e) => CleanError::Queue(e),
            crate::dlq::DlqError::Store(e) => CleanError::Store(e),
        })?;
    }
    for item in &removal.scratch {
        remove_local(Path::new(&item.path))?;
    }
    for item in &removal.logs {
        ctx.logs.delete(&item.path).await?;
    }
    let (markers, rest): (Vec<&Item>, Vec<&Item>) = removal
        .store
        .iter()
        .filter(|i| i.path != mark)
        .partition(|i| i.path.contains("/done/"));
    for item in markers {
        ctx.store.delete(&item.path).await?;
    }
    crate::fault::hit("clean.after-markers").map_err(|e| CleanError::Io {
        path: paths::job_dir(&removal.job),
        source: std::io::Error::other(e),
    })?;
    for item in rest {
        ctx.store.delete(&item.path).await?;
    }
    if whole {
        ctx.store.delete(&mark).await?;
    }
    // A local store keeps the folders of what it deleted: remove those left empty.
    let folders = removal
        .store
        .iter()
        .map(|i| (&ctx.store, i.path.as_str()))
        .chain(removal.logs.iter().map(|i| (&ctx.logs, i.path.as_str())));
    for (store, path) in folders {
        let mut parent = Path::new(path).parent();
        // Up to, not including, the top-level folder.
        while let Some(dir) = parent.filter(|d| d.components().count() > 1) {
            if let Some(local) = store.local_path(&dir.to_string_lossy()) {
                // Fails, as it should, while the folder holds anything.
                let _ = std::fs::remove_dir(local);
            }
            parent = dir.parent();
        }
    }
    if whole {
        for (store, dir) in [
            (&ctx.store, paths::job_dir(&removal.job)),
            (&ctx.logs, paths::log_dir(&removal.job)),
        ] {
            if let Some(local) = store.local_path(&dir) {
                remove_empty_dirs(&local);
            }
        }
    }
    Ok(())
}

fn remove_local(path: &Path) -> Result<(), CleanError> {
    let io = |source| CleanError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
        Ok(m) if m.is_dir() => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        },
        Ok(_) => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        },
    }
}

/// Removes the empty folders a local store leaves behind a removed job (best effort).
fn remove_empty_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let subdirs: BTreeSet<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for sub in subdirs {
        remove_empty_dirs(&sub);
    }
    let _ = std::fs::remove_dir(dir);
}
