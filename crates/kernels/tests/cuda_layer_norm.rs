//! CUDA layer norm against its CPU twin (crates/kernels/src/cpu/layer_norm.rs) on fresh
//! random inputs, outputs poisoned with NaN before each run. Without a GPU the kernels run on
//! the CUDA emulator (small shapes); scripts/gpu-check.sh runs the same tests on a GPU.

mod common;

use common::{assert_bits, assert_close, down, gpu_or_skip, poisoned as nan, randv, up};
use rand::SeedableRng;
use rand::rngs::StdRng;
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::{Gpu, layer_norm as ln};

const EPS: f32 = 1e-5;

/// Shapes (rows, dim): a single value, rows that leave a block's warps idle, rows shorter and
/// longer than a warp, several row chunks (rows > 16) and column tiles (dim > 256) for dgamma.
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 5),
    (7, 33),
    (4, 100),
    (2, 1000),
    (40, 17),
    (33, 300),
    (9, 64),
];

/// Inputs of one case.
struct Case {
    rows: usize,
    dim: usize,
    x: Vec<f32>,
    dy: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Case {
    fn new(r: &mut StdRng, (rows, dim): (usize, usize)) -> Self {
        // Per-row offsets so the rows' statistics differ.
        let offs = randv(r, rows, -2.0, 2.0);
        let x = randv(r, rows * dim, -1.5, 1.5)
            .iter()
            .enumerate()
            .map(|(i, v)| offs[i / dim] + v)
            .collect();
        Self {
            rows,
            dim,
            x,
            dy: randv(r, rows * dim, -1.0, 1.0),
            gamma: randv(r, dim, 0.5, 1.5),
            beta: randv(r, dim, -0.5, 0.5),
        }
    }
}

/// Every output of forward then backward: (y, mean, invstd, dx, dgamma, dbeta).
type Outs = [Vec<f32>; 6];

fn cpu_run(t: &Case) -> Outs {
    let (rows, dim) = (t.rows, t.dim);
    let (mut y, mut m, mut s) = (vec![0.0; rows * dim], vec![0.0; rows], vec![0.0; rows]);
    cpu::layer_norm_forward(
        rows, dim, &t.x, &t.gamma, &t.beta, EPS, &mut y, &mut m, &mut s,
    )
    .unwrap();
    let (mut dx, mut dg, mut db) = (vec![0.0; rows * dim], vec![0.0; dim], vec![0.0; dim]);
    cpu::layer_norm_backward(
        rows, dim, &t.x, &t.dy, &t.gamma, &m, &s, &mut dx, &mut dg, &mut db,
    )
    .unwrap();
    [y, m, s, dx, dg, db]
}

fn gpu_run(gpu: &Gpu, t: &Case) -> Outs {
    let (rows, dim) = (t.rows, t.dim);
    let (x, dy, g, b) = (
        up(gpu, &t.x),
        up(gpu, &t.dy),
        up(gpu, &t.gamma),
        up(gpu, &t.beta),
    );
    let (mut y, mut m, mut s) = (nan(gpu, rows * dim), nan(gpu, rows), nan(gpu, rows));
    ln::layer_norm_forward(gpu, rows, dim, &x, &g, &b, EPS, &mut y, &mut m, &mut s).unwrap();
    let (mut dx, mut dg, mut db) = (nan(gpu, rows * dim), nan(gpu, dim), nan(gpu, dim));
    ln::layer_norm_backward(
        gpu, rows, dim, &x, &dy, &g, &m, &s, &mut dx, &mut dg, &mut db,
    )
    .unwrap();
    [y, m, s, dx, dg, db].map(|b| down(gpu, &b))
}

/// Compares every output; the backward's inputs are the forward's (equal up to an ulp).
fn check(what: &str, t: &Case, got: &Outs, want: &Outs) {
    let names = ["y", "save_mean", "save_invstd", "dx"];
    for (k, name) in names.iter().enumerate() {
        // f64 statistics in another order, rounded to f32: an ulp at most, then the same f32
        // operations per element.
        assert_close(&format!("{what} {name}"), &got[k], &want[k], 1e-5, 1.0);
    }
    // Sums over `rows` O(1) terms: relative to their size.
    let scale = t.rows as f32;
    assert_close(&format!("{what} dgamma"), &got[4], &want[4], 1e-6, scale);
    assert_close(&format!("{what} dbeta"), &got[5], &want[5], 1e-6, scale);
}

#[test]
fn forward_and_backward_match_cpu() {
    let Some(gpu) = gpu_or_skip("layer_norm forward_and_backward_match_cpu") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(11);
    for &shape in SHAPES {
        let t = Case::new(&mut r, shape);
        check(&format!("{shape:?}"), &t, &gpu_run(&gpu, &t), &cpu_run(&t));
    }
}

#[test]
fn statistics_survive_a_large_mean() {
    // Rows of mean 1000 and std 0.006: the f64 two-pass statistics keep the variance.
    let Some(gpu) = gpu_or_skip("layer_norm statistics_survive_a_large_mean") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(12);
    for &shape in &[(5, 50), (3, 700)] {
        let mut t = Case::new(&mut r, shape);
        t.x = randv(&mut r, shape.0 * shape.1, -1.0, 1.0)
            .iter()
            .map(|v| 1000.0 + 0.01 * v)
            .collect();
        let got = gpu_run(&gpu, &t);
        let dim = shape.1;
        for (row, xr) in t.x.chunks(dim).enumerate() {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            let is = 1.0 / (var + EPS as f64).sqrt();
            assert!(var > 1e-5, "the data must have spread: var {var}");
            let (gm, gs) = (got[1][row] as f64, got[2][row] as f64);
            assert!(
                (gs - is).abs() <= 1e-6 * is,
                "invstd[{row}]: cuda {gs} f64 {is}"
            );
            assert!(
                (gm - mean).abs() <= 1e-4,
                "mean[{row}]: cuda {gm} f64 {mean}"
            );
        }
        check(&format!("large mean {shape:?}"), &t, &got, &cpu_run(&t));
    }
}

#[test]
fn results_are_reproducible() {
    let Some(gpu) = gpu_or_skip("layer_norm results_are_reproducible") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(13);
    for &shape in &[(33, 300), (40, 17)] {
        let t = Case::new(&mut r, shape);
        let (a, b) = (gpu_run(&gpu, &t), gpu_run(&gpu, &t));
        for k in 0..6 {
            assert_bits(&format!("{shape:?} output {k}"), &a[k], &b[k]);
        }
    }
}

#[test]
fn bad_shapes_are_refused() {
    let Some(gpu) = gpu_or_skip("layer_norm bad_shapes_are_refused") else {
        return;
    };
    let (rows, dim) = (3, 4);
    let x = up(&gpu, &[0.5; 12]);
    let short = up(&gpu, &[0.5; 11]);
    let (g, b, g3) = (
        up(&gpu, &[1.0; 4]),
        up(&gpu, &[0.0; 4]),
        up(&gpu, &[1.0; 3]),
    );
    let (mut y, mut m, mut s) = (nan(&gpu, 12), nan(&gpu, rows), nan(&gpu, rows));
    let expect = |r: scalarize_kernels::Result<()>, op: &str, msg: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.op, op);
        assert!(e.msg.contains(msg), "{e}");
    };
    let f = "cuda::layer_norm_forward";
    expect(
        ln::layer_norm_forward(&gpu, rows, dim, &short, &g, &b, EPS, &mut y, &mut m, &mut s),
        f,
        "`x` has 11 elements, expected 12 (shape [rows=3, dim=4])",
    );
    expect(
        ln::layer_norm_forward(&gpu, 0, dim, &x, &g, &b, EPS, &mut y, &mut m, &mut s),
        f,
        "dimension `rows` is 0",
    );
    expect(
        ln::layer_norm_forward(&gpu, rows, dim, &x, &g, &g3, EPS, &mut y, &mut m, &mut s),
        f,
        "`beta` has 3 elements, expected 4",
    );
    let mut m4 = nan(&gpu, 4);
    expect(
        ln::layer_norm_forward(&gpu, rows, dim, &x, &g, &b, EPS, &mut y, &mut m4, &mut s),
        f,
        "`save_mean` has 4 elements, expected 3",
    );
    let (mut dx, mut dg, mut db) = (nan(&gpu, 12), nan(&gpu, dim), nan(&gpu, dim));
    let (m0, s0) = (up(&gpu, &[0.0; 3]), up(&gpu, &[1.0; 3]));
    let bw = "cuda::layer_norm_backward";
    expect(
        ln::layer_norm_backward(
            &gpu, rows, dim, &x, &short, &g, &m0, &s0, &mut dx, &mut dg, &mut db,
        ),
        bw,
        "`dy` has 11",
    );
    expect(
        ln::layer_norm_backward(
            &gpu, rows, 0, &x, &x, &g, &m0, &s0, &mut dx, &mut dg, &mut db,
        ),
        bw,
        "dimension `dim` is 0",
    );
    let mut dg3 = nan(&gpu, 3);
    expect(
        ln::layer_norm_backward(
            &gpu, rows, dim, &x, &x, &g, &m0, &s0, &mut dx, &mut dg3, &mut db,
        ),
        bw,
        "`dgamma` has 3 elements, expected 4",
    );
    // Refused calls launch nothing: the outputs keep their poison.
    assert!(down(&gpu, &y).iter().all(|v| v.is_nan()));
    assert!(down(&gpu, &dx).iter().all(|v| v.is_nan()));
}
