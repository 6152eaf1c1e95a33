//! CPU implementations: plain Rust, `gemm` for matrix products, rayon where it pays.
//! Each module is the reference its CUDA twin is tested against.

pub mod grad_gram;
pub use grad_gram::*;
pub mod weighted_loss;
pub use weighted_loss::*;

mod accumulate;
pub mod activation;
pub mod alloc;
pub mod attention;
pub mod batch_norm;
pub(crate) mod checks;
pub mod concat;
pub mod conv;
pub mod cross_entropy;
pub mod elementwise;
pub mod gemm;
pub mod layer_norm;
mod par;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod upsample;

pub use activation::*;
pub use alloc::*;
pub use attention::*;
pub use batch_norm::*;
pub use concat::*;
pub use conv::*;
pub use cross_entropy::*;
pub use elementwise::*;
pub use gemm::*;
pub use layer_norm::*;
pub use permute::*;
pub use pool::*;
pub use reduce::*;
pub use softmax::*;
pub use upsample::*;

/// Whether this CPU runs the kernels' AVX-512F code paths (std caches the answer).
#[inline]
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
