//! The style stage, run by workers: one batch message in, one encoded chunk and its done marker
//! out, then `stitch` if this batch completed the set.
//!
//! Order of side effects (all before the message is completed, all idempotent): decode exactly the
//! batch's frames (seeking, never from the start), style them in model batches, encode the chunk
//! with the source's timestamps, write the chunk (a redelivery overwrites the same name), write the
//! done marker create-only, post `stitch` when every batch is done. A redelivered batch whose
//! marker exists only re-checks the stitch condition.
//!
//! A worker handles [`IN_FLIGHT`] batches at once: one on the device, the next one being fetched
//! and decoded, the previous one being encoded and uploaded. The device takes one batch at a time
//! (the model lock): a batch waits for it with its frames decoded. When the worker shuts down, a
//! batch waiting behind another is released at once, for another worker to take; the one on the
//! device (or the first to find it free) gets the grace period to finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use stylefleet_models::{Frame, StyleOptions, StyleSpec, Stylizer};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::{DoneMarker, Manifest, extension_of, now_secs, paths};
use crate::message::{BatchMessage, StitchMessage};
use crate::queue::{BATCHES, Delivery, STITCH};
use crate::settings::DeviceChoice;
use crate::stage::{Context, Failure, JobLog, Outcome, StageError};

/// Batches a worker handles at once (see the module docs).
pub const IN_FLIGHT: usize = 2;

/// [`IN_FLIGHT`], or what `STYLEFLEET_IN_FLIGHT` says (at least 1; benchmarks compare 1 and 2).
pub fn in_flight() -> usize {
    std::env::var("STYLEFLEET_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(IN_FLIGHT, |n| n.max(1))
}

/// A worker's model, loaded once per process and re-conditioned when the style changes.
#[derive(Default)]
pub struct StyleStage {
    /// The model lock: the last style used and its ready network (consecutive batches of a job
    /// reuse it). Held while a batch is on the device, so batches take the device in turn.
    current: tokio::sync::Mutex<Option<(String, Arc<Stylizer>)>>,
    /// The device every network runs on.
    device: Option<candle_core::Device>,
    /// The decoder of the last batch, kept open so that the next batch of the same source reads
    /// on instead of decoding again from a keyframe (see [`crate::media::reader`]). Held while
    /// a batch decodes: batches in flight decode in turn.
    reader: tokio::sync::Mutex<Option<crate::media::FrameReader>>,
    /// Cancelled when the worker shuts down: a batch still waiting for the device is released.
    stopping: CancellationToken,
}

impl std::fmt::Debug for StyleStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StyleStage")
            .field("device", &self.device)
            .finish()
    }
}

/// How the work on a batch ended without an error.
enum Ran {
    /// Styled and stored (or found done already).
    Done,
    /// Released before styling: the worker is shutting down.
    Released,
}

impl StyleStage {
    /// A stage that runs on `device`.
    pub fn new(device: candle_core::Device) -> Self {
        Self {
            current: Default::default(),
            device: Some(device),
            reader: Default::default(),
            stopping: CancellationToken::new(),
        }
    }

    /// Releases batches still waiting for the device once `shutdown` is cancelled.
    pub fn stopping_with(mut self, shutdown: CancellationToken) -> Self {
        self.stopping = shutdown;
        self
    }

    /// Handles one batch delivery.
    pub async fn handle(&self, ctx: &Context, delivery: &Delivery) -> Outcome {
        let message = match BatchMessage::parse(&delivery.body) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::DeadLetter {
                    reason: e.reason().into(),
                    description: e.to_string(),
                };
            }
        };
        let manifest = match ctx
            .store
            .get_json::<Manifest>(&paths::manifest(&message.job))
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Outcome::DeadLetter {
                    reason: "UnknownJob".into(),
                    description: format!("job {} has no manifest", message.job),
                };
            }
            Err(e) => {
                return ctx.outcome(
                    Err(e.into()),
                    delivery.delivery_count,
                    "reading the manifest",
                );
            }
        };
        let planned = manifest.batches.iter().find(|b| b.index == message.batch);
        if planned.map(|b| b.frames) != Some(message.frames) {
            return Outcome::DeadLetter {
                reason: "InvalidMessage".into(),
                description: format!(
                    "batch {} frames {:?} is not in job {}'s plan",
                    message.batch, message.frames, message.job
                ),
            };
        }
        let attempt = delivery.delivery_count;
        let mut log = JobLog::new(
            &message.job,
            format!("batch-{:05}.attempt-{attempt}", message.batch),
        );
        let result = match self.run(ctx, &manifest, &message, attempt, &mut log).await {
            Ok(Ran::Released) => {
                log.info("released before styling: shutting down");
                log.flush(&ctx.logs).await;
                return Outcome::Release {
                    reason: "the worker is shutting down; not styled yet".into(),
                };
            }
            Ok(Ran::Done) => Ok(()),
            Err(e) => Err(e),
        };
        let what = format!("batch {} of job {}", message.batch, message.job);
        let outcome = ctx.outcome(result, attempt, &what);
        match &outcome {
            Outcome::Complete | Outcome::Release { .. } => {}
            Outcome::Retry { reason, delay } => {
                log.warn(format!("will retry in {delay:?}: {reason}"))
            }
            Outcome::DeadLetter {
                reason,
                description,
            } => {
                log.warn(format!("failed for good ({reason}): {description}"));
                ctx.fail_batch(
                    &message.job,
                    &manifest.source.path,
                    Some(message.batch),
                    manifest.batches.len() as u32,
                    description,
                )
                .await;
            }
        }
        log.flush(&ctx.logs).await;
        outcome
    }

    async fn run(
        &self,
        ctx: &Context,
        manifest: &Manifest,
        message: &BatchMessage,
        attempt: u32,
        log: &mut JobLog,
    ) -> Result<Ran, StageError> {
        let job = &message.job;
        let started_at = now_secs();
        if ctx.store.exists(&paths::done(job, message.batch)).await? {
            log.info("already done (redelivery)");
            post_follow_ups(ctx, manifest, message.batch, log).await?;
            return Ok(Ran::Done);
        }
        let range = message.range();
        let mut timings = std::collections::BTreeMap::new();

        let frame_count = range.end - range.start;
        let step = |name: &'static str| {
            tracing::info_span!(
                "step",
                otel.name = name,
                stylefleet.job = %job,
                // Signed: the span layer exports unsigned values as text.
                stylefleet.batch = i64::from(message.batch),
                stylefleet.frames = i64::try_from(frame_count).unwrap_or(i64::MAX),
            )
        };
        let started = Instant::now();
        let source = ctx
            .pinned_source(manifest)
            .instrument(step("style.fetch_source"))
            .await?;
        let frames = async {
            let mut reader = self.reader.lock().await;
            crate::media::decode_frames_with(&mut reader, &source, &manifest.probe, range.clone())
                .await
        }
        .instrument(step("style.decode"))
        .await
        .map_err(|e| StageError::media(format!("decoding frames {range:?}"), e))?;
        timings.insert("decode".to_owned(), started.elapsed().as_secs_f64());
        log.info(format!("decoded {} frames {range:?}", frames.len()));

        // The device, in turn. When the worker is stopping, a batch that finds the device free
        // goes on (it is the batch in hand, which gets the grace period); one that would wait
        // behind another is released at once for another worker.
        let mut current = tokio::select! {
            biased;
            current = self.current.lock() => current,
            () = self.stopping.cancelled() => return Ok(Ran::Released),
        };
        let styling = step("style.style");
        let started = Instant::now();
        let stylizer = self
            .stylizer(ctx, manifest, &mut current)
            .instrument(styling.clone())
            .await?;
        let (width, height) = (manifest.probe.video.width, manifest.probe.video.height);
        let model_batch = manifest.model_batch.max(1) as usize;
        // Dropping this future (a lost lock, an abort) does not stop a blocking task: the flag
        // does, between model calls, so the device is free for the next delivery.
        let abandoned = AbandonOnDrop::default();
        let stop = abandoned.flag();
        let styled = tokio::task::spawn_blocking(move || {
            style_frames(&stylizer, frames, width, height, model_batch, &stop)
        })
        .instrument(styling)
        .await
        .map_err(|e| StageError::Transient(Failure::new("the style task stopped", e)))??;
        drop(current);
        crate::telemetry::metrics::frames(styled.len() as u64);
        let style_secs = started.elapsed().as_secs_f64();
        timings.insert("style".to_owned(), style_secs);
        log.info(format!(
            "styled {} frames in {style_secs:.2} s",
            styled.len()
        ));

        let started = Instant::now();
        let chunk_dir = ctx.scratch.join("chunks").join(job.as_str());
        tokio::fs::create_dir_all(&chunk_dir).await.map_err(|e| {
            StageError::Transient(Failure::new(
                format!("cannot create {}", chunk_dir.display()),
                e,
            ))
        })?;
        let chunk_file = chunk_dir.join(format!("{:05}.mp4", message.batch));
        crate::media::encode_chunk(
            &styled,
            &manifest.probe,
            range.clone(),
            &chunk_file,
            &manifest.encoder,
        )
        .instrument(step("style.encode"))
        .await
        .map_err(|e| StageError::media("encoding the chunk", e))?;
        ctx.store
            .upload(&chunk_file, &paths::chunk(job, message.batch), false)
            .instrument(step("style.upload"))
            .await?;
        crate::fault::hit("batch.after-chunk")?;
        let _ = tokio::fs::remove_file(&chunk_file).await;
        timings.insert("encode".to_owned(), started.elapsed().as_secs_f64());

        let marker = DoneMarker {
            batch: message.batch,
            frames: range.end - range.start,
            timings,
            worker: ctx.worker_name.clone(),
            encoder: Some(manifest.encoder.encoder().await.to_owned()),
            at: now_secs(),
            started_at: Some(started_at),
            attempt: Some(attempt),
        };
        ctx.store
            .put_json_create(&paths::done(job, message.batch), &marker)
            .await?;
        crate::fault::hit("batch.after-marker")?;
        log.info("chunk and done marker written");
        post_follow_ups(ctx, manifest, message.batch, log).await?;
        crate::fault::hit("batch.before-settle")?;
        Ok(Ran::Done)
    }

    /// The network for this manifest's style, reused across batches of the same style.
    async fn stylizer(
        &self,
        ctx: &Context,
        manifest: &Manifest,
        current: &mut Option<(String, Arc<Stylizer>)>,
    ) -> Result<Arc<Stylizer>, StageError> {
        // The image's content hash is part of the key: a new image under the same name is
        // another style, never the cached network of the old one.
        let key = format!(
            "{}|{}|{}",
            manifest.style.identity(),
            manifest.style.strength,
            manifest.style.preserve_colour
        );
        if let Some((loaded, stylizer)) = current.as_ref()
            && *loaded == key
        {
            return Ok(stylizer.clone());
        }
        let spec = match manifest.style.image_path() {
            Some(image) => {
                let (_, local) = ctx
                    .store
                    .fetch_pinned(
                        image,
                        manifest.style.image.as_ref(),
                        &ctx.scratch.join("styles"),
                        extension_of(image),
                    )
                    .await?;
                StyleSpec::Image(local)
            }
            None => manifest
                .style
                .spec
                .parse::<StyleSpec>()
                .map_err(|e| StageError::Permanent(Failure::of(e)))?,
        };
        let options = StyleOptions {
            strength: manifest.style.strength,
            preserve_colour: manifest.style.preserve_colour,
        };
        let device = match &self.device {
            Some(d) => d.clone(),
            None => candle_core::Device::Cpu,
        };
        let stylizer = tokio::task::spawn_blocking(move || Stylizer::new(&spec, options, &device))
            .await
            .map_err(|e| StageError::Transient(Failure::new("the model task stopped", e)))?
            .map_err(|e| {
                // The local copy's name is a hash: name the image as the user knows it.
                let what = match manifest.style.image_path() {
                    Some(image) => format!("cannot load the style image {image}"),
                    None => "cannot load the style".to_owned(),
                };
                StageError::Permanent(Failure::new(what, e))
            })?;
        let stylizer = Arc::new(stylizer);
        *current = Some((key, stylizer.clone()));
        Ok(stylizer)
    }
}

/// A flag raised when its owner is dropped: the async side of a blocking task tells the task
/// that nobody waits for its result any more.
#[derive(Default)]
struct AbandonOnDrop(Arc<AtomicBool>);

impl AbandonOnDrop {
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Styles frames in model batches of `model_batch`.
fn style_frames(
    stylizer: &Stylizer,
    frames: Vec<Vec<u8>>,
    width: u32,
    height: u32,
    model_batch: usize,
    stop: &AtomicBool,
) -> Result<Vec<Vec<u8>>, StageError> {
    let mut out = Vec::with_capacity(frames.len());
    let mut frames = frames.into_iter().peekable();
    while frames.peek().is_some() {
        if stop.load(Ordering::Relaxed) {
            return Err(StageError::transient(
                "styling abandoned (the work was given up)",
            ));
        }
        let batch: Vec<Frame> = frames
            .by_ref()
            .take(model_batch)
            .map(|data| Frame {
                width,
                height,
                data,
            })
            .collect();
        let styled = stylizer
            .style_batch(&batch)
            .map_err(|e| StageError::Permanent(Failure::new("styling", e)))?;
        out.extend(styled.into_iter().map(|f| f.data));
    }
    Ok(out)
}

/// What a finished batch owes the job: the batch `window` places after it (the splitter queued
/// only the first `window`), and `stitch` once every batch of the plan has its done marker.
/// Several workers may post the same message; ids make duplicates collapse and every handler is
/// idempotent anyway. A redelivered batch that was already done runs this again, so a crash
/// between the done marker and these sends loses nothing.
pub async fn post_follow_ups(
    ctx: &Context,
    manifest: &Manifest,
    batch: u32,
    log: &mut JobLog,
) -> Result<(), StageError> {
    let done = ctx.store.list(&paths::done_dir(&manifest.job)).await?;
    let done: std::collections::HashSet<String> = done
        .iter()
        .filter_map(|m| m.location.filename().map(str::to_owned))
        .collect();
    if done.len() >= manifest.batches.len() {
        let stitch = StitchMessage::new(manifest.job.clone()).to_outgoing();
        ctx.queue.send(STITCH, vec![stitch]).await?;
        log.info("all batches done: posted stitch");
        return Ok(());
    }
    let next = batch.saturating_add(manifest.window.max(1));
    if let Some(plan) = manifest.batches.iter().find(|b| b.index == next)
        && !done.contains(&format!("{next:05}.json"))
    {
        let message = BatchMessage::new(manifest.job.clone(), next, plan.frames[0]..plan.frames[1]);
        ctx.queue.send(BATCHES, vec![message.to_outgoing()]).await?;
    }
    Ok(())
}

/// Why the chosen device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `cuda` was asked for and there is none.
    #[error("cuda: no GPU is available (or this build has no CUDA support)")]
    NoGpu,
    /// The device would not open.
    #[error(transparent)]
    Model(#[from] stylefleet_models::ModelError),
}

impl DeviceChoice {
    /// The device this choice names.
    pub fn select(self) -> Result<candle_core::Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
            DeviceChoice::Auto => Ok(stylefleet_models::device(true)?),
            DeviceChoice::Cuda => {
                let device = stylefleet_models::device(true)?;
                if device.is_cpu() {
                    return Err(DeviceError::NoGpu);
                }
                Ok(device)
            }
        }
    }
}
