//! Settings shared by every stage: how work is cut up, encoded, limited, retried and stabilised,
//! and which device styles frames ([`DeviceChoice`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::media::{EncoderSettings, Limits};
use crate::temporal::TemporalSettings;

/// Everything a stage needs to know that is not in a message or a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Frames per batch message. See [`DEFAULT_BATCH_FRAMES`].
    pub batch_frames: u64,
    /// Workers the plan of a new job is cut for: the batch count is rounded up to a multiple of
    /// this, so the batches make whole rounds of the fleet (see
    /// [`plan_batches`](crate::job::plan_batches)). How the job runs, not what it makes: it is
    /// not part of the job id, so a job resumed by another number of workers is the same job.
    #[serde(default = "one_worker")]
    pub plan_workers: u32,
    /// Frames per model call inside a batch.
    pub model_batch: u32,
    /// Refusal limits for inputs.
    pub limits: Limits,
    /// How chunks and the output are encoded.
    pub encoder: EncoderSettings,
    /// Flood limits for the embedded fleet.
    pub flood: FloodLimits,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Temporal stabilisation of new jobs (`None`: off); on by default. Each job records its
    /// own in its manifest.
    pub temporal: Option<TemporalSettings>,
}

/// The default batch size: 16 frames.
///
/// A batch pays a fixed cost (an ffmpeg decode that seeks from the previous keyframe, an encode,
/// a few store writes: about 0.2 s for a 720p batch on two cores) and is the unit of redelivery. At
/// 16 frames that fixed cost is a few percent of the styling time on a CPU (about 0.5-1 s a 720p
/// frame) and under a tenth on a GPU, while a 5-second clip still splits into enough batches to
/// keep a handful of workers busy.
pub const DEFAULT_BATCH_FRAMES: u64 = 16;

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_frames: DEFAULT_BATCH_FRAMES,
            plan_workers: 1,
            model_batch: 4,
            limits: Limits::default(),
            encoder: EncoderSettings::default(),
            flood: FloodLimits::default(),
            retry: RetryPolicy::default(),
            temporal: Some(TemporalSettings::default()),
        }
    }
}

fn one_worker() -> u32 {
    1
}

/// Limits on queued work, so that a burst of uploads waits its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodLimits {
    /// Jobs planned but not finished, at most; further uploads wait in `input/`.
    pub max_active_jobs: usize,
    /// Batch messages waiting in the queue, at most, before a new job is planned.
    pub max_backlog: u64,
    /// Batch messages of one job in the queue at a time: the splitter posts the first ones and each
    /// finished batch posts the one this many places after it, so a long video cannot flood the
    /// queue ahead of everyone else's.
    pub max_queued_per_job: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        Self {
            max_active_jobs: 4,
            max_backlog: 512,
            max_queued_per_job: 64,
        }
    }
}

/// Backoff for transient failures: the delay before redelivery grows with the delivery count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub min_delay: Duration,
    /// Cap.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before delivery `delivery_count + 1`, exponential with jitter (from `backon`).
    pub fn delay(&self, delivery_count: u32) -> Duration {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(delivery_count.saturating_sub(1) as usize)
            .unwrap_or(self.max_delay)
    }
}

/// What a worker runs on: its device and the encoder of chunks that leave the choice to it. The
/// worker container and `stylefleet worker` take the same two flags (and variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct WorkerHardware {
    /// The device that styles frames (`cuda` fails at start without a GPU).
    #[arg(
        long,
        env = "STYLEFLEET_DEVICE",
        value_enum,
        ignore_case = true,
        default_value_t
    )]
    pub device: DeviceChoice,
    /// The encoder of chunks whose job leaves it to the worker (`auto`): `auto` probes for
    /// NVENC at start, `libx264` or `h264_nvenc` forces one. A job that names its codec gets it.
    #[arg(
        long,
        env = "STYLEFLEET_CODEC",
        value_enum,
        ignore_case = true,
        default_value_t
    )]
    pub codec: crate::media::Codec,
}

/// Which device styles frames (`--device`, `STYLEFLEET_DEVICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A GPU when the build has CUDA and one is present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A GPU, or fail at start.
    #[value(alias = "gpu")]
    Cuda,
}
