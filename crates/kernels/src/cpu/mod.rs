//! CPU implementations: plain Rust, `gemm` for matrix products, rayon where it pays.
//! Each module is the reference its CUDA twin is tested against.

pub mod grad_gram;
pub use grad_gram::*;
pub mod weighted_loss;
pub use weighted_loss::*;
