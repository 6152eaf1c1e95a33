//! Decoding image files (JPEG, PNG) with the `image` crate.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::image::Image;

/// Decodes encoded bytes to RGB (`channels == 3`) or grey (`channels == 1`); `path` names errors.
pub fn decode_image(bytes: &[u8], channels: usize, path: &Path) -> Result<Image> {
    let img = image::load_from_memory(bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match channels {
        1 => img.into_luma8().into_raw(),
        3 => img.into_rgb8().into_raw(),
        _ => {
            return Err(DataError::Invalid(format!(
                "decode to {channels} channels (1 or 3)"
            )));
        }
    };
    Ok(Image::new(h, w, channels, data))
}

/// Reads and decodes an image file; a missing file is [`DataError::Missing`].
pub fn read_image(path: &Path, channels: usize, expected_layout: &str) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e, expected_layout))?;
    decode_image(&bytes, channels, path)
}
