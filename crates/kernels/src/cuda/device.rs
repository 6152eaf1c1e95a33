//! Listing the CUDA devices (for `scalarize devices`).

use cudarc::driver::{result, sys};

use super::libs::{CudaUnavailable, require_all};

/// One CUDA device as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// Device ordinal (what `Gpu::new` takes).
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0).
    pub compute_capability: (u32, u32),
    /// Total device memory in bytes.
    pub total_memory: usize,
    /// Number of streaming multiprocessors.
    pub multiprocessors: u32,
}

/// Maps a driver error to [`CudaUnavailable`].
pub(crate) fn driver_err(what: &str, e: result::DriverError) -> CudaUnavailable {
    CudaUnavailable::Driver(format!("{what}: {e:?}"))
}

/// Reads one integer attribute of a device.
fn attr(dev: sys::CUdevice, a: sys::CUdevice_attribute) -> Result<u32, CudaUnavailable> {
    // SAFETY: `dev` came from cuDeviceGet after a successful cuInit.
    let v = unsafe { result::device::get_attribute(dev, a) }
        .map_err(|e| driver_err("cuDeviceGetAttribute", e))?;
    Ok(v.max(0) as u32)
}

/// Every CUDA device of this machine; `Ok(vec![])` when the driver sees none.
///
/// The error says which library is missing (driver, NVRTC or cuBLAS: all three are needed to
/// run scalarize's kernels) or what the driver refused. Never panics.
pub fn devices() -> Result<Vec<CudaDeviceInfo>, CudaUnavailable> {
    require_all()?;
    result::init().map_err(|e| driver_err("cuInit", e))?;
    let count = result::device::get_count().map_err(|e| driver_err("cuDeviceGetCount", e))?;
    let mut out = Vec::new();
    for ordinal in 0..count.max(0) {
        let dev = result::device::get(ordinal).map_err(|e| driver_err("cuDeviceGet", e))?;
        let name = result::device::get_name(dev).map_err(|e| driver_err("cuDeviceGetName", e))?;
        // SAFETY: as above.
        let total_memory = unsafe { result::device::total_mem(dev) }
            .map_err(|e| driver_err("cuDeviceTotalMem", e))?;
        use sys::CUdevice_attribute as A;
        out.push(CudaDeviceInfo {
            ordinal: ordinal as usize,
            name,
            compute_capability: (
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            total_memory,
            multiprocessors: attr(dev, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        });
    }
    Ok(out)
}
