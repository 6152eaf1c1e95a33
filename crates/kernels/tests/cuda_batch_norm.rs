//! CUDA batch norm against its CPU twin (crates/kernels/src/cpu/batch_norm.rs) on fresh
//! random inputs, outputs poisoned with NaN before each run. Without a GPU the kernels run on
//! the CUDA emulator (small shapes); scripts/gpu-check.sh runs the same tests on a GPU.

mod common;

use common::{assert_bits, down, gpu_or_skip, poisoned as nan, randv, up};
use rand::SeedableRng;
use rand::rngs::StdRng;
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::{Gpu, batch_norm as bn};

const EPS: f32 = 1e-5;

/// Shapes (n, c, hw): a single value per channel, odd sizes with tails, planes wider than a
/// block, and channels large enough that the statistics are split over several blocks (by
/// images: 5x2000; by positions: 1x20000, 2x9000).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 3, 1),
    (2, 3, 5),
    (1, 4, 7),
    (3, 2, 33),
    (4, 5, 16),
    (2, 1, 300),
    (5, 3, 2000),
    (1, 2, 20_000),
    (2, 2, 9_000),
];

/// |got − want| ≤ tol·(1 + |want|) everywhere (values are O(1); the 1 covers results that
/// cancel to near zero, whose error scales with the terms, not the result).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    common::assert_close(what, got, want, tol, 1.0)
}

/// Inputs of one case.
struct Case {
    n: usize,
    c: usize,
    hw: usize,
    x: Vec<f32>,
    res: Vec<f32>,
    dy: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Case {
    fn new(r: &mut StdRng, (n, c, hw): (usize, usize, usize)) -> Self {
        let len = n * c * hw;
        // Per-channel offsets and scales so the channels' statistics differ.
        let offs = randv(r, c, -2.0, 2.0);
        let scales = randv(r, c, 0.5, 2.0);
        let x = randv(r, len, -1.0, 1.0)
            .iter()
            .enumerate()
            .map(|(i, v)| offs[(i / hw) % c] + scales[(i / hw) % c] * v)
            .collect();
        Self {
            n,
            c,
            hw,
            x,
            res: randv(r, len, -1.0, 1.0),
            dy: randv(r, len, -1.0, 1.0),
            gamma: randv(r, c, 0.5, 1.5),
            beta: randv(r, c, -0.5, 0.5),
        }
    }

    fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
}

/// Which training forward / backward pair.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Relu,
    AddRelu,
}

/// (y, save_mean, save_invstd) of the CPU training forward.
fn cpu_forward(k: Kind, t: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = (t.n, t.c, t.hw);
    let (mut y, mut m, mut s) = (vec![0.0; t.len()], vec![0.0; c], vec![0.0; c]);
    let (x, g, b) = (&t.x, &t.gamma, &t.beta);
    match k {
        Kind::Plain => {
            cpu::batch_norm_forward_train(n, c, hw, x, g, b, EPS, &mut y, &mut m, &mut s)
        }
        Kind::Relu => {
            cpu::batch_norm_relu_forward_train(n, c, hw, x, g, b, EPS, &mut y, &mut m, &mut s)
        }
        Kind::AddRelu => cpu::batch_norm_add_relu_forward_train(
            n, c, hw, x, &t.res, g, b, EPS, &mut y, &mut m, &mut s,
        ),
    }
    .unwrap();
    (y, m, s)
}

/// (y, save_mean, save_invstd) of the CUDA training forward.
fn gpu_forward(gpu: &Gpu, k: Kind, t: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = (t.n, t.c, t.hw);
    let (x, g, b, res) = (
        up(gpu, &t.x),
        up(gpu, &t.gamma),
        up(gpu, &t.beta),
        up(gpu, &t.res),
    );
    let (mut y, mut m, mut s) = (nan(gpu, t.len()), nan(gpu, c), nan(gpu, c));
    match k {
        Kind::Plain => {
            bn::batch_norm_forward_train(gpu, n, c, hw, &x, &g, &b, EPS, &mut y, &mut m, &mut s)
        }
        Kind::Relu => bn::batch_norm_relu_forward_train(
            gpu, n, c, hw, &x, &g, &b, EPS, &mut y, &mut m, &mut s,
        ),
        Kind::AddRelu => bn::batch_norm_add_relu_forward_train(
            gpu, n, c, hw, &x, &res, &g, &b, EPS, &mut y, &mut m, &mut s,
        ),
    }
    .unwrap();
    (down(gpu, &y), down(gpu, &m), down(gpu, &s))
}

/// Gradients (dx, dresidual (empty unless AddRelu), dgamma, dbeta).
type Grads = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// The CPU backward of `k` with the given saved statistics and forward output.
fn cpu_backward(k: Kind, t: &Case, y: &[f32], m: &[f32], s: &[f32]) -> Grads {
    let (n, c, hw) = (t.n, t.c, t.hw);
    let (mut dx, mut dg, mut db) = (vec![0.0; t.len()], vec![0.0; c], vec![0.0; c]);
    let mut dr = Vec::new();
    let (x, dy, g) = (&t.x, &t.dy, &t.gamma);
    match k {
        Kind::Plain => {
            cpu::batch_norm_backward(n, c, hw, x, dy, g, m, s, &mut dx, &mut dg, &mut db)
        }
        Kind::Relu => cpu::batch_norm_relu_backward(
            n,
            c,
            hw,
            x,
            dy,
            (g, &t.beta),
            m,
            s,
            &mut dx,
            &mut dg,
            &mut db,
        ),
        Kind::AddRelu => {
            dr = vec![0.0; t.len()];
            cpu::batch_norm_add_relu_backward(
                n, c, hw, x, y, dy, g, m, s, &mut dx, &mut dr, &mut dg, &mut db,
            )
        }
    }
    .unwrap();
    (dx, dr, dg, db)
}

/// The CUDA backward of `k` with dy = `dy` and the given statistics and forward output.
fn gpu_backward(
    gpu: &Gpu,
    k: Kind,
    t: &Case,
    dy: &[f32],
    y: &[f32],
    m: &[f32],
    s: &[f32],
) -> Grads {
    let (n, c, hw) = (t.n, t.c, t.hw);
    let (x, d_dy, g, b) = (
        up(gpu, &t.x),
        up(gpu, dy),
        up(gpu, &t.gamma),
        up(gpu, &t.beta),
    );
    let (d_y, d_m, d_s) = (up(gpu, y), up(gpu, m), up(gpu, s));
    let (mut dx, mut dg, mut db) = (nan(gpu, t.len()), nan(gpu, c), nan(gpu, c));
    let mut dr = nan(gpu, t.len());
    match k {
        Kind::Plain => bn::batch_norm_backward(
            gpu, n, c, hw, &x, &d_dy, &g, &d_m, &d_s, &mut dx, &mut dg, &mut db,
        ),
        Kind::Relu => bn::batch_norm_relu_backward(
            gpu,
            n,
            c,
            hw,
            &x,
            &d_dy,
            (&g, &b),
            &d_m,
            &d_s,
            &mut dx,
            &mut dg,
            &mut db,
        ),
        Kind::AddRelu => bn::batch_norm_add_relu_backward(
            gpu, n, c, hw, &x, &d_y, &d_dy, &g, &d_m, &d_s, &mut dx, &mut dr, &mut dg, &mut db,
        ),
    }
    .unwrap();
    let dr = match k {
        Kind::AddRelu => down(gpu, &dr),
        _ => Vec::new(),
    };
    (down(gpu, &dx), dr, down(gpu, &dg), down(gpu, &db))
}

/// Forward values and every gradient of `k` against the CPU on every shape.
fn check_against_cpu(k: Kind, seed: u64) {
    let name = format!("batch_norm {k:?} matches cpu");
    let Some(gpu) = gpu_or_skip(&name) else {
        return;
    };
    let mut r = StdRng::seed_from_u64(seed);
    for &shape in SHAPES {
        let t = Case::new(&mut r, shape);
        let what = |s: &str| format!("{k:?} {shape:?} {s}");
        let (y, m, s) = cpu_forward(k, &t);
        let (gy, gm, gs) = gpu_forward(&gpu, k, &t);
        // The statistics are f64 sums in another order: equal up to the f32 rounding.
        assert_close(&what("save_mean"), &gm, &m, 1e-6);
        assert_close(&what("save_invstd"), &gs, &s, 1e-6);
        assert_close(&what("y"), &gy, &y, 1e-5);
        // The backward on the CPU's statistics and output, so that both see the same gate.
        let want = cpu_backward(k, &t, &y, &m, &s);
        let got = gpu_backward(&gpu, k, &t, &t.dy, &y, &m, &s);
        assert_close(&what("dx"), &got.0, &want.0, 1e-5);
        assert_close(&what("dresidual"), &got.1, &want.1, 0.0);
        // Sums of n·hw terms (up to 40000) of O(1): compared relative to their size.
        let scale = (t.n * t.hw) as f32;
        for (nm, gv, wv) in [("dgamma", &got.2, &want.2), ("dbeta", &got.3, &want.3)] {
            for (ch, (&g, &w)) in gv.iter().zip(wv).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * (scale + w.abs()),
                    "{}[{ch}]: cuda {g} cpu {w}",
                    what(nm)
                );
            }
        }
    }
}

#[test]
fn forward_and_backward_match_cpu() {
    check_against_cpu(Kind::Plain, 1);
}

#[test]
fn fused_relu_matches_cpu() {
    check_against_cpu(Kind::Relu, 2);
}

#[test]
fn fused_add_relu_matches_cpu() {
    check_against_cpu(Kind::AddRelu, 3);
}

#[test]
fn fused_backward_gates_agree_with_the_device_forward() {
    // The gate the ReLU backward recomputes from x must be exactly the device forward's y > 0:
    // the fused backward equals the plain backward of dy zeroed where the forward's y ≤ 0, bit
    // for bit (the same values summed in the same order).
    let Some(gpu) = gpu_or_skip("fused_backward_gates_agree_with_the_device_forward") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(4);
    for &shape in &[(3, 4, 17), (5, 3, 2000)] {
        let t = Case::new(&mut r, shape);
        for k in [Kind::Relu, Kind::AddRelu] {
            let (y, m, s) = gpu_forward(&gpu, k, &t);
            let gated: Vec<f32> =
                t.dy.iter()
                    .zip(&y)
                    .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
                    .collect();
            assert!(gated.contains(&0.0) && gated.iter().any(|&v| v != 0.0));
            let fused = gpu_backward(&gpu, k, &t, &t.dy, &y, &m, &s);
            let plain = gpu_backward(&gpu, Kind::Plain, &t, &gated, &y, &m, &s);
            let what = |s: &str| format!("{k:?} {shape:?} {s}");
            assert_bits(&what("dx"), &fused.0, &plain.0);
            assert_bits(&what("dgamma"), &fused.2, &plain.2);
            assert_bits(&what("dbeta"), &fused.3, &plain.3);
            if let Kind::AddRelu = k {
                assert_bits(&what("dresidual"), &fused.1, &gated);
            }
        }
    }
}

#[test]
fn statistics_survive_a_large_mean() {
    // Mean 1000, std 0.006: one-pass f32 (or unshifted f64 squares of f32 data) would lose
    // the variance; the shifted f64 sums keep it.
    let Some(gpu) = gpu_or_skip("statistics_survive_a_large_mean") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(5);
    for &shape in &[(4, 3, 50), (3, 2, 4000)] {
        let mut t = Case::new(&mut r, shape);
        t.x = randv(&mut r, t.len(), -1.0, 1.0)
            .iter()
            .map(|v| 1000.0 + 0.01 * v)
            .collect();
        let (y, m, s) = cpu_forward(Kind::Plain, &t);
        let (gy, gm, gs) = gpu_forward(&gpu, Kind::Plain, &t);
        let (n, c, hw) = shape;
        for ch in 0..c {
            // f64 reference of the channel's statistics.
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| t.x[(i * c + ch) * hw..][..hw].iter().map(|&v| v as f64))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            let is = 1.0 / (var + EPS as f64).sqrt();
            assert!(var > 1e-5, "the data must have spread: var {var}");
            assert!(
                (gs[ch] as f64 - is).abs() <= 1e-6 * is,
                "{shape:?} invstd[{ch}]: cuda {} f64 {is}",
                gs[ch]
            );
            assert!(
                (gm[ch] as f64 - mean).abs() <= 1e-4,
                "{shape:?} mean[{ch}]: cuda {} f64 {mean}",
                gm[ch]
            );
        }
        assert_close("large-mean save_mean", &gm, &m, 1e-7);
        assert_close("large-mean save_invstd", &gs, &s, 1e-6);
        // y = x·scale + shift cancels ~1.7e5 against ~1.7e5 in f32 (ulp 0.016), as on the
        // CPU: the same operations on statistics equal up to an ulp.
        assert_close("large-mean y", &gy, &y, 2e-2);
        let want = cpu_backward(Kind::Plain, &t, &y, &m, &s);
        let got = gpu_backward(&gpu, Kind::Plain, &t, &t.dy, &y, &m, &s);
        assert_close("large-mean dx", &got.0, &want.0, 1e-5);
    }
}

#[test]
fn eval_forward_matches_cpu() {
    let Some(gpu) = gpu_or_skip("eval_forward_matches_cpu") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(6);
    for &shape in SHAPES {
        let t = Case::new(&mut r, shape);
        let (n, c, hw) = shape;
        let rm = randv(&mut r, c, -1.0, 1.0);
        let rv = randv(&mut r, c, 0.1, 3.0);
        let (dx, dg, db, drm, drv) = (
            up(&gpu, &t.x),
            up(&gpu, &t.gamma),
            up(&gpu, &t.beta),
            up(&gpu, &rm),
            up(&gpu, &rv),
        );
        for relu in [false, true] {
            let mut want = vec![0.0; t.len()];
            let mut y = nan(&gpu, t.len());
            if relu {
                cpu::batch_norm_relu_forward_eval(
                    n, c, hw, &t.x, &t.gamma, &t.beta, &rm, &rv, EPS, &mut want,
                )
                .unwrap();
                bn::batch_norm_relu_forward_eval(
                    &gpu, n, c, hw, &dx, &dg, &db, &drm, &drv, EPS, &mut y,
                )
                .unwrap();
            } else {
                cpu::batch_norm_forward_eval(
                    n, c, hw, &t.x, &t.gamma, &t.beta, &rm, &rv, EPS, &mut want,
                )
                .unwrap();
                bn::batch_norm_forward_eval(&gpu, n, c, hw, &dx, &dg, &db, &drm, &drv, EPS, &mut y)
                    .unwrap();
            }
            // The same correctly rounded f32 operations as the CPU: equal bits.
            assert_bits(
                &format!("eval relu={relu} {shape:?}"),
                &down(&gpu, &y),
                &want,
            );
        }
    }
}

#[test]
fn running_statistics_update_matches_cpu() {
    let Some(gpu) = gpu_or_skip("running_statistics_update_matches_cpu") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(7);
    for (c, count) in [(1, 2), (7, 50), (300, 12_345)] {
        let sm = randv(&mut r, c, -2.0, 2.0);
        let si = randv(&mut r, c, 0.2, 5.0);
        let rm0 = randv(&mut r, c, -1.0, 1.0);
        let rv0 = randv(&mut r, c, 0.5, 2.0);
        for momentum in [0.1f32, 1.0] {
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            cpu::batch_norm_update_running(c, count, &sm, &si, EPS, momentum, &mut rm, &mut rv)
                .unwrap();
            let (mut grm, mut grv) = (up(&gpu, &rm0), up(&gpu, &rv0));
            bn::batch_norm_update_running(
                &gpu,
                c,
                count,
                &up(&gpu, &sm),
                &up(&gpu, &si),
                EPS,
                momentum,
                &mut grm,
                &mut grv,
            )
            .unwrap();
            // The same f64 operations, rounded once to f32: equal bits.
            assert_bits("running_mean", &down(&gpu, &grm), &rm);
            assert_bits("running_var", &down(&gpu, &grv), &rv);
            assert!(
                rm != rm0 && rv != rv0,
                "the update must change the statistics"
            );
        }
    }
}

#[test]
fn results_are_reproducible() {
    let Some(gpu) = gpu_or_skip("results_are_reproducible") else {
        return;
    };
    let mut r = StdRng::seed_from_u64(8);
    for &shape in &[(5, 3, 2000), (2, 2, 9_000), (4, 5, 16)] {
        let t = Case::new(&mut r, shape);
        for k in [Kind::Plain, Kind::Relu, Kind::AddRelu] {
            let a = gpu_forward(&gpu, k, &t);
            let b = gpu_forward(&gpu, k, &t);
            assert_bits("y", &a.0, &b.0);
            assert_bits("save_mean", &a.1, &b.1);
            assert_bits("save_invstd", &a.2, &b.2);
            let ga = gpu_backward(&gpu, k, &t, &t.dy, &a.0, &a.1, &a.2);
            let gb = gpu_backward(&gpu, k, &t, &t.dy, &a.0, &a.1, &a.2);
            assert_bits("dx", &ga.0, &gb.0);
            assert_bits("dresidual", &ga.1, &gb.1);
            assert_bits("dgamma", &ga.2, &gb.2);
            assert_bits("dbeta", &ga.3, &gb.3);
        }
    }
}

#[test]
fn bad_shapes_are_refused() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused") else {
        return;
    };
    let (n, c, hw) = (2, 3, 4);
    let len = n * c * hw;
    let x = up(&gpu, &vec![0.5; len]);
    let short = up(&gpu, &vec![0.5; len - 1]);
    let (g, b) = (up(&gpu, &[1.0; 3]), up(&gpu, &[0.0; 3]));
    let g2 = up(&gpu, &[1.0; 2]);
    let (mut y, mut m, mut s) = (nan(&gpu, len), nan(&gpu, c), nan(&gpu, c));
    let expect = |r: scalarize_kernels::Result<()>, op: &str, msg: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.op, op);
        assert!(e.msg.contains(msg), "{e}");
    };
    expect(
        bn::batch_norm_forward_train(&gpu, n, c, hw, &short, &g, &b, EPS, &mut y, &mut m, &mut s),
        "cuda::batch_norm_forward_train",
        "`x` has 23 elements, expected 24",
    );
    expect(
        bn::batch_norm_relu_forward_train(&gpu, 0, c, hw, &x, &g, &b, EPS, &mut y, &mut m, &mut s),
        "cuda::batch_norm_relu_forward_train",
        "dimension `n` is 0",
    );
    expect(
        bn::batch_norm_add_relu_forward_train(
            &gpu, n, c, hw, &x, &short, &g, &b, EPS, &mut y, &mut m, &mut s,
        ),
        "cuda::batch_norm_add_relu_forward_train",
        "`residual` has 23",
    );
    expect(
        bn::batch_norm_forward_train(&gpu, n, c, hw, &x, &g2, &b, EPS, &mut y, &mut m, &mut s),
        "cuda::batch_norm_forward_train",
        "`gamma` has 2 elements, expected 3",
    );
    let (mut dx, mut dr) = (nan(&gpu, len), nan(&gpu, len));
    let (mut dg, mut db) = (nan(&gpu, c), nan(&gpu, c));
    let (m0, s0) = (up(&gpu, &[0.0; 3]), up(&gpu, &[1.0; 3]));
    expect(
        bn::batch_norm_backward(
            &gpu, n, c, hw, &x, &short, &g, &m0, &s0, &mut dx, &mut dg, &mut db,
        ),
        "cuda::batch_norm_backward",
        "`dy` has 23",
    );
    expect(
        bn::batch_norm_relu_backward(
            &gpu,
            n,
            c,
            hw,
            &x,
            &x,
            (&g, &g2),
            &m0,
            &s0,
            &mut dx,
            &mut dg,
            &mut db,
        ),
        "cuda::batch_norm_relu_backward",
        "`beta` has 2",
    );
    expect(
        bn::batch_norm_add_relu_backward(
            &gpu, n, c, hw, &x, &short, &x, &g, &m0, &s0, &mut dx, &mut dr, &mut dg, &mut db,
        ),
        "cuda::batch_norm_add_relu_backward",
        "`y` has 23",
    );
    expect(
        bn::batch_norm_backward(
            &gpu, n, c, hw, &x, &x, &g, &m0, &g2, &mut dx, &mut dg, &mut db,
        ),
        "cuda::batch_norm_backward",
        "`save_invstd` has 2",
    );
    let (mut rm, mut rv) = (up(&gpu, &[0.0; 3]), up(&gpu, &[1.0; 3]));
    expect(
        bn::batch_norm_update_running(&gpu, c, 1, &m0, &s0, EPS, 0.1, &mut rm, &mut rv),
        "cuda::batch_norm_update_running",
        "more than 1 value per channel",
    );
    expect(
        bn::batch_norm_update_running(&gpu, c, 10, &m0, &g2, EPS, 0.1, &mut rm, &mut rv),
        "cuda::batch_norm_update_running",
        "`save_invstd` has 2",
    );
    // Device variances are not read back (that would synchronise every BN layer): the check
    // runs on the host statistics before their upload, with the CPU's message.
    expect(
        bn::check_running_var("cuda::batch_norm_forward_eval", &[1.0, -1.0, 1.0], EPS),
        "cuda::batch_norm_forward_eval",
        "running_var[1] + eps",
    );
    assert!(bn::check_running_var("op", &[1.0, 0.0, 2.0], EPS).is_ok());
    expect(
        bn::check_running_var("op", &[1.0, 0.0, f32::NAN], EPS),
        "op",
        "running_var[2] + eps = NaN is not positive",
    );
    expect(
        bn::batch_norm_relu_forward_eval(&gpu, n, c, hw, &x, &g, &b, &g2, &rv, EPS, &mut y),
        "cuda::batch_norm_relu_forward_eval",
        "`running_mean` has 2",
    );
    // Refused calls leave the outputs alone (nothing was launched).
    assert!(down(&gpu, &y).iter().all(|v| v.is_nan()));
}
