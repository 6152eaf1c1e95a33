//! Op-level tests of the CPU kernels: every forward against an independent naive f64
//! reference, every backward against finite differences of that reference (or an analytic f64
//! reference / the adjoint identity for linear ops), plus bad-input errors.

mod common;

mod activation;
mod bad_input;
mod conv;
mod gemm;
mod loss;
mod norm;
mod pool;
mod shape_ops;
mod upsample;
