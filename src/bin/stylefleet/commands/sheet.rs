//! `stylefleet styles --sheet`: every built-in style on one picture, a still or a frame of the
//! user's own video, at the size the user will render.

use std::path::Path;
use std::str::FromStr;

/// The size of each tile, as given to `--size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileSize {
    /// `256`: this wide, as tall as the picture's shape makes it.
    Width(u32),
    /// `720p`: this tall, as wide as the picture's shape makes it.
    Height(u32),
    /// `640x360`: exactly this (the picture is scaled to cover it and cropped around the
    /// centre).
    Exact(u32, u32),
}

impl FromStr for TileSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let number = |s: &str| -> Result<u32, String> {
            match s.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{text:?} is not a size: use WxH (640x360), a height like 720p, or a width like 256"
                )),
            }
        };
        if let Some((w, h)) = t.split_once('x') {
            return Ok(Self::Exact(number(w)?, number(h)?));
        }
        if let Some(h) = t.strip_suffix('p') {
            return Ok(Self::Height(number(h)?));
        }
        Ok(Self::Width(number(&t)?))
    }
}

impl TileSize {
    /// The tile's width and height for a `width` x `height` picture.
    #[cfg_attr(not(feature = "style"), allow(dead_code))]
    pub fn resolve(self, width: u32, height: u32) -> (u32, u32) {
        let scaled = |n: u32, num: u32, den: u32| {
            ((f64::from(n) * f64::from(num) / f64::from(den.max(1))).round() as u32).max(1)
        };
        match self {
            Self::Width(w) => (w, scaled(height, w, width)),
            Self::Height(h) => (scaled(width, h, height), h),
            Self::Exact(w, h) => (w, h),
        }
    }
}

/// Whether `path` is read as a still picture (by its extension) rather than as a video.
#[cfg_attr(not(feature = "style"), allow(dead_code))]
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Renders the sheet of `input` (an image, or the frame of a video at `at`) into `output`.
#[cfg(feature = "style")]
pub async fn render(
    input: &Path,
    output: &Path,
    size: TileSize,
    at: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    use std::path::PathBuf;

    use anyhow::Context as _;
    use stylefleet_models::{Frame, contact_sheet, read_image, write_image};

    let started = std::time::Instant::now();
    let (picture, from) = if is_image(input) {
        if at.is_some() {
            anyhow::bail!(
                "--at picks a frame of a video; {} is a picture",
                input.display()
            );
        }
        (read_image(input)?, input.display().to_string())
    } else {
        let probe = stylefleet::media::probe(input)
            .await
            .with_context(|| format!("cannot read {} as a video", input.display()))?;
        let still = stylefleet::media::frame_at(input, &probe, at.map(|d| d.as_secs_f64()))
            .await
            .with_context(|| format!("no frame to preview in {}", input.display()))?;
        let from = format!(
            "frame {} ({:.2} s) of {}",
            still.index,
            still.time_s,
            input.display()
        );
        let frame = Frame {
            width: still.width,
            height: still.height,
            data: still.data,
        };
        (frame, from)
    };
    let (tw, th) = size.resolve(picture.width, picture.height);
    let out = output.to_owned();
    let sheet = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
        let sheet = contact_sheet(&picture, tw, th)?;
        write_image(&out, &sheet)?;
        Ok(out)
    })
    .await??;
    eprintln!(
        "{} tiles of {tw}x{th} from {from} in {:.1} s; pass the number or the name under a tile to --style",
        stylefleet_models::styles().len() + 1,
        started.elapsed().as_secs_f64()
    );
    println!("{}", sheet.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_keep_the_pictures_shape() {
        assert_eq!("256".parse(), Ok(TileSize::Width(256)));
        assert_eq!("720p".parse(), Ok(TileSize::Height(720)));
        assert_eq!("64x36".parse(), Ok(TileSize::Exact(64, 36)));
        assert_eq!("1280X720".parse(), Ok(TileSize::Exact(1280, 720)));
        for bad in ["", "0", "x", "12x", "p", "-5", "720i", "0x10"] {
            assert!(bad.parse::<TileSize>().is_err(), "{bad:?}");
        }
        assert_eq!(TileSize::Width(256).resolve(1920, 1080), (256, 144));
        assert_eq!(TileSize::Height(720).resolve(640, 360), (1280, 720));
        assert_eq!(TileSize::Height(720).resolve(1080, 1920), (405, 720));
        assert_eq!(TileSize::Exact(64, 36).resolve(100, 100), (64, 36));
    }

    #[test]
    fn pictures_are_known_by_their_extension() {
        assert!(is_image(Path::new("a/b.PNG")));
        assert!(is_image(Path::new("b.jpeg")));
        assert!(!is_image(Path::new("clip.mp4")));
        assert!(!is_image(Path::new("noext")));
    }
}
