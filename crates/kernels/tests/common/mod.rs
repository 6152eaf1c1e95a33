//! Helpers shared by the CUDA op tests (tests/cuda_*.rs of the simple families): the device or
//! a skip, NaN-poisoned outputs, bit patterns, same-error checks and plain random inputs.

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
