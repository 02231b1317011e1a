//! The contact sheet: one picture in every built-in style, each tile captioned with what to pass
//! to `--style`.
//!
//! Tiles are laid out 6 a row on white, with 4-pixel gutters; under each tile a white caption
//! band holds its label in black, drawn with the public-domain 8x8 bitmap font of the `font8x8`
//! crate (no font file to ship or load, no rasteriser). The first tile is the picture itself,
//! labelled `original`; tile `i + 1` is style `i`, labelled `i name`. The font is scaled by a
//! whole factor that grows with the tile width (8 px text on 256 px tiles, 32 px on 1280 px
//! ones), and labels wrap at spaces and hyphens onto as many lines as the widest label needs, so
//! every name stays whole and readable whatever the tile size.

use crate::error::ModelError;
use crate::frame::Frame;
use crate::multistyle::MIN_SIDE;
use crate::spec::{StyleOptions, StyleSpec, styles};
use crate::styles::NUM_STYLES;
use crate::stylize::{Stylizer, device};

/// Tiles per row.
pub const COLUMNS: u32 = 6;
/// White space around every tile, in pixels.
pub const GUTTER: u32 = 4;
/// The size of a glyph of the bitmap font at scale 1.
const GLYPH: u32 = 8;

/// Where everything sits on a sheet of `tiles` tiles of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SheetLayout {
    /// Tile width in pixels.
    pub tile_width: u32,
    /// Tile height in pixels (the caption band comes below it).
    pub tile_height: u32,
    /// How many times the 8x8 font is magnified.
    pub scale: u32,
    /// Height of the caption band under every tile.
    pub caption_height: u32,
    /// Characters a caption line holds.
    pub line_chars: usize,
    /// Number of tiles.
    pub tiles: u32,
}

impl SheetLayout {
    /// The layout of the built-in styles' sheet (the original plus every style) at this tile
    /// size.
    pub fn new(tile_width: u32, tile_height: u32) -> Self {
        let scale = (tile_width / 320).clamp(1, 4);
        let line_chars = (tile_width / (GLYPH * scale)).max(1) as usize;
        let lines = labels()
            .iter()
            .map(|l| wrap(l, line_chars).len())
            .max()
            .unwrap_or(1) as u32;
        Self {
            tile_width,
            tile_height,
            scale,
            caption_height: lines * (GLYPH + 2) * scale + 2 * scale,
            line_chars,
            tiles: NUM_STYLES as u32 + 1,
        }
    }

    /// Rows of tiles.
    pub fn rows(&self) -> u32 {
        self.tiles.div_ceil(COLUMNS)
    }

    /// The sheet's width and height.
    pub fn size(&self) -> (u32, u32) {
        (
            COLUMNS * (self.tile_width + GUTTER) + GUTTER,
            self.rows() * (self.tile_height + self.caption_height + GUTTER) + GUTTER,
        )
    }

    /// Top-left corner of tile `n`.
    pub fn tile_origin(&self, n: u32) -> (u32, u32) {
        let (r, c) = (n / COLUMNS, n % COLUMNS);
        (
            GUTTER + c * (self.tile_width + GUTTER),
            GUTTER + r * (self.tile_height + self.caption_height + GUTTER),
        )
    }

    /// Top-left corner of tile `n`'s caption band (as wide as the tile).
    pub fn caption_origin(&self, n: u32) -> (u32, u32) {
        let (x, y) = self.tile_origin(n);
        (x, y + self.tile_height)
    }
}

/// The label of every tile, in sheet order: `original`, then `0 ochre-sketch`, `1 ...`.
pub fn labels() -> Vec<String> {
    std::iter::once("original".to_owned())
        .chain(styles().iter().map(|s| format!("{} {}", s.index, s.name)))
        .collect()
}

/// `image` scaled to cover `width` x `height` (aspect kept), then cropped to it around the
/// centre.
pub fn fit(image: &Frame, width: u32, height: u32) -> Result<Frame, ModelError> {
    image.check()?;
    let src = image::RgbImage::from_raw(image.width, image.height, image.data.clone())
        .ok_or_else(|| ModelError::SizeMismatch("contact sheet source".to_owned()))?;
    let filled = image::DynamicImage::ImageRgb8(src)
        .resize_to_fill(width, height, image::imageops::FilterType::Triangle)
        .into_rgb8();
    Ok(Frame {
        width,
        height,
        data: filled.into_raw(),
    })
}

/// All 26 built-in styles on one image, each tile `tile_width` x `tile_height` and captioned
/// (see the module doc). The image is first fitted to the tile size ([`fit`]).
pub fn contact_sheet(
    image: &Frame,
    tile_width: u32,
    tile_height: u32,
) -> Result<Frame, ModelError> {
    if tile_width < MIN_SIDE || tile_height < MIN_SIDE {
        return Err(ModelError::FrameTooSmall {
            width: tile_width,
            height: tile_height,
            min: MIN_SIDE,
        });
    }
    let thumb = fit(image, tile_width, tile_height)?;
    let device = device(true)?;
    let mut tiles = vec![thumb.clone()];
    for i in 0..NUM_STYLES {
        let spec = StyleSpec::blend(&[(i, 1.0)])?;
        let stylizer = Stylizer::new(&spec, StyleOptions::default(), &device)?;
        tiles.extend(stylizer.style_batch(std::slice::from_ref(&thumb))?);
    }
    let layout = SheetLayout::new(tile_width, tile_height);
    let (sw, sh) = layout.size();
    let mut sheet = Frame {
        width: sw,
        height: sh,
        data: vec![255u8; Frame::byte_len(sw, sh)],
    };
    for ((n, tile), label) in tiles.iter().enumerate().zip(labels()) {
        let n = n as u32;
        let (x0, y0) = layout.tile_origin(n);
        let row_len = (tile_width * 3) as usize;
        for y in 0..tile_height {
            let dst = (((y0 + y) * sw + x0) * 3) as usize;
            let src = (y * tile_width * 3) as usize;
            sheet.data[dst..dst + row_len].copy_from_slice(&tile.data[src..src + row_len]);
        }
        let (cx, cy) = layout.caption_origin(n);
        for (i, line) in wrap(&label, layout.line_chars).iter().enumerate() {
            let y = cy + layout.scale + i as u32 * (GLYPH + 2) * layout.scale;
            draw_text(&mut sheet, cx, y, line, layout.scale, tile_width);
        }
    }
    Ok(sheet)
}

/// Breaks `text` into lines of at most `width` characters, after spaces and hyphens where it
/// can, inside a word where a word alone is too long.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    // Pieces end after a space or a hyphen: "25 blue-orange-hatch" -> "25 ", "blue-", ...
    let mut pieces: Vec<String> = Vec::new();
    let mut piece = String::new();
    for ch in text.chars() {
        piece.push(ch);
        if ch == ' ' || ch == '-' {
            pieces.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for piece in pieces {
        if line.chars().count() + piece.trim_end().chars().count() > width && !line.is_empty() {
            lines.push(line.trim_end().to_owned());
            line.clear();
        }
        for ch in piece.chars() {
            if line.chars().count() == width {
                lines.push(std::mem::take(&mut line));
            }
            if !(ch == ' ' && line.is_empty()) {
                line.push(ch);
            }
        }
    }
    if !line.trim_end().is_empty() || lines.is_empty() {
        lines.push(line.trim_end().to_owned());
    }
    lines
}

/// Draws `text` in black with its top-left corner at (`x`, `y`), each font pixel a `scale` x
/// `scale` square, clipped `max_width` pixels right of `x` and at the frame's edges.
/// Characters outside ASCII are drawn as `?`.
pub fn draw_text(frame: &mut Frame, x: u32, y: u32, text: &str, scale: u32, max_width: u32) {
    let scale = scale.max(1);
    for (i, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let gx = x + i as u32 * GLYPH * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                // The font's rows are little-endian: bit 0 is the leftmost pixel.
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = gx + col * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px >= x + max_width || px >= frame.width || py >= frame.height {
                            continue;
                        }
                        let at = ((py * frame.width + px) * 3) as usize;
                        frame.data[at..at + 3].fill(0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_wrap_at_spaces_and_hyphens_and_stay_whole() {
        assert_eq!(wrap("25 blue-orange-hatch", 32), ["25 blue-orange-hatch"]);
        assert_eq!(
            wrap("25 blue-orange-hatch", 8),
            ["25 blue-", "orange-", "hatch"]
        );
        assert_eq!(wrap("original", 8), ["original"]);
        // A word longer than the line is cut inside.
        assert_eq!(wrap("original", 3), ["ori", "gin", "al"]);
        for width in 1..40 {
            for label in labels() {
                let lines = wrap(&label, width);
                assert!(
                    lines.iter().all(|l| l.chars().count() <= width),
                    "{lines:?}"
                );
                assert_eq!(lines.concat().replace(' ', ""), label.replace(' ', ""));
            }
        }
    }

    #[test]
    fn the_layout_holds_every_label_and_grows_the_font_with_the_tile() {
        let small = SheetLayout::new(64, 36);
        assert_eq!((small.scale, small.line_chars, small.rows()), (1, 8, 5));
        // "25 blue-orange-hatch" needs three lines of 8.
        assert_eq!(small.caption_height, 3 * 10 + 2);
        assert_eq!(small.size(), (6 * 68 + 4, 5 * (36 + 32 + 4) + 4));
        let hd = SheetLayout::new(1280, 720);
        assert_eq!((hd.scale, hd.caption_height), (4, 10 * 4 + 2 * 4));
        assert_eq!(hd.tile_origin(7), (4 + 1284, 4 + 720 + 48 + 4));
    }

    #[test]
    fn text_is_drawn_inside_its_box_and_differs_by_label() {
        let blank = Frame {
            width: 40,
            height: 12,
            data: vec![255; 40 * 12 * 3],
        };
        let mut a = blank.clone();
        draw_text(&mut a, 2, 2, "0 o", 1, 24);
        let mut b = blank.clone();
        draw_text(&mut b, 2, 2, "1 y", 1, 24);
        assert_ne!(a, blank);
        assert_ne!(a, b);
        // Nothing outside the box (x 2..26, y 2..10).
        for y in 0..12u32 {
            for x in 0..40u32 {
                let inside = (2..26).contains(&x) && (2..10).contains(&y);
                let at = ((y * 40 + x) * 3) as usize;
                if !inside {
                    assert_eq!(a.data[at], 255, "pixel {x},{y}");
                }
            }
        }
    }
}
