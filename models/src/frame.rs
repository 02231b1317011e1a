//! Frames (packed RGB24) and image files.

use std::path::Path;

use crate::ModelError;

/// One picture: packed RGB24, row-major, `data.len() == width * height * 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `R G B R G B ...`, row after row, no padding.
    pub data: Vec<u8>,
}

impl Frame {
    /// Bytes a frame of this size holds.
    pub fn byte_len(width: u32, height: u32) -> usize {
        width as usize * height as usize * 3
    }

    /// Check that the buffer matches the size.
    pub fn check(&self) -> Result<(), ModelError> {
        let want = Self::byte_len(self.width, self.height);
        if self.data.len() != want {
            return Err(ModelError::SizeMismatch(format!(
                "a {}x{} RGB24 frame needs {want} bytes, got {}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// Read a PNG or JPEG file into an RGB frame (alpha is dropped, grey expanded).
pub fn read_image(path: impl AsRef<Path>) -> Result<Frame, ModelError> {
    let path = path.as_ref();
    let img = image::open(path).map_err(|source| ModelError::Image {
        path: path.to_owned(),
        source,
    })?;
    let rgb = img.into_rgb8();
    Ok(Frame {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

/// Write a frame as PNG or JPEG, chosen by the file extension.
pub fn write_image(path: impl AsRef<Path>, frame: &Frame) -> Result<(), ModelError> {
    let path = path.as_ref();
    frame.check()?;
    image::save_buffer(
        path,
        &frame.data,
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| ModelError::Image {
        path: path.to_owned(),
        source,
    })
}
