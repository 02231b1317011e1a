//! Jobs: the id derived from the source's identity, the plan written once (the manifest), the
//! status snapshot, and where each of them lives in the store.
//!
//! A job's state is derived from create-only markers, never from a shared read-modify-write file:
//! the manifest says the job exists, `done/<batch>.json` markers count progress, `failed/<batch>.json`
//! records a permanent batch failure (cleared in effect once that batch is done after a replay), and
//! the output claim plus `status.json` record the end. `status.json` is a snapshot each stage writes
//! at its own transition, for people and tools; [`JobView`] recomputes the truth from the markers.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::media::{EncoderSettings, Probe};
use crate::store::Fingerprint;

/// A job id: 16 lowercase hex digits, the first 64 bits of a SHA-256 over the source's identity,
/// the style and the settings. Validated on parse so that no id can escape its folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Derives the id of the job for `source` (its store path and version tag: ETag, or size and
    /// modification time), styled with `style` under `settings` (any stable serialisation).
    pub fn derive(source_path: &str, source_version: &str, style: &str, settings: &str) -> Self {
        let mut hash = Sha256::new();
        for part in [source_path, source_version, style, settings] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let digest = hash.finalize();
        JobId(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses an id, refusing anything that is not 16 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self, InvalidJobId> {
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(JobId(s.to_owned()))
        } else {
            Err(InvalidJobId(s.chars().take(64).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A string that is not a job id.
#[derive(Debug, thiserror::Error)]
#[error("not a job id: {0:?} (expected 16 lowercase hex digits)")]
pub struct InvalidJobId(String);

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        JobId::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job's objects live (see the storage layout in the design).
pub mod paths {
    use super::JobId;

    /// `jobs/<job>/manifest.json`
    pub fn manifest(job: &JobId) -> String {
        format!("jobs/{job}/manifest.json")
    }
    /// `jobs/<job>/status.json`
    pub fn status(job: &JobId) -> String {
        format!("jobs/{job}/status.json")
    }
    /// `jobs/<job>/chunks/<batch:05>.mp4`
    pub fn chunk(job: &JobId, batch: u32) -> String {
        format!("jobs/{job}/chunks/{batch:05}.mp4")
    }
    /// `jobs/<job>/done/` (prefix of the done markers)
    pub fn done_dir(job: &JobId) -> String {
        format!("jobs/{job}/done")
    }
    /// `jobs/<job>/done/<batch:05>.json`
    pub fn done(job: &JobId, batch: u32) -> String {
        format!("jobs/{job}/done/{batch:05}.json")
    }
    /// `jobs/<job>/failed/` (prefix of the permanent failure records)
    pub fn failed_dir(job: &JobId) -> String {
        format!("jobs/{job}/failed")
    }
    /// `jobs/<job>/failed/<batch:05>.json`
    pub fn failed(job: &JobId, batch: u32) -> String {
        format!("jobs/{job}/failed/{batch:05}.json")
    }
    /// `jobs/<job>/rejected.json`: the splitter refused the input.
    pub fn rejected(job: &JobId) -> String {
        format!("jobs/{job}/rejected.json")
    }
    /// `jobs/<job>/failed/stitch.json`: the stitch failed for good.
    pub fn failed_stitch(job: &JobId) -> String {
        format!("jobs/{job}/failed/stitch.json")
    }
    /// `jobs/<job>/output.json`: which output path this job claimed (written once).
    pub fn output_claim(job: &JobId) -> String {
        format!("jobs/{job}/output.json")
    }
    /// `jobs/outputs/<style>/<name>.mp4.json`: which job owns the output name `output/<style>/<name>.mp4`.
    /// Created create-only, it is the atomic claim of a name that two jobs may both want (the same
    /// file name uploaded twice, one clip at two strengths). `outputs` is not a job id, so job
    /// listings skip it.
    pub fn output_owner(output: &str) -> String {
        let name = output.strip_prefix("output/").unwrap_or(output);
        format!("jobs/outputs/{name}.json")
    }
    /// `jobs/<job>/stitch-lease.json`: who is stitching the job now, until when.
    pub fn stitch_lease(job: &JobId) -> String {
        format!("jobs/{job}/stitch-lease.json")
    }
    /// `logs/<job>/<name>.log`
    pub fn log(job: &JobId, name: &str) -> String {
        format!("logs/{job}/{name}.log")
    }
    /// `logs/<job>/` (prefix of the job's logs, in the log store)
    pub fn log_dir(job: &JobId) -> String {
        format!("logs/{job}")
    }
    /// `jobs/<job>/request.json`: the local files a `process` command named (see
    /// [`Request`](super::Request)); absent for jobs of the fleet's `input/` folder.
    pub fn request(job: &JobId) -> String {
        format!("jobs/{job}/request.json")
    }
    /// `jobs/<job>/removing.json`: written first when a job is removed, deleted last, so that a
    /// removal cut short is seen as one (and finished by the next `clean`).
    pub fn removing(job: &JobId) -> String {
        format!("jobs/{job}/removing.json")
    }
    /// `jobs/<job>/` (prefix of everything the job keeps in the store)
    pub fn job_dir(job: &JobId) -> String {
        format!("jobs/{job}")
    }
    /// `logs/consumers/` (in the log store): presence records of the running consume loops (see
    /// [`crate::presence`]). `consumers` is not a job id, so job listings skip it.
    pub const CONSUMERS: &str = "logs/consumers";
}

/// The local files a `process` command was given, recorded so that `status` names the job the way
/// the user did (the file name, the `-o` path) rather than by its content-addressed copy in the
/// store. Overwritten by each run of the job: the latest names win.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The input video as given (made absolute).
    pub input: String,
    /// The `-o` path (made absolute).
    pub output: String,
    /// Seconds since the epoch.
    pub at: f64,
}

/// The source video a job styles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Path in the store, e.g. `input/mosaic/clip.mp4`.
    pub path: String,
    /// `sha256:<hex>` of the bytes the job was planned from: the only version its readers use.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's ETag of that version, for conditional reads (`If-Match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl Source {
    /// The pinned version, as the store's readers check it.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            sha256: self.version.clone(),
            etag: self.etag.clone(),
            size: self.size,
        }
    }

    /// The file extension of the source path (`bin` without one), for local copies.
    pub fn extension(&self) -> &str {
        extension_of(&self.path)
    }
}

/// The extension of a store path (`bin` without one).
pub fn extension_of(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or(path, |(_, name)| name)
        .rsplit_once('.')
        .map_or("bin", |(_, ext)| ext)
}

/// How frames are styled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleChoice {
    /// The style as the user gave it: an index, a name, a blend, or `image:<store path>`.
    pub spec: String,
    /// Blend with the original, 0..=1.
    pub strength: f32,
    /// Keep the original's chroma.
    pub preserve_colour: bool,
    /// The version of the style image (`image:` specs), pinned by the splitter: a new image under
    /// the same name is another job, and workers style only with these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Fingerprint>,
}

impl StyleChoice {
    /// A style as the user gives it, not yet pinned.
    pub fn new(spec: impl Into<String>, strength: f32, preserve_colour: bool) -> Self {
        StyleChoice {
            spec: spec.into(),
            strength,
            preserve_colour,
            image: None,
        }
    }

    /// The store path of the style image, for `image:` specs.
    pub fn image_path(&self) -> Option<&str> {
        self.spec.strip_prefix("image:")
    }

    /// What identifies the style in a job id: the spec, and the image's content for images.
    pub fn identity(&self) -> String {
        match &self.image {
            Some(image) => format!("{}@{}", self.spec, image.sha256),
            None => self.spec.clone(),
        }
    }
}

/// One batch of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// Index, also the chunk's name.
    pub index: u32,
    /// Frame range `[start, end)`.
    pub frames: [u64; 2],
}

impl BatchPlan {
    /// Number of frames.
    pub fn len(&self) -> u64 {
        self.frames[1] - self.frames[0]
    }

    /// Whether the batch is empty (never, in a valid plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts `frame_count` frames into batches of at most `batch_size` frames, of sizes that differ by
/// one at most (the longer ones first), for a fleet of `workers`: the fewest batches whose count
/// is a multiple of `workers` (but never more batches than frames).
///
/// Every batch costs about the same, so the batches make whole rounds of the fleet: 132 frames
/// at 16 for two workers become 10 batches of 14 and 13 (five each) rather than nine of 15 and 14,
/// where one worker styles the ninth alone while the other waits (with them, the two workers of a
/// `process` run on two CPU cores ended 3 s apart). The same rule makes 100 frames at 16 seven batches of 15 and 14 for one worker,
/// not six of 16 and one of 4 that runs alone at the end, and a clip shorter than a batch a batch
/// per worker. Every frame is in exactly one batch, which is the point of doing it here rather
/// than with a division at the call site. A manifest keeps the plan it was made with, so a job
/// resumed by another number of workers keeps its batches.
pub fn plan_batches(frame_count: u64, batch_size: u64, workers: u32) -> Vec<BatchPlan> {
    let batch_size = batch_size.max(1);
    let workers = u64::from(workers.max(1));
    let count = frame_count
        .div_ceil(batch_size)
        .div_ceil(workers)
        .saturating_mul(workers)
        .min(frame_count);
    let (base, longer) = match count {
        0 => (0, 0),
        n => (frame_count / n, frame_count % n),
    };
    let mut start = 0;
    (0..count)
        .map(|i| {
            let len = base + u64::from(i < longer);
            let batch = BatchPlan {
                index: i as u32,
                frames: [start, start + len],
            };
            start += len;
            batch
        })
        .collect()
}

/// The plan, written once (create-only) before any work starts. Resume is "plan minus done".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub v: u32,
    /// The job.
    pub job: JobId,
    /// What is styled.
    pub source: Source,
    /// How.
    pub style: StyleChoice,
    /// What ffprobe said about the source (streams, per-frame timestamps, rotation).
    pub probe: Probe,
    /// The batches.
    pub batches: Vec<BatchPlan>,
    /// How chunks are encoded.
    pub encoder: EncoderSettings,
    /// Frames per model call inside a batch.
    pub model_batch: u32,
    /// Temporal stabilisation at stitch time; absent: off (the chunks are joined as they are,
    /// which is also what a manifest written before the option existed means).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<crate::temporal::TemporalSettings>,
    /// Batch messages of this job queued at a time (see `FloodLimits::max_queued_per_job`).
    pub window: u32,
    /// The output name the job asks for, e.g. `output/mosaic/clip.mp4`; the aggregator claims it,
    /// or `<stem>-<job>.mp4` beside it when another job owns that name.
    pub output: String,
    /// Seconds since the epoch when planned.
    pub created_at: f64,
}

/// The life of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Planned, batches queued.
    Queued,
    /// Some batches done.
    Running,
    /// All batches done, output being stitched.
    Stitching,
    /// Output written and verified.
    Done,
    /// Stopped with a reason (bad input, or a batch that failed permanently).
    Failed,
    /// Not finished, and nothing works on it: no process consumes the queues (a `process` that
    /// was interrupted, a fleet that was stopped). Derived by `status`, never recorded; running
    /// the same command again (or `up`) resumes it.
    Interrupted,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Stitching => "stitching",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        };
        f.write_str(s)
    }
}

/// The snapshot in `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The job.
    pub job: JobId,
    /// The source path.
    pub source: String,
    /// State at the time of writing.
    pub state: JobState,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Batches in the plan (0 when refused before planning).
    pub batches_total: u32,
    /// The output path, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Stage timings in seconds, e.g. `split`, `stitch`, `total`.
    #[serde(default)]
    pub timings: std::collections::BTreeMap<String, f64>,
    /// Seconds since the epoch.
    pub updated_at: f64,
}

/// A done marker: the batch's chunk is written. Its existence is the counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneMarker {
    /// The batch.
    pub batch: u32,
    /// Frames in the chunk (checked against the plan).
    pub frames: u64,
    /// Seconds spent decoding, styling, encoding.
    pub timings: std::collections::BTreeMap<String, f64>,
    /// Which worker did it.
    pub worker: String,
    /// The ffmpeg encoder that wrote the chunk (what `auto` became on that worker); absent in
    /// markers written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// Seconds since the epoch.
    pub at: f64,
    /// When the worker started on the batch (seconds since the epoch); absent in markers written
    /// before it was recorded, whose start is estimated as `at` minus the timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// The delivery that did it (1: the first); absent in older markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl DoneMarker {
    /// When the work on the batch started: recorded, or estimated from the timings.
    pub fn started(&self) -> f64 {
        self.started_at
            .unwrap_or_else(|| self.at - self.timings.values().sum::<f64>())
    }
}

/// A permanent batch failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The batch.
    pub batch: u32,
    /// Why.
    pub reason: String,
    /// Seconds since the epoch.
    pub at: f64,
}

/// Seconds since the Unix epoch, for the records above.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_frame_once_in_balanced_batches() {
        for frames in (0..=70).chain([100, 133, 823, 1000, 7919]) {
            for size in [1, 2, 3, 5, 7, 10, 16, 64] {
                for workers in [1, 2, 3, 8] {
                    let plan = plan_batches(frames, size, workers);
                    let fewest = frames.div_ceil(size);
                    let rounds = fewest.div_ceil(u64::from(workers)) * u64::from(workers);
                    assert_eq!(
                        plan.len() as u64,
                        rounds.min(frames),
                        "{frames}/{size}/{workers}"
                    );
                    if rounds <= frames {
                        assert_eq!(plan.len() as u64 % u64::from(workers), 0, "whole rounds");
                    }
                    let mut next = 0;
                    for (i, b) in plan.iter().enumerate() {
                        assert_eq!(b.index as usize, i);
                        assert_eq!(b.frames[0], next, "contiguous");
                        assert!(!b.is_empty() && b.len() <= size, "{frames}/{size}: {b:?}");
                        next = b.frames[1];
                    }
                    assert_eq!(next, frames, "{frames} frames in batches of {size}");
                    let (min, max) = (
                        plan.iter().map(BatchPlan::len).min(),
                        plan.iter().map(BatchPlan::len).max(),
                    );
                    if let (Some(min), Some(max)) = (min, max) {
                        assert!(max - min <= 1, "{frames}/{size}: sizes {min}..={max}");
                    }
                }
            }
        }
        assert!(plan_batches(0, 16, 1).is_empty());
        assert!(plan_batches(0, 16, 4).is_empty());
    }

    #[test]
    fn plan_spreads_the_tail() {
        let sizes = |frames, size, workers| -> Vec<u64> {
            plan_batches(frames, size, workers)
                .iter()
                .map(BatchPlan::len)
                .collect()
        };
        assert_eq!(sizes(100, 16, 1), [15, 15, 14, 14, 14, 14, 14]);
        assert_eq!(sizes(23, 5, 1), [5, 5, 5, 4, 4]);
        assert_eq!(sizes(32, 16, 1), [16, 16]);
        assert_eq!(sizes(132, 16, 1), [15, 15, 15, 15, 15, 15, 14, 14, 14]);
        assert_eq!(sizes(5, 0, 1), [1, 1, 1, 1, 1], "a size of 0 counts as 1");
        assert_eq!(sizes(5, 16, 0), [5], "no workers counts as one");
    }

    #[test]
    fn plan_makes_whole_rounds_of_the_fleet() {
        let sizes = |frames, size, workers| -> Vec<u64> {
            plan_batches(frames, size, workers)
                .iter()
                .map(BatchPlan::len)
                .collect()
        };
        // Nine batches would leave one worker of two styling the last alone.
        assert_eq!(sizes(132, 16, 2), [14, 14, 13, 13, 13, 13, 13, 13, 13, 13]);
        assert_eq!(sizes(32, 16, 2), [16, 16], "already whole rounds");
        // A clip shorter than a batch still gives every worker a part.
        assert_eq!(sizes(10, 16, 4), [3, 3, 2, 2]);
        // Never more batches than frames.
        assert_eq!(sizes(3, 16, 8), [1, 1, 1]);
    }

    #[test]
    fn job_ids_are_stable_and_distinct() {
        let a = JobId::derive("input/0/a.mp4", "etag1", "0", "{}");
        assert_eq!(a, JobId::derive("input/0/a.mp4", "etag1", "0", "{}"));
        assert_ne!(a, JobId::derive("input/0/a.mp4", "etag2", "0", "{}"));
        assert_ne!(a, JobId::derive("input/0/a.mp4", "etag1", "1", "{}"));
        // The separator keeps concatenations apart.
        assert_ne!(
            JobId::derive("ab", "c", "", ""),
            JobId::derive("a", "bc", "", "")
        );
        assert!(JobId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn job_ids_refuse_paths() {
        for bad in [
            "../../etc/passwd",
            "0123456789ABCDEF",
            "0123",
            "0123456789abcdeg",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }
}
