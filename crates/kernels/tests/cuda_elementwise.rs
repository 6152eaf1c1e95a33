//! CUDA elementwise arithmetic and bias broadcasts against their CPU twins on fresh random
//! inputs, outputs poisoned with NaN before each run. Without a GPU the kernels run on the CUDA
//! emulator.

mod common;

use common::{bits, gpu_or_skip, poisoned, random, same_error};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::elementwise as ew;
use scalarize_kernels::cuda::{self, Gpu, GpuBuffer};

/// Lengths with tails around the 256-thread blocks.
const LENS: &[usize] = &[1, 7, 255, 257, 1000, 4099];

type Binary = fn(
    &Gpu,
    &GpuBuffer<f32>,
    &GpuBuffer<f32>,
    &mut GpuBuffer<f32>,
) -> scalarize_kernels::Result<()>;
type CpuBinary = fn(&[f32], &[f32], &mut [f32]) -> scalarize_kernels::Result<()>;

#[test]
fn add_sub_mul_match_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("add_sub_mul_match_cpu_bit_for_bit") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(1);
    let ops: [(&str, Binary, CpuBinary); 3] = [
        ("add", cuda::elementwise::add, cpu::add),
        ("sub", cuda::elementwise::sub, cpu::sub),
        ("mul", cuda::elementwise::mul, cpu::mul),
    ];
    for &n in LENS {
        let (a, b) = (random(&mut rng, n), random(&mut rng, n));
        let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
        for (name, f, g) in ops {
            let mut want = vec![0.0; n];
            g(&a, &b, &mut want).unwrap();
            let mut dy = poisoned(&gpu, n);
            f(&gpu, &da, &db, &mut dy).unwrap();
            // One IEEE operation per element: identical on every device.
            assert_eq!(
                bits(&gpu.download(&dy).unwrap()),
                bits(&want),
                "{name} n={n}"
            );
        }
    }
}

#[test]
fn scale_and_axpy_match_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("scale_and_axpy_match_cpu_bit_for_bit") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(2);
    for &n in LENS {
        let (x, y0) = (random(&mut rng, n), random(&mut rng, n));
        let s = rng.random_range(-2.0f32..2.0);
        let dx = gpu.upload(&x).unwrap();

        let mut want = vec![0.0; n];
        cpu::scale(&x, s, &mut want).unwrap();
        let mut dy = poisoned(&gpu, n);
        cuda::elementwise::scale(&gpu, &dx, s, &mut dy).unwrap();
        assert_eq!(
            bits(&gpu.download(&dy).unwrap()),
            bits(&want),
            "scale n={n}"
        );

        // Accumulates into y; no FMA contraction, so the same two roundings as the CPU.
        let mut want = y0.clone();
        cpu::axpy_acc(s, &x, &mut want).unwrap();
        let mut dy = gpu.upload(&y0).unwrap();
        cuda::elementwise::axpy_acc(&gpu, s, &dx, &mut dy).unwrap();
        assert_eq!(bits(&gpu.download(&dy).unwrap()), bits(&want), "axpy n={n}");
    }
}

#[test]
fn bias_adds_match_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("bias_adds_match_cpu_bit_for_bit") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(3);
    // hw = 1 (one row per thread group of 1), odd planes, planes longer than a block.
    for &(n, c, hw) in &[
        (1, 1, 1),
        (2, 3, 1),
        (3, 5, 7),
        (2, 4, 33),
        (1, 3, 300),
        (5, 1, 16),
    ] {
        let x = random(&mut rng, n * c * hw);
        let bias = random(&mut rng, c);
        let mut want = vec![0.0; x.len()];
        cpu::add_bias_channels(n, c, hw, &x, &bias, &mut want).unwrap();
        let (dx, db) = (gpu.upload(&x).unwrap(), gpu.upload(&bias).unwrap());
        let mut dy = poisoned(&gpu, x.len());
        cuda::elementwise::add_bias_channels(&gpu, n, c, hw, &dx, &db, &mut dy).unwrap();
        assert_eq!(
            bits(&gpu.download(&dy).unwrap()),
            bits(&want),
            "add_bias_channels n={n} c={c} hw={hw}"
        );
    }
    for &(rows, dim) in &[(1, 1), (7, 1), (3, 5), (4, 64), (2, 300), (33, 9)] {
        let x = random(&mut rng, rows * dim);
        let bias = random(&mut rng, dim);
        let mut want = vec![0.0; x.len()];
        cpu::add_bias_rows(rows, dim, &x, &bias, &mut want).unwrap();
        let (dx, db) = (gpu.upload(&x).unwrap(), gpu.upload(&bias).unwrap());
        let mut dy = poisoned(&gpu, x.len());
        cuda::elementwise::add_bias_rows(&gpu, rows, dim, &dx, &db, &mut dy).unwrap();
        assert_eq!(
            bits(&gpu.download(&dy).unwrap()),
            bits(&want),
            "add_bias_rows rows={rows} dim={dim}"
        );
    }
}

/// Both sides sum in f64, so they differ by at most one f32 rounding of the result (plus f64
/// order effects, far below that, scaled by the sum of magnitudes).
fn assert_sums_close(got: &[f32], want: &[f32], abs_sum: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (k, ((&g, &w), &s)) in got.iter().zip(want).zip(abs_sum).enumerate() {
        let tol = 1e-6 * w.abs() as f64 + 1e-12 * s;
        assert!(
            (g as f64 - w as f64).abs() <= tol,
            "{what}: [{k}] cuda {g} cpu {w}"
        );
    }
}

#[test]
fn bias_grads_match_cpu_and_are_reproducible() {
    let Some(gpu) = gpu_or_skip("bias_grads_match_cpu_and_are_reproducible") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(4);
    // (1, 3, 9000) and (40, 2, 300) have more than one chunk per channel (two-pass sums).
    for &(n, c, hw) in &[
        (1, 1, 1),
        (3, 5, 1),
        (2, 3, 7),
        (4, 6, 49),
        (1, 3, 9000),
        (40, 2, 300),
    ] {
        let dy = random(&mut rng, n * c * hw);
        let mut want = vec![0.0; c];
        cpu::bias_grad_channels(n, c, hw, &dy, &mut want).unwrap();
        let mut abs = vec![0.0f64; c];
        for (i, p) in dy.chunks(hw).enumerate() {
            abs[i % c] += p.iter().map(|v| v.abs() as f64).sum::<f64>();
        }
        let ddy = gpu.upload(&dy).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut db = poisoned(&gpu, c);
            cuda::elementwise::bias_grad_channels(&gpu, n, c, hw, &ddy, &mut db).unwrap();
            runs.push(gpu.download(&db).unwrap());
        }
        let what = format!("bias_grad_channels n={n} c={c} hw={hw}");
        assert_sums_close(&runs[0], &want, &abs, &what);
        assert_eq!(bits(&runs[0]), bits(&runs[1]), "{what}: two runs differ");
    }
    // (600, 37) and (300, 1) take several row chunks.
    for &(rows, dim) in &[
        (1, 1),
        (1, 40),
        (5, 3),
        (17, 33),
        (600, 37),
        (300, 1),
        (2, 70),
    ] {
        let dy = random(&mut rng, rows * dim);
        let mut want = vec![0.0; dim];
        cpu::bias_grad_rows(rows, dim, &dy, &mut want).unwrap();
        let mut abs = vec![0.0f64; dim];
        for r in dy.chunks(dim) {
            for (a, v) in abs.iter_mut().zip(r) {
                *a += v.abs() as f64;
            }
        }
        let ddy = gpu.upload(&dy).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut db = poisoned(&gpu, dim);
            cuda::elementwise::bias_grad_rows(&gpu, rows, dim, &ddy, &mut db).unwrap();
            runs.push(gpu.download(&db).unwrap());
        }
        let what = format!("bias_grad_rows rows={rows} dim={dim}");
        assert_sums_close(&runs[0], &want, &abs, &what);
        assert_eq!(bits(&runs[0]), bits(&runs[1]), "{what}: two runs differ");
    }
}

#[test]
fn grid_stride_loops_cover_more_than_one_grid() {
    let Some(gpu) = gpu_or_skip("grid_stride_loops_cover_more_than_one_grid") else {
        return;
    };
    // The launches cap the grid at 8192 blocks of 256 threads; past that every thread takes
    // several trips (the same loop as every flat kernel). About 3 s on the emulator.
    let n = 8192 * 256 + 1001;
    let mut rng = StdRng::seed_from_u64(5);
    let (a, b) = (random(&mut rng, n), random(&mut rng, n));
    let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
    let mut want = vec![0.0; n];
    cpu::add(&a, &b, &mut want).unwrap();
    let mut dy = poisoned(&gpu, n);
    ew::add(&gpu, &da, &db, &mut dy).unwrap();
    assert!(
        bits(&gpu.download(&dy).unwrap()) == bits(&want),
        "add n={n}"
    );
}

#[test]
fn bad_shapes_are_refused_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused_like_the_cpu") else {
        return;
    };
    let (h4, h5) = (vec![1.0f32; 4], vec![1.0f32; 5]);
    let (d4, d5) = (gpu.upload(&h4).unwrap(), gpu.upload(&h5).unwrap());
    let d0 = gpu.zeros::<f32>(0).unwrap();
    let mut o4 = poisoned(&gpu, 4);
    let mut h = vec![0.0f32; 4];

    same_error(
        ew::add(&gpu, &d4, &d5, &mut o4).unwrap_err(),
        cpu::add(&h4, &h5, &mut h).unwrap_err(),
    );
    same_error(
        ew::sub(&gpu, &d5, &d4, &mut o4).unwrap_err(),
        cpu::sub(&h5, &h4, &mut h).unwrap_err(),
    );
    same_error(
        ew::mul(&gpu, &d0, &d0, &mut o4).unwrap_err(),
        cpu::mul(&[], &[], &mut h).unwrap_err(),
    );
    same_error(
        ew::scale(&gpu, &d5, 2.0, &mut o4).unwrap_err(),
        cpu::scale(&h5, 2.0, &mut h).unwrap_err(),
    );
    same_error(
        ew::axpy_acc(&gpu, 2.0, &d5, &mut o4).unwrap_err(),
        cpu::axpy_acc(2.0, &h5, &mut h).unwrap_err(),
    );
    same_error(
        ew::add_bias_channels(&gpu, 1, 2, 2, &d4, &d5, &mut o4).unwrap_err(),
        cpu::add_bias_channels(1, 2, 2, &h4, &h5, &mut h).unwrap_err(),
    );
    same_error(
        ew::add_bias_channels(&gpu, 1, 0, 2, &d4, &d5, &mut o4).unwrap_err(),
        cpu::add_bias_channels(1, 0, 2, &h4, &h5, &mut h).unwrap_err(),
    );
    same_error(
        ew::bias_grad_channels(&gpu, 1, 2, 3, &d4, &mut o4).unwrap_err(),
        cpu::bias_grad_channels(1, 2, 3, &h4, &mut h).unwrap_err(),
    );
    same_error(
        ew::add_bias_rows(&gpu, 2, 2, &d5, &d4, &mut o4).unwrap_err(),
        cpu::add_bias_rows(2, 2, &h5, &h4, &mut h).unwrap_err(),
    );
    same_error(
        ew::bias_grad_rows(&gpu, 2, 2, &d4, &mut o4).unwrap_err(),
        cpu::bias_grad_rows(2, 2, &h4, &mut h).unwrap_err(),
    );
    // Nothing was written by the refused calls.
    assert!(gpu.download(&o4).unwrap().iter().all(|v| v.is_nan()));
}
