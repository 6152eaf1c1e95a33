//! The buffer behind a tensor, one variant per device.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use crate::device::Device;

/// Owned values of a tensor on one device. Shared between tensors through an `Arc`; a shared
/// host buffer updated in place is copied first.
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
    /// Device memory and the device (a GPU, or the emulator) that owns it.
    Cuda(CudaStorage),
}

/// A tensor's values in device memory.
pub struct CudaStorage {
    /// The device handle every op on these values launches on.
    pub gpu: Arc<Gpu>,
    /// The values.
    pub buf: GpuBuffer<f32>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Cpu(v) => write!(f, "Storage::Cpu({} values)", v.len()),
            Storage::Cuda(c) => write!(f, "Storage::Cuda({:?} on {})", c.buf, c.gpu.name()),
        }
    }
}

/// A dropped host buffer goes back to the pool for the next op output of its length.
impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => crate::pool::recycle(std::mem::take(v)),
            // Freed stream-ordered (cudarc), so kernels still queued on it finish first.
            Storage::Cuda(_) => {}
        }
    }
}

impl Storage {
    /// The device this buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => Device::Cuda(c.gpu.ordinal()),
        }
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            Storage::Cuda(c) => c.buf.len(),
        }
    }

    /// True when the buffer holds no element (never the case for a valid tensor).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
