//! CUDA sums and means against their CPU twins on fresh random inputs, outputs poisoned with
//! NaN before each run, two runs compared bit for bit. Without a GPU the kernels run on the
//! CUDA emulator.

mod common;

use common::{bits, gpu_or_skip, poisoned, same_error};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::reduce as rd;
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

/// Values in [-3, 3) shifted by `offset` (an offset makes the sums large next to their
/// cancellation-free parts).
fn random(rng: &mut StdRng, n: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|_| offset + rng.random_range(-3.0f32..3.0))
        .collect()
}

/// Both sides sum in f64, so they differ by at most one f32 rounding of the result (1.2e-7
/// relative) plus f64 order effects, far below that, scaled by the sum of magnitudes `abs`.
fn close(got: f32, want: f32, abs: f64) -> bool {
    (got as f64 - want as f64).abs() <= 1e-6 * want.abs() as f64 + 1e-12 * abs
}

#[test]
fn sum_and_mean_match_cpu_and_are_reproducible() {
    let Some(gpu) = gpu_or_skip("sum_and_mean_match_cpu_and_are_reproducible") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(31);
    // Past 255 the contiguous row kernel runs; past 8192 it splits into chunks.
    for &n in &[1usize, 2, 31, 255, 256, 1000, 8193, 30_001] {
        for offset in [0.0f32, 10.0] {
            let x = random(&mut rng, n, offset);
            let abs: f64 = x.iter().map(|v| v.abs() as f64).sum();
            let dx = gpu.upload(&x).unwrap();
            let (s0, s1) = (rd::sum(&gpu, &dx).unwrap(), rd::sum(&gpu, &dx).unwrap());
            let (m0, m1) = (rd::mean(&gpu, &dx).unwrap(), rd::mean(&gpu, &dx).unwrap());
            assert_eq!(s0.to_bits(), s1.to_bits(), "sum n={n}: runs differ");
            assert_eq!(m0.to_bits(), m1.to_bits(), "mean n={n}: runs differ");
            let (ws, wm) = (cpu::sum(&x).unwrap(), cpu::mean(&x).unwrap());
            assert!(close(s0, ws, abs), "sum n={n}: cuda {s0} cpu {ws}");
            assert!(
                close(m0, wm, abs / n as f64),
                "mean n={n}: cuda {m0} cpu {wm}"
            );
        }
    }
}

#[test]
fn sum_and_mean_axis_match_cpu_and_are_reproducible() {
    let Some(gpu) = gpu_or_skip("sum_and_mean_axis_match_cpu_and_are_reproducible") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(32);
    let shapes: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 5, 1),
        (3, 1, 4),
        (2, 7, 3),
        (5, 300, 1),  // contiguous rows (row kernel)
        (1, 9000, 1), // one row in several chunks
        (4, 17, 33),  // columns across two 32-wide tiles
        (2, 700, 40), // columns in several row chunks
        (1, 3, 70),
        (37, 2, 1), // short contiguous rows (column kernel, one thread per output)
    ];
    for &(outer, len, inner) in shapes {
        let x = random(&mut rng, outer * len * inner, 1.0);
        let mut abs = vec![0.0f64; outer * inner];
        for o in 0..outer {
            for l in 0..len {
                for i in 0..inner {
                    abs[o * inner + i] += x[(o * len + l) * inner + i].abs() as f64;
                }
            }
        }
        let dx = gpu.upload(&x).unwrap();
        type CudaOp = fn(
            &Gpu,
            usize,
            usize,
            usize,
            &GpuBuffer<f32>,
            &mut GpuBuffer<f32>,
        ) -> scalarize_kernels::Result<()>;
        type CpuOp = fn(usize, usize, usize, &[f32], &mut [f32]) -> scalarize_kernels::Result<()>;
        let ops: [(&str, CudaOp, CpuOp, f64); 2] = [
            ("sum_axis", rd::sum_axis, cpu::sum_axis, 1.0),
            ("mean_axis", rd::mean_axis, cpu::mean_axis, 1.0 / len as f64),
        ];
        for (name, f, g, factor) in ops {
            let mut want = vec![0.0; outer * inner];
            g(outer, len, inner, &x, &mut want).unwrap();
            let mut runs = Vec::new();
            for _ in 0..2 {
                let mut y = poisoned(&gpu, outer * inner);
                f(&gpu, outer, len, inner, &dx, &mut y).unwrap();
                runs.push(gpu.download(&y).unwrap());
            }
            let what = format!("{name} [{outer}, {len}, {inner}]");
            assert_eq!(bits(&runs[0]), bits(&runs[1]), "{what}: runs differ");
            for k in 0..want.len() {
                assert!(
                    close(runs[0][k], want[k], abs[k] * factor),
                    "{what} [{k}]: cuda {} cpu {}",
                    runs[0][k],
                    want[k]
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_refused_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused_like_the_cpu") else {
        return;
    };
    let h6 = vec![1.0f32; 6];
    let d6 = gpu.upload(&h6).unwrap();
    let d0 = gpu.zeros::<f32>(0).unwrap();
    same_error(rd::sum(&gpu, &d0).unwrap_err(), cpu::sum(&[]).unwrap_err());
    same_error(
        rd::mean(&gpu, &d0).unwrap_err(),
        cpu::mean(&[]).unwrap_err(),
    );
    let mut y = poisoned(&gpu, 2);
    let mut h = vec![0.0f32; 2];
    // x too short, y the wrong size, a zero dimension.
    same_error(
        rd::sum_axis(&gpu, 2, 4, 1, &d6, &mut y).unwrap_err(),
        cpu::sum_axis(2, 4, 1, &h6, &mut h).unwrap_err(),
    );
    same_error(
        rd::mean_axis(&gpu, 1, 2, 3, &d6, &mut y).unwrap_err(),
        cpu::mean_axis(1, 2, 3, &h6, &mut h).unwrap_err(),
    );
    same_error(
        rd::sum_axis(&gpu, 2, 0, 1, &d6, &mut y).unwrap_err(),
        cpu::sum_axis(2, 0, 1, &h6, &mut h).unwrap_err(),
    );
    assert!(gpu.download(&y).unwrap().iter().all(|v| v.is_nan()));
}
