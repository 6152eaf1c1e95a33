//! CUDA softmax (forward and backward) against its CPU twin on fresh random inputs, outputs
//! poisoned with NaN before each run; runs on the CUDA emulator without a GPU.

mod common;

use common::poisoned;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::softmax::{WARP_MAX_DIM, softmax_backward, softmax_forward};

/// (rows, dim): odd lengths exercise the lane tails; 1 is a degenerate row; 2049 > WARP_MAX_DIM
/// takes the block-per-row path.
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 1),
    (9, 7),
    (5, 33),
    (2, 1000),
    (1, 2049),
    (3, 2049),
];

fn random(rng: &mut StdRng, n: usize, extreme: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if extreme && rng.random_bool(0.3) {
                if rng.random_bool(0.5) { 1e4 } else { -1e4 }
            } else {
                rng.random_range(-6.0f32..6.0)
            }
        })
        .collect()
}

/// |got − want| ≤ 1e-5·|want| + 1e-7·row_scale: the CPU sums in f64 (the GPU in f32 trees)
/// and uses its own exp, so agreement is to a few float ulps, relative to the row's size.
fn close(got: &[f32], want: &[f32], dim: usize, row_scale: &[f32], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-6 * row_scale[i / dim];
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i} (row {}, col {}): cuda {g} cpu {w}",
            i / dim,
            i % dim
        );
    }
}

#[test]
fn softmax_matches_cpu() {
    // Both row paths are covered.
    const { assert!(2049 > WARP_MAX_DIM && 1000 <= WARP_MAX_DIM) };
    let Some(gpu) = Gpu::for_tests("softmax_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(31);
    for &(rows, dim) in SHAPES {
        for extreme in [false, true] {
            let what = format!("rows={rows} dim={dim} extreme={extreme}");
            let n = rows * dim;
            let x = random(&mut rng, n, extreme);
            let dy: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let mut want_y = vec![0.0; n];
            cpu::softmax_forward(rows, dim, &x, &mut want_y).unwrap();
            let mut want_dx = vec![0.0; n];
            cpu::softmax_backward(rows, dim, &want_y, &dy, &mut want_dx).unwrap();

            let (dx_, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
            let mut y = poisoned(&gpu, n);
            softmax_forward(&gpu, rows, dim, &dx_, &mut y).unwrap();
            let got_y = gpu.download(&y).unwrap();
            close(
                &got_y,
                &want_y,
                dim,
                &vec![1.0; rows],
                &format!("forward {what}"),
            );
            // Probabilities: every row sums to 1 and none is NaN.
            for r in got_y.chunks(dim) {
                let s: f64 = r.iter().map(|&v| v as f64).sum();
                assert!((s - 1.0).abs() < 1e-5, "{what}: row sums to {s}");
            }

            // The backward from the CPU's y, so that only the backward is compared.
            let dyv = gpu.upload(&want_y).unwrap();
            let mut dx = poisoned(&gpu, n);
            softmax_backward(&gpu, rows, dim, &dyv, &ddy, &mut dx).unwrap();
            let got_dx = gpu.download(&dx).unwrap();
            // dx = y (dy − dot): the subtraction cancels, so errors scale with max |y|·(|dy| + |dot|).
            let scale: Vec<f32> = want_y
                .chunks(dim)
                .zip(dy.chunks(dim))
                .map(|(yr, gr)| {
                    let ymax = yr.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                    let gmax = gr.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                    2.0 * ymax * gmax
                })
                .collect();
            close(&got_dx, &want_dx, dim, &scale, &format!("backward {what}"));

            // Reproducible bit for bit.
            let mut y2 = poisoned(&gpu, n);
            softmax_forward(&gpu, rows, dim, &dx_, &mut y2).unwrap();
            let mut dx2 = poisoned(&gpu, n);
            softmax_backward(&gpu, rows, dim, &dyv, &ddy, &mut dx2).unwrap();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(
                bits(gpu.download(&y2).unwrap()),
                bits(got_y),
                "{what}: forward"
            );
            assert_eq!(
                bits(gpu.download(&dx2).unwrap()),
                bits(got_dx),
                "{what}: backward"
            );
        }
    }
}

#[test]
fn softmax_rejects_bad_shapes() {
    let Some(gpu) = Gpu::for_tests("softmax_rejects_bad_shapes") else {
        return;
    };
    let x = gpu.upload(&[0.5f32; 6]).unwrap();
    let mut y = poisoned(&gpu, 6);
    let e = softmax_forward(&gpu, 2, 4, &x, &mut y).unwrap_err();
    assert!(
        e.to_string()
            .contains("buffer `x` has 6 elements, expected 8"),
        "{e}"
    );
    let e = softmax_forward(&gpu, 0, 6, &x, &mut y).unwrap_err();
    assert!(e.to_string().contains("dimension `rows` is 0"), "{e}");
    let mut y5 = poisoned(&gpu, 5);
    let e = softmax_forward(&gpu, 2, 3, &x, &mut y5).unwrap_err();
    assert!(e.to_string().contains("buffer `y` has 5"), "{e}");
    let e = softmax_backward(&gpu, 3, 2, &x, &y5, &mut y).unwrap_err();
    assert!(e.to_string().contains("buffer `dy` has 5"), "{e}");
    let e = softmax_backward(&gpu, 3, 2, &x, &x, &mut y5).unwrap_err();
    assert!(e.to_string().contains("buffer `dx` has 5"), "{e}");
    // The failed calls left the outputs alone.
    assert!(gpu.download(&y).unwrap().iter().all(|v| v.is_nan()));
}
