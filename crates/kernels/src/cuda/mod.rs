//! CUDA implementations (cudarc, dynamic loading): the twins of [`crate::cpu`].
//!
//! Nothing here needs CUDA at build time. At run time every entry point first checks that the
//! driver, NVRTC and cuBLAS libraries load ([`library_status`]); a machine without them gets a
//! [`CudaUnavailable`] error, never a panic. Kernels live in the top-level `kernels/` folder and
//! are compiled by NVRTC for the device's own compute capability, once per process. Without a
//! GPU the same kernels run on the CPU through [`emu`] (a [`Gpu`] from [`Gpu::emulated`]).

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod buffer;
pub mod combine;
pub mod concat;
pub mod conv;
pub mod cross_entropy;
pub mod device;
pub mod elementwise;
pub mod emu;
pub mod gemm;
pub mod gpu;
pub mod grad_gram;
pub mod layer_norm;
pub mod libs;
pub mod optim;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod sources;
pub mod upsample;
pub mod weighted_loss;

pub use buffer::{Arg, DeviceElem, GpuBuffer};
pub use cudarc::driver::LaunchConfig;
pub use device::{CudaDeviceInfo, devices};
pub use gemm::{Gemm, gemm, gemm_flops};
pub use gpu::{Gpu, MemoryStats};
pub use grad_gram::{grad_gram, grad_gram_device};
pub use libs::{CudaUnavailable, LibraryStatus, library_status};
pub use weighted_loss::{CudaBceInput, CudaCeInput, weighted_bce_loss, weighted_ce_loss};
