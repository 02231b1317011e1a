//! Which encoder writes chunks: the [`Codec`] a job asks for, the x264 [`Preset`] names, the
//! ffmpeg arguments of each encoder, and `auto` resolved once per process: `h264_nvenc` when this
//! ffmpeg lists it and a probe encode of a few frames succeeds (the only sure sign of a GPU with
//! NVENC behind the driver), else `libx264`.
//!
//! A job records the codec it asks for in its manifest (and its id). `auto` is resolved by each
//! process that encodes (workers for chunks, the aggregator for a stabilised output); both
//! choices write H.264 with the same pixel format, and the quality knobs map onto NVENC's:
//! the CRF becomes NVENC's constant quality (`-rc vbr -cq <crf> -b:v 0`), and the x264 preset
//! the NVENC preset of similar effort (`ultrafast` -> `p1` ... `veryslow` -> `p7`).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::command::FfCommand;

/// The encoder a job asks for (`--codec`, `STYLEFLEET_CODEC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Codec {
    /// `h264_nvenc` where the encoding process can run it, else `libx264`.
    #[default]
    Auto,
    /// x264 on the CPU.
    #[value(name = "libx264")]
    Libx264,
    /// NVIDIA's hardware H.264 encoder (fails where there is none).
    #[value(name = "h264_nvenc")]
    H264Nvenc,
}

impl Codec {
    /// The name recorded in a manifest (`auto`, or the ffmpeg encoder).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Auto => "auto",
            Codec::Libx264 => "libx264",
            Codec::H264Nvenc => "h264_nvenc",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Codec as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("{s:?} is not a codec (auto, libx264, h264_nvenc)"))
    }
}

/// x264's speed presets, fastest first (`--preset`, `STYLEFLEET_PRESET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
#[allow(missing_docs)]
pub enum Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
    Placebo,
}

impl Preset {
    /// x264's name of the preset.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Ultrafast => "ultrafast",
            Preset::Superfast => "superfast",
            Preset::Veryfast => "veryfast",
            Preset::Faster => "faster",
            Preset::Fast => "fast",
            Preset::Medium => "medium",
            Preset::Slow => "slow",
            Preset::Slower => "slower",
            Preset::Veryslow => "veryslow",
            Preset::Placebo => "placebo",
        }
    }

    /// The NVENC preset (`p1` fastest .. `p7` best) of about the same effort.
    pub fn nvenc(self) -> &'static str {
        match self {
            Preset::Ultrafast | Preset::Superfast => "p1",
            Preset::Veryfast => "p2",
            Preset::Faster => "p3",
            Preset::Fast => "p4",
            Preset::Medium => "p5",
            Preset::Slow => "p6",
            Preset::Slower | Preset::Veryslow | Preset::Placebo => "p7",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Preset as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!(
                "{s:?} is not an x264 preset (ultrafast, superfast, veryfast, faster, fast, \
                 medium, slow, slower, veryslow, placebo)"
            )
        })
    }
}

/// The highest CRF x264 takes (8-bit).
pub const MAX_CRF: u8 = 51;

/// The chunk preset of new jobs (see [`EncoderSettings::default`](super::EncoderSettings)).
pub const DEFAULT_PRESET: Preset = Preset::Veryfast;

/// The chunk CRF of new jobs (see [`EncoderSettings::default`](super::EncoderSettings)).
pub const DEFAULT_CRF: u8 = 16;

/// The ffmpeg arguments that select `encoder` (a concrete ffmpeg encoder name, never `auto`) at
/// `preset` and `crf`.
pub(crate) fn encoder_args(encoder: &str, preset: &str, crf: u8) -> Vec<String> {
    let mut args = vec!["-c:v".to_owned(), encoder.to_owned()];
    if encoder == "h264_nvenc" {
        // NVENC's constant quality: `-cq 0` means "let the driver choose", so 0 becomes 1.
        let preset = preset.parse::<Preset>().map_or("p4", Preset::nvenc);
        args.extend(
            [
                "-preset",
                preset,
                "-rc",
                "vbr",
                "-cq",
                &crf.max(1).to_string(),
            ]
            .map(str::to_owned),
        );
        args.extend(["-b:v", "0"].map(str::to_owned));
    } else {
        args.extend(["-preset", preset, "-crf", &crf.to_string()].map(str::to_owned));
    }
    args
}

/// What `auto` became in this process, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The ffmpeg encoder that runs: `h264_nvenc` or `libx264`.
    pub encoder: &'static str,
    /// Why, in words, for the start-up log line.
    pub reason: String,
}

static AUTO: OnceLock<Resolved> = OnceLock::new();

/// Fixes what `auto` means in this process before anything encodes, and says so in one log
/// line: `Codec::Auto` detects (see [`resolve_auto`]), a concrete codec is used as it is (an
/// operator's override, e.g. `STYLEFLEET_CODEC=libx264` on a worker that should leave NVENC
/// alone). Every process that encodes calls it at start. A second call returns the first choice.
pub async fn announce(preference: Codec) -> &'static Resolved {
    let encoder = match preference {
        Codec::Auto => return resolve_auto().await,
        Codec::Libx264 => "libx264",
        Codec::H264Nvenc => "h264_nvenc",
    };
    keep(Resolved {
        encoder,
        reason: "chosen by STYLEFLEET_CODEC / --codec".into(),
    })
}

/// What `auto` means in this process, detected on first use (and logged) and kept:
/// `h264_nvenc` when ffmpeg lists it and a probe encode succeeds, else `libx264`, with the
/// reason.
pub async fn resolve_auto() -> &'static Resolved {
    match AUTO.get() {
        Some(resolved) => resolved,
        None => keep(detect().await),
    }
}

/// Keeps `resolved` as what `auto` means unless a choice was kept already (two first callers
/// may both detect; the first to finish wins), logging the choice once.
fn keep(resolved: Resolved) -> &'static Resolved {
    let mut first = false;
    let kept = AUTO.get_or_init(|| {
        first = true;
        resolved
    });
    if first {
        tracing::info!(
            encoder = kept.encoder,
            "chunk encoder for jobs that leave it to the worker (auto): {} ({})",
            kept.encoder,
            kept.reason
        );
    }
    kept
}

/// Looks for a working `h264_nvenc`.
async fn detect() -> Resolved {
    let listed = FfCommand::ffmpeg("list the encoders")
        .arg("-encoders")
        .run()
        .await;
    let listed = match listed {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|word| word == "h264_nvenc"),
        Err(e) => {
            return Resolved {
                encoder: "libx264",
                reason: format!("cannot list ffmpeg's encoders ({e})"),
            };
        }
    };
    if !listed {
        return Resolved {
            encoder: "libx264",
            reason: "this ffmpeg has no h264_nvenc".into(),
        };
    }
    // NVENC refuses tiny frames; 256x256 is above every generation's minimum.
    let probe = FfCommand::ffmpeg("probe h264_nvenc")
        .args(["-f", "lavfi", "-i", "color=c=gray:s=256x256:r=25"])
        .args(["-frames:v", "5"])
        .args(encoder_args("h264_nvenc", "fast", 23))
        .args(["-f", "null", "-"])
        .run()
        .await;
    match probe {
        Ok(_) => Resolved {
            encoder: "h264_nvenc",
            reason: "ffmpeg lists h264_nvenc and a probe encode succeeded".into(),
        },
        Err(e) => {
            let why = match &e {
                super::MediaError::Ffmpeg { stderr, .. } => first_line(stderr).to_owned(),
                other => other.to_string(),
            };
            Resolved {
                encoder: "libx264",
                reason: format!(
                    "ffmpeg lists h264_nvenc but a probe encode failed, so no GPU with NVENC \
                     is usable here: {why}"
                ),
            }
        }
    }
}

/// The first non-empty line of a tool's stderr, without the `[encoder @ 0x...]` prefix: the
/// encoder's own reason (e.g. `Cannot load libcuda.so.1`), before ffmpeg's generic summary.
fn first_line(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.split_once("] ") {
        Some((prefix, rest)) if prefix.starts_with('[') => rest,
        _ => line,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for codec in [Codec::Auto, Codec::Libx264, Codec::H264Nvenc] {
            assert_eq!(codec.as_str().parse::<Codec>().unwrap(), codec);
        }
        assert!("vp9".parse::<Codec>().is_err());
        assert_eq!("VeryFast".parse::<Preset>().unwrap(), Preset::Veryfast);
        assert!("turbo".parse::<Preset>().unwrap_err().contains("ultrafast"));
    }

    #[test]
    fn the_encoders_own_reason_is_kept() {
        let stderr = "[h264_nvenc @ 0x55d0] Cannot load libcuda.so.1\nError initializing output stream 0:0\n";
        assert_eq!(first_line(stderr), "Cannot load libcuda.so.1");
        assert_eq!(first_line("\nplain\n"), "plain");
    }

    #[test]
    fn nvenc_gets_constant_quality_and_its_own_presets() {
        assert_eq!(
            encoder_args("libx264", "veryfast", 15).join(" "),
            "-c:v libx264 -preset veryfast -crf 15"
        );
        assert_eq!(
            encoder_args("h264_nvenc", "veryfast", 0).join(" "),
            "-c:v h264_nvenc -preset p2 -rc vbr -cq 1 -b:v 0"
        );
    }
}
