//! `stylefleet style-image` and `stylefleet styles`: the models on single pictures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use stylefleet::lifecycle::parse_seconds;

use super::sheet::TileSize;
use crate::args::StyleArgs;

#[derive(Debug, Args)]
pub struct StyleImageArgs {
    /// The image (PNG or JPEG).
    input: PathBuf,
    /// Where to write the styled image.
    #[arg(long, short = 'o')]
    output: PathBuf,
    #[command(flatten)]
    style: StyleArgs,
}

#[derive(Debug, Args)]
pub struct StylesArgs {
    /// Render a sheet of every style, each tile labelled with its number and name: of a picture
    /// (PNG or JPEG), or of a frame of a video (see `--at`).
    #[arg(long, value_name = "IMAGE|VIDEO", requires = "output")]
    sheet: Option<PathBuf>,
    /// Where to write the sheet (PNG or JPEG).
    #[arg(long, short = 'o', requires = "sheet")]
    output: Option<PathBuf>,
    /// The size of each tile: a width (`256`), a height (`720p`; the width follows the
    /// picture's shape) or both (`640x360`). Styles look different at different sizes: render at
    /// the size you will process to see them as they will be. A 720p sheet takes minutes on a
    /// CPU.
    #[arg(long, default_value = "256", requires = "sheet")]
    size: TileSize,
    /// For a video: the frame shown at this many seconds from the start [default: the middle].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, requires = "sheet")]
    at: Option<Duration>,
}

#[cfg(feature = "style")]
pub fn style_image(args: StyleImageArgs) -> anyhow::Result<ExitCode> {
    use stylefleet_models::{StyleOptions, StyleSpec, Stylizer, read_image, write_image};
    if args.input.is_dir() {
        anyhow::bail!(
            "{} is a folder; give one image file (PNG or JPEG)",
            args.input.display()
        );
    }
    let spec: StyleSpec = args.style.style.parse()?;
    let image = read_image(&args.input)?;
    let stylizer = Stylizer::new(
        &spec,
        StyleOptions {
            strength: args.style.strength,
            preserve_colour: args.style.preserve_colour,
        },
        &stylefleet_models::device(true)?,
    )?;
    let styled = stylizer.style_batch(std::slice::from_ref(&image))?;
    let Some(first) = styled.first() else {
        anyhow::bail!("the model returned no frame")
    };
    write_image(&args.output, first)?;
    println!("{}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "style")]
pub async fn styles(args: StylesArgs) -> anyhow::Result<ExitCode> {
    match (args.sheet, args.output) {
        (Some(input), Some(output)) => {
            super::sheet::render(&input, &output, args.size, args.at).await?;
        }
        _ => {
            for s in stylefleet_models::styles() {
                println!("{:>2}  {}", s.index, s.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "style"))]
pub fn style_image(_: StyleImageArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no models (built without the `style` feature)")
}

#[cfg(not(feature = "style"))]
pub async fn styles(_: StylesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no models (built without the `style` feature)")
}
