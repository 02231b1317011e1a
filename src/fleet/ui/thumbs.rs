//! Thumbnails of a job's latest styled frame and of the source frame it was made from: the last
//! frame of a done chunk (or of the same frame in the job's output, once chunks are cleaned up),
//! and the same frame of the pinned source, each as a small JPEG.
//!
//! A done chunk never changes (chunks are written create-only, then marked done), so the pair is
//! made once per chunk and kept in memory by its key (job, batch); a job's older pairs are
//! dropped when a newer chunk's pair is made. One pair is made at a time: each is two ffmpeg runs,
//! on the machine the workers use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};

use crate::job::{JobId, Manifest, Status, paths};
use crate::media::{MediaError, decode_frames, jpeg_thumbnail, probe};
use crate::stage::Context;
use crate::store::StoreError;

/// The widest a thumbnail is, in pixels.
pub const MAX_WIDTH: u32 = 240;

/// A styled frame and its source frame, as JPEGs.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The source frame.
    pub source: Bytes,
    /// The same frame, styled (from the chunk).
    pub styled: Bytes,
}

/// Why a pair could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    /// The job, the batch or its done marker does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// ffmpeg or ffprobe failed.
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// A chunk's pair, made once: concurrent requests wait for the same making, and a failed making
/// leaves the cell empty so that a later request tries again.
type Slot = Arc<OnceCell<Pair>>;

/// The made pairs, by chunk key.
#[derive(Debug)]
pub struct Thumbnails {
    ctx: Context,
    /// One slot per chunk key (job, batch).
    made: Mutex<HashMap<(JobId, u32), Slot>>,
    /// Makes one pair at a time: a page opened on many jobs must not start ffmpeg for each at once.
    making: Semaphore,
}

impl Thumbnails {
    /// Thumbnails of the jobs in `ctx`'s store.
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            made: Mutex::new(HashMap::new()),
            making: Semaphore::new(1),
        }
    }

    /// The pair for `job`'s chunk `batch`, made now if it was not yet.
    pub async fn get(&self, job: &JobId, batch: u32) -> Result<Pair, ThumbError> {
        let cell = {
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            let key = (job.clone(), batch);
            if !made.contains_key(&key) {
                // The page shows a job's latest chunk only: its older pairs are no longer asked for.
                made.retain(|(j, b), _| j != job || *b > batch);
            }
            made.entry(key).or_default().clone()
        };
        let pair = cell
            .get_or_try_init(|| async {
                let _permit = self.making.acquire().await;
                make(&self.ctx, job, batch).await
            })
            .await?;
        Ok(pair.clone())
    }
}

/// Makes the pair for `job`'s chunk `batch`: its last frame, and the same frame of the source.
async fn make(ctx: &Context, job: &JobId, batch: u32) -> Result<Pair, ThumbError> {
    // A chunk without its done marker may be the leftover of an attempt that failed.
    if !ctx.store.exists(&paths::done(job, batch)).await? {
        return Err(ThumbError::NotFound(format!(
            "batch {batch} of job {job} is not done"
        )));
    }
    let Some(manifest) = ctx
        .store
        .get_json::<Manifest>(&paths::manifest(job))
        .await?
    else {
        return Err(ThumbError::NotFound(format!("no job {job}")));
    };
    let Some(plan) = manifest.batches.iter().find(|b| b.index == batch) else {
        return Err(ThumbError::NotFound(format!(
            "job {job} has no batch {batch}"
        )));
    };
    let (Some(in_chunk), Some(frame)) = (plan.len().checked_sub(1), plan.frames[1].checked_sub(1))
    else {
        return Err(ThumbError::NotFound(format!("batch {batch} is empty")));
    };
    // The frames as stored; both turn upright by the source's rotation, which the chunks keep.
    let rotation = manifest.probe.video.rotation;

    let source = ctx.pinned_source(&manifest).await?;
    let v = &manifest.probe.video;
    let decoded = first(decode_frames(&source, &manifest.probe, frame..frame + 1).await?)?;
    let source = jpeg_thumbnail(&decoded, v.width, v.height, rotation, MAX_WIDTH).await?;

    // The chunk, or (once the chunks are cleaned up) the job's output, which has the same frames.
    let chunk_path = paths::chunk(job, batch);
    let (styled_path, index) = if ctx.store.exists(&chunk_path).await? {
        (chunk_path, in_chunk)
    } else {
        match ctx.store.get_json::<Status>(&paths::status(job)).await? {
            Some(Status {
                output: Some(output),
                ..
            }) => (output, frame),
            _ => {
                return Err(ThumbError::NotFound(format!(
                    "the chunk of batch {batch} of job {job} is gone"
                )));
            }
        }
    };
    let scratch = ctx.scratch.join("thumbnails");
    let local = ctx
        .store
        .materialize(&styled_path, &scratch, &format!("{job}-{batch:05}.mp4"))
        .await?;
    let styled = async {
        let styled_probe = probe(&local).await?;
        let c = &styled_probe.video;
        let decoded = first(decode_frames(&local, &styled_probe, index..index + 1).await?)?;
        Ok::<_, ThumbError>(jpeg_thumbnail(&decoded, c.width, c.height, rotation, MAX_WIDTH).await?)
    }
    .await;
    if ctx.store.local_path(&styled_path).is_none() {
        // A copy downloaded for this pair only.
        let _ = tokio::fs::remove_file(&local).await;
    }
    Ok(Pair {
        source: source.into(),
        styled: styled?.into(),
    })
}

/// The one frame a one-frame decode returned.
fn first(frames: Vec<Vec<u8>>) -> Result<Vec<u8>, ThumbError> {
    frames
        .into_iter()
        .next()
        .ok_or_else(|| ThumbError::NotFound("the decode returned no frame".into()))
}
