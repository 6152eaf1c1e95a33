//! Image decoding, resizing and the random augmentations applied by the loader.

pub mod augment;
pub mod decode;
pub mod resize;

pub use augment::{Augment, Augmented};
pub use decode::{decode_image, read_image};
pub use resize::{Interp, resize_image, resize_labels, resize_values};
