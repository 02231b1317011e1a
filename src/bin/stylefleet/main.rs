//! The `stylefleet` command line: one video (`process`), the embedded fleet (`up`, `worker`),
//! inspection and repair (`status`, `dlq`), and the models on single images (`style-image`,
//! `styles`).

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use stylefleet::lifecycle::parse_seconds;
use stylefleet::settings::DeviceChoice;

/// Neural style transfer over every frame of a video, in parallel, frame-exact, with its audio.
#[derive(Debug, Parser)]
#[command(name = "stylefleet", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true, env = "STYLEFLEET_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SasKind {
    Upload,
    Download,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Where data and work live. The embedded default needs none of these but `--data`.
#[derive(Debug, Clone, Args)]
struct Location {
    /// Folder of the embedded default: the store, the queue database and scratch space.
    #[arg(long, default_value = "stylefleet-data", env = "STYLEFLEET_DATA")]
    data: PathBuf,
    /// Blob store URL (a folder, `az://<container>`, `https://<account>.blob.core.windows.net/<container>`);
    /// default: `<data>`.
    #[arg(long, env = "STYLEFLEET_STORE")]
    store: Option<String>,
    /// Store for logs (on Azure, the system account); default: the blob store.
    #[arg(long, env = "STYLEFLEET_LOG_STORE")]
    log_store: Option<String>,
    /// Queue URL (an SQLite file, or `servicebus://<namespace>.servicebus.windows.net`); default:
    /// `<data>/queue.sqlite`.
    #[arg(long, env = "STYLEFLEET_QUEUE")]
    queue: Option<String>,
}

/// How work is planned.
#[derive(Debug, Clone, Args)]
struct Planning {
    /// Frames per batch message.
    #[arg(long, default_value_t = stylefleet::settings::DEFAULT_BATCH_FRAMES, value_parser = clap::value_parser!(u64).range(1..))]
    batch_frames: u64,
    /// Frames per model call inside a batch.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    model_batch: u32,
    /// Refuse inputs larger than this many bytes.
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Refuse inputs longer than this many seconds.
    #[arg(long)]
    max_duration: Option<f64>,
    /// Refuse inputs wider or taller than this many pixels.
    #[arg(long)]
    max_side: Option<u32>,
    /// Jobs in flight at most in the fleet; more uploads wait their turn.
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    max_active_jobs: usize,
    /// Batch messages queued at most before a new job is planned.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    max_backlog: u64,
    /// Batch messages of one job queued at a time; finished batches post the next ones.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_queued_per_job: u32,
    /// Temporal stabilisation against flicker: `on`, `off`, or a strength between 0 and 1 (how
    /// much of the previous styled frame, warped along the motion, a still pixel keeps).
    #[arg(long, default_value = "on", env = "STYLEFLEET_TEMPORAL", value_parser = parse_temporal)]
    temporal: Temporal,
}

/// The parsed `--temporal` option (`None`: off).
#[derive(Debug, Clone)]
struct Temporal(Option<stylefleet::temporal::TemporalSettings>);

fn parse_temporal(text: &str) -> Result<Temporal, String> {
    stylefleet::temporal::TemporalSettings::parse_option(text).map(Temporal)
}

/// Style options.
#[derive(Debug, Clone, Args)]
struct StyleArgs {
    /// A built-in style (index or name, see `stylefleet styles`), a blend like `3:0.7,12:0.3`, or a
    /// path to a style image.
    #[arg(long, short = 's')]
    style: String,
    /// Blend the styled frame with the original (0..1).
    #[arg(long, default_value_t = 1.0)]
    strength: f32,
    /// Keep the original's colours, take only the style's strokes and light.
    #[arg(long)]
    preserve_colour: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Style one video through the pipeline and write the result.
    Process {
        /// The video.
        input: PathBuf,
        /// The styled video (default: `<input stem>.styled.mp4` beside the input).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        style: StyleArgs,
        /// Worker processes.
        #[arg(long, default_value_t = 2, value_parser = at_least_one())]
        workers: usize,
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        planning: Planning,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the embedded fleet: watch `<data>/input/<style>/`, scale workers, stitch outputs.
    Up {
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        planning: Planning,
        /// Most worker processes.
        #[arg(long, default_value_t = 2, value_parser = at_least_one())]
        max_workers: usize,
        /// Queued batches per worker (KEDA `messageCount`).
        #[arg(long, default_value_t = 2)]
        messages_per_worker: u64,
        /// Seconds a lower desire must hold before workers are stopped.
        #[arg(long, default_value = "30", value_parser = parse_seconds)]
        cooldown: Duration,
        /// Seconds between looks at the input folder and the queue.
        #[arg(long, default_value = "1", value_parser = parse_seconds)]
        poll: Duration,
        /// Seconds an upload must stay unchanged to count as completely written.
        #[arg(long, default_value = "2", value_parser = parse_seconds)]
        settle: Duration,
        /// Seconds a worker may finish its batch after being asked to stop.
        #[arg(long, default_value = "30", value_parser = parse_seconds)]
        grace: Duration,
    },
    /// Run one worker: style batches from the queue until stopped.
    Worker {
        #[command(flatten)]
        location: Location,
        /// Exit after this many idle seconds.
        #[arg(long, value_parser = parse_seconds)]
        exit_when_idle: Option<Duration>,
        /// Seconds to finish the batch in hand after SIGTERM before releasing it.
        #[arg(long, default_value = "30", env = "STYLEFLEET_SHUTDOWN_GRACE_SECS", value_parser = parse_seconds)]
        grace: Duration,
        /// The device that styles frames.
        #[arg(
            long,
            env = "STYLEFLEET_DEVICE",
            value_enum,
            ignore_case = true,
            default_value_t
        )]
        device: DeviceChoice,
    },
    /// Jobs, their state, progress, throughput and failure reasons.
    Status {
        /// One job (id or unique prefix).
        job: Option<String>,
        #[command(flatten)]
        location: Location,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and repair the dead-letter queues.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Style one image.
    StyleImage {
        /// The image (PNG or JPEG).
        input: PathBuf,
        /// Where to write the styled image.
        #[arg(long, short = 'o')]
        output: PathBuf,
        #[command(flatten)]
        style: StyleArgs,
    },
    /// Mint a short-lived URL for an outside user to upload one video to `input/` or download one
    /// result from `output/` (a user delegation SAS on Azure; never an account key).
    Sas {
        /// `upload` or `download`.
        #[arg(value_enum)]
        direction: SasKind,
        /// The blob, e.g. `input/starry-blue/clip.mp4` or `output/starry-blue/clip.mp4`.
        blob: String,
        /// Lifetime in minutes (at most 24 hours).
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
        /// The data account, `https://<account>.blob.core.windows.net`.
        #[arg(long, env = "STYLEFLEET_STORE")]
        store: String,
    },
    /// List the built-in styles, or render all of them on one picture.
    Styles {
        /// Render a contact sheet of this image in every style.
        #[arg(long, requires = "output")]
        sheet: Option<PathBuf>,
        /// Where to write the sheet.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

/// Filters shared by the dead-letter commands.
#[derive(Debug, Clone, Args)]
struct DlqFilter {
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
enum DlqAction {
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

/// A count of one or more, where a field is a `usize`.
fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

fn main() -> ExitCode {
    let cli: Cli = stylefleet::lifecycle::parse_args();
    stylefleet::lifecycle::main(
        matches!(cli.log_format, LogFormat::Json),
        commands::run(cli.command, cli.log_format),
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn counts_below_one_and_bad_seconds_are_refused() {
        for args in [
            &[
                "stylefleet",
                "process",
                "v.mp4",
                "-s",
                "0",
                "--workers",
                "0",
            ][..],
            &[
                "stylefleet",
                "process",
                "v.mp4",
                "-s",
                "0",
                "--batch-frames",
                "0",
            ],
            &["stylefleet", "up", "--max-workers", "0"],
            &["stylefleet", "up", "--max-active-jobs", "0"],
            &["stylefleet", "up", "--cooldown=-1"],
            &["stylefleet", "up", "--poll", "NaN"],
            &["stylefleet", "worker", "--device", "tpu"],
            &["stylefleet", "dlq", "list", "--older-than", "soon"],
        ] {
            let err = stylefleet::lifecycle::parse_from::<Cli>(args.iter().copied())
                .expect_err(&args.join(" "));
            // A value outside an enum is InvalidValue; one a parser refuses, ValueValidation.
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{args:?}: {err}"
            );
        }
    }
}
