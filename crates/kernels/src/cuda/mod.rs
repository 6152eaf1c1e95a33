//! CUDA implementations (cudarc, dynamic loading): the twins of [`crate::cpu`].
//!
//! Nothing here needs CUDA at build time. At run time every entry point first checks that the
//! driver, NVRTC and cuBLAS libraries load ([`library_status`]); a machine without them gets a
//! [`CudaUnavailable`] error, never a panic. Kernels live in the top-level `kernels/` folder and
//! are compiled by NVRTC for the device's own compute capability, once per process. Without a
//! GPU the same kernels run on the CPU through [`emu`] (a [`Gpu`] from [`Gpu::emulated`]).

pub mod buffer;
pub mod device;
pub mod emu;
pub mod gpu;
pub mod grad_gram;
pub mod libs;
pub mod sources;
pub mod weighted_loss;

pub use buffer::{Arg, DeviceElem, GpuBuffer};
pub use cudarc::driver::LaunchConfig;
pub use device::{CudaDeviceInfo, devices};
pub use gpu::Gpu;
pub use grad_gram::{grad_gram, grad_gram_device};
pub use libs::{CudaUnavailable, LibraryStatus, library_status};
pub use weighted_loss::{CudaBceInput, CudaCeInput, weighted_bce_loss, weighted_ce_loss};
