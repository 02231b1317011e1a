//! Arguments shared by several subcommands: where data and work live, how work is planned, and
//! the style.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Args, ValueEnum};
use stylefleet::media::{Codec, EncoderSettings, Preset};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where data and work live. The embedded default needs none of these but `--data`.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// Folder of the embedded default: the store, the queue database and scratch space.
    #[arg(long, default_value = "stylefleet-data", env = "STYLEFLEET_DATA")]
    pub data: PathBuf,
    /// Blob store URL (a folder, `az://<container>`, `https://<account>.blob.core.windows.net/<container>`);
    /// default: `<data>`.
    #[arg(long, env = "STYLEFLEET_STORE")]
    pub store: Option<String>,
    /// Store for logs (on Azure, the system account); default: the blob store.
    #[arg(long, env = "STYLEFLEET_LOG_STORE")]
    pub log_store: Option<String>,
    /// Queue URL (an SQLite file, or `servicebus://<namespace>.servicebus.windows.net`); default:
    /// `<data>/queue.sqlite`.
    #[arg(long, env = "STYLEFLEET_QUEUE")]
    pub queue: Option<String>,
}

/// How work is planned.
#[derive(Debug, Clone, Args)]
pub struct Planning {
    /// Frames per batch message.
    #[arg(long, default_value_t = stylefleet::settings::DEFAULT_BATCH_FRAMES, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_frames: u64,
    /// Frames per model call inside a batch.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub model_batch: u32,
    /// Refuse inputs larger than this many bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,
    /// Refuse inputs longer than this many seconds.
    #[arg(long, value_parser = parse_positive_seconds)]
    pub max_duration: Option<f64>,
    /// Refuse inputs wider or taller than this many pixels.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_side: Option<u32>,
    /// Jobs in flight at most in the fleet; more uploads wait their turn.
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    pub max_active_jobs: usize,
    /// Batch messages queued at most before a new job is planned.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_backlog: u64,
    /// Batch messages of one job queued at a time; finished batches post the next ones.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_per_job: u32,
    /// Temporal stabilisation against flicker: `on`, `off`, or a strength between 0 and 1 (how
    /// much of the previous styled frame, warped along the motion, a still pixel keeps).
    #[arg(long, default_value = "on", env = "STYLEFLEET_TEMPORAL", value_parser = parse_temporal)]
    pub temporal: Temporal,
    #[command(flatten)]
    pub encoding: Encoding,
}

/// How chunks and the output are encoded (recorded in each job's manifest and id).
#[derive(Debug, Clone, Args)]
pub struct Encoding {
    /// Encoder: `auto` is h264_nvenc where the encoding process has a GPU with NVENC (a probe
    /// encode at start decides), else libx264.
    #[arg(
        long,
        env = "STYLEFLEET_CODEC",
        value_enum,
        ignore_case = true,
        default_value_t
    )]
    pub codec: Codec,
    /// x264 speed preset (NVENC: the preset of similar effort, p1..p7).
    #[arg(long, env = "STYLEFLEET_PRESET", value_enum, ignore_case = true,
          default_value_t = stylefleet::media::codec::DEFAULT_PRESET)]
    pub preset: Preset,
    /// Quality: x264's constant rate factor, 0 (lossless) to 51 (worst); NVENC's constant
    /// quality.
    #[arg(long, env = "STYLEFLEET_CRF", default_value_t = stylefleet::media::codec::DEFAULT_CRF,
          value_parser = clap::value_parser!(u8).range(0..=51))]
    pub crf: u8,
}

impl Encoding {
    /// The settings these options ask for.
    pub fn settings(&self) -> EncoderSettings {
        EncoderSettings {
            codec: self.codec.as_str().into(),
            preset: self.preset.as_str().into(),
            crf: self.crf,
            ..EncoderSettings::default()
        }
    }
}

/// The parsed `--temporal` option (`None`: off).
#[derive(Debug, Clone)]
pub struct Temporal(pub Option<stylefleet::temporal::TemporalSettings>);

fn parse_temporal(text: &str) -> Result<Temporal, String> {
    stylefleet::temporal::TemporalSettings::parse_option(text).map(Temporal)
}

/// Style options.
#[derive(Debug, Clone, Args)]
pub struct StyleArgs {
    /// A built-in style (index or name, see `stylefleet styles`), a blend like `3:0.7,12:0.3`, or a
    /// path to a style image.
    #[arg(long, short = 's', value_parser = parse_style)]
    pub style: String,
    /// Blend the styled frame with the original (0..1).
    #[arg(long, default_value_t = 1.0, value_parser = parse_strength)]
    pub strength: f32,
    /// Keep the original's colours, take only the style's strokes and light.
    #[arg(long)]
    pub preserve_colour: bool,
}

/// A `--style` checked before anything is done: an existing image file, or a built-in style, an
/// index or a blend that parses (an unknown name gets the closest one as a hint). A folder, or an
/// image path that does not exist, is refused here rather than by every worker later.
fn parse_style(text: &str) -> Result<String, String> {
    let path = std::path::Path::new(text.trim());
    if path.is_dir() {
        return Err(format!(
            "{} is a folder; give a style name, an index, a blend or an image file",
            path.display()
        ));
    }
    if path.is_file() {
        return Ok(text.to_owned());
    }
    #[cfg(feature = "style")]
    match text.parse::<stylefleet_models::StyleSpec>() {
        Ok(stylefleet_models::StyleSpec::Image(image)) => {
            return Err(format!(
                "the style image {} does not exist",
                image.display()
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(text.to_owned())
}

/// A `--strength` between 0 and 1.
fn parse_strength(text: &str) -> Result<f32, String> {
    let strength: f32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&strength) {
        return Err(format!(
            "the strength must be between 0 and 1 (0 keeps the original, 1 is fully styled), got {text}"
        ));
    }
    Ok(strength)
}

/// A positive, finite number of seconds.
fn parse_positive_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// A count of one or more, where a field is a `usize`.
pub fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}
