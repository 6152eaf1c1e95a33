//! Helpers shared by the CUDA op tests (tests/cuda_*.rs): the device or a skip, uploads and
//! downloads, NaN-poisoned outputs, bit patterns and tolerance checks, same-error checks and
//! random inputs.

// Every test binary compiles its own copy of this module and uses only some of the helpers.
#![allow(dead_code)]

use std::sync::Arc;

use rand::RngExt;
use rand::rngs::StdRng;
use scalarize_kernels::KernelError;
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

/// The test's device (a GPU, or the emulator without one); `None` skips the test.
pub fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

/// Values in [-3, 3).
pub fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect()
}

/// A device buffer of `n` NaNs: a kernel that skips an element leaves it NaN.
pub fn poisoned(gpu: &Gpu, n: usize) -> GpuBuffer<f32> {
    gpu.upload(&vec![f32::NAN; n]).unwrap()
}

/// The bit patterns of `v`, for bit-for-bit comparisons that also tell NaNs and zeros apart.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The CUDA op refuses what the CPU op refuses, with the same message.
pub fn same_error(cuda: KernelError, cpu: KernelError) {
    assert_eq!(cuda.op, format!("cuda::{}", cpu.op));
    assert_eq!(cuda.msg, cpu.msg);
}

/// `len` values uniform in [lo, hi).
pub fn randv(r: &mut StdRng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| r.random_range(lo..hi)).collect()
}

/// `n` values uniform in [-1, 1).
pub fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    randv(rng, n, -1.0, 1.0)
}

/// Uploads `v`.
pub fn up(gpu: &Gpu, v: &[f32]) -> GpuBuffer<f32> {
    gpu.upload(v).unwrap()
}

/// Downloads `b`.
pub fn down(gpu: &Gpu, b: &GpuBuffer<f32>) -> Vec<f32> {
    gpu.download(b).unwrap()
}

/// Bit-for-bit equality (NaN-safe).
pub fn assert_bits(what: &str, a: &[f32], b: &[f32]) {
    assert!(bits(a) == bits(b), "{what}: results differ in bits");
}

/// |got − want| ≤ tol·(scale + |want|) everywhere.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32, scale: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (scale + w.abs()),
            "{what}[{i}]: cuda {g} cpu {w}"
        );
    }
}

/// |got − want| ≤ 1e-6·(|want| + 1) elementwise (pooling and upsampling: see their module
/// docs).
pub fn close(got: &[f32], want: &[f32], what: &str) {
    assert_close(what, got, want, 1e-6, 1.0);
}
