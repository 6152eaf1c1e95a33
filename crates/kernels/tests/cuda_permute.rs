//! CUDA permute and transpose2d against their CPU twins on fresh random inputs, outputs
//! poisoned with NaN before each run. Both are copies, so the results must match bit for bit.
//! Without a GPU the kernels run on the CUDA emulator.

mod common;

use common::{bits, gpu_or_skip, poisoned, random, same_error};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::permute as pm;

/// Runs cuda and cpu permute on a fresh x and compares bit for bit.
fn check_permute(gpu: &Gpu, rng: &mut StdRng, shape: &[usize], perm: &[usize]) {
    let n: usize = shape.iter().product();
    let x = random(rng, n);
    let mut want = vec![0.0; n];
    cpu::permute(&x, shape, perm, &mut want).unwrap();
    let dx = gpu.upload(&x).unwrap();
    let mut dy = poisoned(gpu, n);
    pm::permute(gpu, &dx, shape, perm, &mut dy).unwrap();
    assert_eq!(
        bits(&gpu.download(&dy).unwrap()),
        bits(&want),
        "permute shape={shape:?} perm={perm:?}"
    );
}

#[test]
fn permute_matches_cpu_on_chosen_cases() {
    let Some(gpu) = gpu_or_skip("permute_matches_cpu_on_chosen_cases") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(51);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[0]),                               // one element
        (&[37], &[0]),                              // rank 1: a copy
        (&[3, 1, 4], &[1, 0, 2]),                   // only a size-1 axis moves: a copy
        (&[2, 3, 5], &[0, 1, 2]),                   // identity
        (&[2, 3, 5], &[1, 0, 2]),                   // last axis stays: contiguous rows
        (&[4, 3, 2, 40], &[2, 0, 1, 3]),            // rows longer than 32
        (&[2, 5, 3, 4, 7], &[2, 0, 3, 1, 4]),       // [B, T, 3, H, D] -> [3, B, H, T, D]
        (&[2, 3, 33, 40], &[0, 1, 3, 2]),           // batched transpose of the last two axes
        (&[2, 3, 35, 9], &[0, 2, 1, 3]),            // [B, H, T, D] -> [B, T, H, D]
        (&[5, 70], &[1, 0]),                        // plain transpose, tails in both tiles
        (&[3, 2, 2, 3, 2, 5], &[5, 3, 1, 4, 0, 2]), // rank 6, four batch axes
        (&[2, 2, 2, 2, 2, 2], &[1, 0, 3, 2, 5, 4]), // rank 6, pairs swapped
        (&[6, 1, 50], &[2, 1, 0]),                  // transpose around a size-1 axis
        (&[40, 3], &[1, 0]),                        // a narrow contiguous axis
    ];
    for &(shape, perm) in cases {
        check_permute(&gpu, &mut rng, shape, perm);
    }
}

#[test]
fn permute_matches_cpu_on_random_cases() {
    let Some(gpu) = gpu_or_skip("permute_matches_cpu_on_random_cases") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(52);
    for _ in 0..60 {
        let rank = rng.random_range(1..=6usize);
        let shape: Vec<usize> = (0..rank).map(|_| rng.random_range(1..=5usize)).collect();
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        check_permute(&gpu, &mut rng, &shape, &perm);
        // The inverse permutation brings x back.
        let n: usize = shape.iter().product();
        let x = random(&mut rng, n);
        let dx = gpu.upload(&x).unwrap();
        let mut dy = poisoned(&gpu, n);
        pm::permute(&gpu, &dx, &shape, &perm, &mut dy).unwrap();
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let mut back = poisoned(&gpu, n);
        let inv = pm::inverse_perm(&perm);
        pm::permute(&gpu, &dy, &out_shape, &inv, &mut back).unwrap();
        assert_eq!(
            bits(&gpu.download(&back).unwrap()),
            bits(&x),
            "{shape:?} {perm:?}"
        );
    }
}

#[test]
fn transpose2d_matches_cpu() {
    let Some(gpu) = gpu_or_skip("transpose2d_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(53);
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (7, 1),
        (2, 3),
        (32, 32),
        (33, 65),
        (64, 31),
        (5, 100),
    ] {
        let x = random(&mut rng, rows * cols);
        let mut want = vec![0.0; rows * cols];
        cpu::transpose2d(rows, cols, &x, &mut want).unwrap();
        let dx = gpu.upload(&x).unwrap();
        let mut dy = poisoned(&gpu, rows * cols);
        pm::transpose2d(&gpu, rows, cols, &dx, &mut dy).unwrap();
        assert_eq!(
            bits(&gpu.download(&dy).unwrap()),
            bits(&want),
            "transpose2d rows={rows} cols={cols}"
        );
    }
}

#[test]
fn bad_shapes_are_refused_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused_like_the_cpu") else {
        return;
    };
    let h6 = vec![1.0f32; 6];
    let d6 = gpu.upload(&h6).unwrap();
    let mut y = poisoned(&gpu, 6);
    let mut hy = vec![0.0f32; 6];
    let bad: &[(&[usize], &[usize])] = &[
        (&[], &[]),                                       // rank 0
        (&[1, 1, 1, 1, 1, 1, 6], &[0, 1, 2, 3, 4, 5, 6]), // rank 7
        (&[2, 3], &[0, 0]),                               // not a permutation
        (&[2, 3], &[0, 2]),                               // axis out of range
        (&[2, 3], &[1]),                                  // too short
        (&[2, 4], &[1, 0]),                               // x has 6 elements, not 8
        (&[2, 0], &[1, 0]),                               // a zero axis
    ];
    for &(shape, perm) in bad {
        same_error(
            pm::permute(&gpu, &d6, shape, perm, &mut y).unwrap_err(),
            cpu::permute(&h6, shape, perm, &mut hy).unwrap_err(),
        );
    }
    let mut y5 = poisoned(&gpu, 5);
    let mut hy5 = vec![0.0f32; 5];
    same_error(
        pm::permute(&gpu, &d6, &[2, 3], &[1, 0], &mut y5).unwrap_err(),
        cpu::permute(&h6, &[2, 3], &[1, 0], &mut hy5).unwrap_err(),
    );
    same_error(
        pm::transpose2d(&gpu, 2, 3, &d6, &mut y5).unwrap_err(),
        cpu::transpose2d(2, 3, &h6, &mut hy5).unwrap_err(),
    );
    same_error(
        pm::transpose2d(&gpu, 3, 3, &d6, &mut y).unwrap_err(),
        cpu::transpose2d(3, 3, &h6, &mut hy).unwrap_err(),
    );
    assert!(gpu.download(&y).unwrap().iter().all(|v| v.is_nan()));
    assert_eq!(pm::inverse_perm(&[2, 0, 1]), vec![1, 2, 0]);
}
