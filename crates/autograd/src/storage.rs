//! The buffer behind a tensor, one variant per device.

use crate::device::Device;

/// Owned values of a tensor on one device. Shared between tensors through an `Arc`, and
/// copied on write (`Arc::make_mut`) when a shared buffer is updated in place.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
}

/// A dropped buffer goes back to the pool for the next op output of its length.
impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => crate::pool::recycle(std::mem::take(v)),
        }
    }
}

impl Storage {
    /// The device this buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
        }
    }

    /// True when the buffer holds no element (never the case for a valid tensor).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
