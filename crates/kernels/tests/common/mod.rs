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

/// Bytes of memory available to new allocations, from /proc/meminfo (None where unreadable).
pub fn mem_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A value in [-1, 1) from a 64-bit index (splitmix64), so that huge inputs fill in parallel.
pub fn hashed_unit(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// A t x p row-major matrix filled in parallel: row 0 holds values in [-1, 1), row r > 0 is
/// 0.6 row 0 + 0.8 independent values, so cosines are about 0.6 with row 0 and 0.36 between
/// other rows.
pub fn hashed_rows(t: usize, p: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 20;
    let mut g = vec![0.0f32; t * p];
    g.par_chunks_mut(CHUNK).enumerate().for_each(|(c, part)| {
        for (k, v) in part.iter_mut().enumerate() {
            let idx = c * CHUNK + k;
            let (r, col) = (idx / p, (idx % p) as u64);
            let x = hashed_unit(t as u64 * col);
            *v = if r == 0 {
                x
            } else {
                0.6 * x + 0.8 * hashed_unit(t as u64 * col + r as u64)
            };
        }
    });
    g
}

/// Asserts |a - b| <= tol * sqrt(a_ii * a_jj) elementwise (the natural scale of a Gram entry).
pub fn assert_gram_close(got: &[f64], want: &[f64], t: usize, tol: f64, what: &str) {
    for i in 0..t {
        for j in 0..t {
            let scale = (want[i * t + i] * want[j * t + j]).sqrt().max(1e-300);
            let err = (got[i * t + j] - want[i * t + j]).abs() / scale;
            assert!(
                err <= tol,
                "{what}: entry ({i},{j}) got {} want {} rel err {err}",
                got[i * t + j],
                want[i * t + j]
            );
        }
    }
}
