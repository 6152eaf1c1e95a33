//! Helpers shared by the CUDA tests of batch norm, layer norm, conv, pooling and upsampling
//! (each test file is its own crate and uses a subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::sync::Arc;

use rand::RngExt;
use rand::rngs::StdRng;
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

/// The test's device (the emulator without a GPU), or None when the test should skip.
pub fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
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

/// A device buffer of NaN: a kernel that skips an element leaves NaN behind.
pub fn nan_buf(gpu: &Gpu, len: usize) -> GpuBuffer<f32> {
    gpu.upload(&vec![f32::NAN; len]).unwrap()
}

/// Downloads `b`.
pub fn down(gpu: &Gpu, b: &GpuBuffer<f32>) -> Vec<f32> {
    gpu.download(b).unwrap()
}

/// The bit patterns of `v` (NaN-safe equality).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
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
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * (w.abs() + 1.0);
        assert!((g - w).abs() <= tol, "{what}[{i}]: cuda {g} cpu {w}");
    }
}
