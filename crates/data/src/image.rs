//! An 8-bit image in HWC layout, the currency between readers and transforms.

/// Height x width x channels u8 pixels, row-major, channels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels (1 grey, 3 RGB).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: Vec<u8>,
}

impl Image {
    /// Wraps pixels; the caller guarantees `data.len() == height * width * channels`.
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), height * width * channels);
        Image {
            height,
            width,
            channels,
            data,
        }
    }

    /// An all-zero image.
    pub fn zeros(height: usize, width: usize, channels: usize) -> Self {
        Image::new(height, width, channels, vec![0; height * width * channels])
    }

    /// The value at row `y`, column `x`, channel `c`.
    pub fn get(&self, y: usize, x: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Converts CHW planes (CIFAR's layout) to HWC.
    pub fn from_chw(height: usize, width: usize, channels: usize, chw: &[u8]) -> Self {
        let plane = height * width;
        let mut data = vec![0u8; plane * channels];
        for c in 0..channels {
            for (i, &v) in chw[c * plane..(c + 1) * plane].iter().enumerate() {
                data[i * channels + c] = v;
            }
        }
        Image::new(height, width, channels, data)
    }

    /// Converts column-major CHW planes (STL-10's layout: byte `c*H*W + x*H + y`) to HWC.
    pub fn from_chw_column_major(height: usize, width: usize, channels: usize, src: &[u8]) -> Self {
        let plane = height * width;
        let mut data = vec![0u8; plane * channels];
        for c in 0..channels {
            for x in 0..width {
                for y in 0..height {
                    data[(y * width + x) * channels + c] = src[c * plane + x * height + y];
                }
            }
        }
        Image::new(height, width, channels, data)
    }
}
