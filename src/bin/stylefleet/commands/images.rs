//! `stylefleet style-image` and `stylefleet styles`: the models on single pictures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

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
    /// Render a contact sheet of this image in every style.
    #[arg(long, requires = "output")]
    sheet: Option<PathBuf>,
    /// Where to write the sheet.
    #[arg(long, short = 'o', requires = "sheet")]
    output: Option<PathBuf>,
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
pub fn styles(args: StylesArgs) -> anyhow::Result<ExitCode> {
    match (args.sheet, args.output) {
        (Some(sheet), Some(output)) => {
            let image = stylefleet_models::read_image(&sheet)?;
            let picture = stylefleet_models::contact_sheet(&image, 256)?;
            stylefleet_models::write_image(&output, &picture)?;
            println!("{}", output.display());
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
pub fn styles(_: StylesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no models (built without the `style` feature)")
}
