//! `stylefleet sas`: a short-lived URL for one blob (a user delegation SAS).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use stylefleet::store::azure::sas::{SasDirection, mint};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SasKind {
    Upload,
    Download,
}

#[derive(Debug, Args)]
pub struct SasArgs {
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
}

pub async fn run(args: SasArgs) -> anyhow::Result<ExitCode> {
    let direction = match args.direction {
        SasKind::Upload => SasDirection::Upload,
        SasKind::Download => SasDirection::Download,
    };
    let ttl = Duration::from_secs(args.ttl_minutes.saturating_mul(60));
    let url = mint(&args.store, &args.blob, direction, ttl).await?;
    println!("{url}");
    Ok(ExitCode::SUCCESS)
}
