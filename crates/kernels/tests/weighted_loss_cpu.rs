//! CPU fused weighted losses against naive f64 references, finite differences, and bad input.

// Reference code indexes several arrays by the same task number; plain loops read clearest.
#![allow(clippy::needless_range_loop)]

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{
    LOSS_PAR_MIN_VALUES, TaskLayout, WeightedBceInput, WeightedCeInput, weighted_bce_loss,
    weighted_ce_loss,
};

const IGNORE: i64 = -100;

/// A random multi-task CE problem: logits (some extreme), targets with ignores, mask with a
/// fully masked-out task, random weights.
struct CeCase {
    layout: TaskLayout,
    n: usize,
    logits: Vec<f32>,
    targets: Vec<i64>,
    mask: Vec<u8>,
    weights: Vec<f32>,
}

fn ce_case(rng: &mut StdRng, n: usize, sizes: &[usize], extreme: bool) -> CeCase {
    let layout = TaskLayout::from_sizes(sizes).unwrap();
    let (t, w) = (layout.num_tasks(), layout.width());
    let logits = (0..n * w)
        .map(|_| {
            if extreme && rng.random_bool(0.3) {
                if rng.random_bool(0.5) { 1e4 } else { -1e4 }
            } else {
                rng.random_range(-6.0f32..6.0)
            }
        })
        .collect();
    let mut targets = Vec::with_capacity(n * t);
    let mut mask = Vec::with_capacity(n * t);
    for _ in 0..n {
        for (k, &c) in sizes.iter().enumerate() {
            targets.push(if rng.random_bool(0.15) {
                IGNORE
            } else {
                rng.random_range(0..c as i64)
            });
            // The last task is masked out entirely when T > 2 (an empty task).
            mask.push(u8::from(!(t > 2 && k == t - 1) && rng.random_bool(0.8)));
        }
    }
    let weights = (0..t).map(|_| rng.random_range(0.05f32..1.0)).collect();
    CeCase {
        layout,
        n,
        logits,
        targets,
        mask,
        weights,
    }
}

/// Naive f64 reference: per-task mean CE and the gradient of the weighted sum.
fn ce_reference(c: &CeCase, use_mask: bool) -> (Vec<f64>, Vec<usize>, Vec<f64>) {
    let (t, w) = (c.layout.num_tasks(), c.layout.width());
    let mut sums = vec![0.0f64; t];
    let mut counts = vec![0usize; t];
    let valid = |i: usize, k: usize| {
        c.targets[i * t + k] != IGNORE && (!use_mask || c.mask[i * t + k] != 0)
    };
    for i in 0..c.n {
        for k in 0..t {
            if valid(i, k) {
                counts[k] += 1;
                let r = c.layout.range(k);
                let x: Vec<f64> = c.logits[i * w..][r].iter().map(|&v| v as f64).collect();
                let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                sums[k] += lse - x[c.targets[i * t + k] as usize];
            }
        }
    }
    let mut grad = vec![0.0f64; c.n * w];
    for i in 0..c.n {
        for k in 0..t {
            if valid(i, k) {
                let r = c.layout.range(k);
                let x: Vec<f64> = c.logits[i * w..][r.clone()]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
                let scale = c.weights[k] as f64 / counts[k] as f64;
                for (j, col) in r.enumerate() {
                    let onehot = if j as i64 == c.targets[i * t + k] {
                        1.0
                    } else {
                        0.0
                    };
                    grad[i * w + col] = scale * ((x[j] - m).exp() / s - onehot);
                }
            }
        }
    }
    let losses = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &n)| if n == 0 { 0.0 } else { s / n as f64 })
        .collect();
    (losses, counts, grad)
}

fn assert_close(got: f64, want: f64, rtol: f64, atol: f64, what: &str) {
    assert!(
        (got - want).abs() <= atol + rtol * want.abs(),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn ce_matches_reference_on_odd_shapes_and_extreme_logits() {
    let mut rng = StdRng::seed_from_u64(1);
    let shapes: [(usize, &[usize]); 6] = [
        (1, &[3, 2]),
        (7, &[10, 1, 5]),
        (33, &[2, 17, 9, 4]),
        (130, &[40, 3]),
        (65, &[1000]),
        (19, &[5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 7]),
    ];
    for (case_no, &(n, sizes)) in shapes.iter().enumerate() {
        for extreme in [false, true] {
            for use_mask in [false, true] {
                let c = ce_case(&mut rng, n, sizes, extreme);
                let (want_loss, want_counts, want_grad) = ce_reference(&c, use_mask);
                let input = WeightedCeInput {
                    layout: &c.layout,
                    n,
                    logits: &c.logits,
                    targets: &c.targets,
                    mask: use_mask.then_some(&c.mask[..]),
                    weights: &c.weights,
                    ignore_index: IGNORE,
                };
                // Poisoned output: every element must be overwritten.
                let mut grad = vec![f32::NAN; n * c.layout.width()];
                let out = weighted_ce_loss(&input, Some(&mut grad)).unwrap();
                let what = format!("case {case_no} extreme {extreme} mask {use_mask}");
                assert_eq!(out.counts, want_counts, "{what}");
                let mut total = 0.0;
                for k in 0..c.layout.num_tasks() {
                    assert_close(out.task_loss[k] as f64, want_loss[k], 1e-5, 1e-6, &what);
                    total += want_loss[k] * c.weights[k] as f64;
                }
                assert_close(out.total as f64, total, 1e-5, 1e-6, &what);
                for (j, (&g, &wg)) in grad.iter().zip(&want_grad).enumerate() {
                    assert_close(g as f64, wg, 1e-5, 1e-6, &format!("{what} grad[{j}]"));
                }
                // Loss-only call agrees with the fused one.
                let only = weighted_ce_loss(&input, None).unwrap();
                assert_eq!(only.task_loss, out.task_loss);
            }
        }
    }
}

#[test]
fn ce_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(2);
    let c = ce_case(&mut rng, 5, &[4, 3], false);
    let input = |logits: &[f32]| {
        let i = WeightedCeInput {
            layout: &c.layout,
            n: c.n,
            logits,
            targets: &c.targets,
            mask: None,
            weights: &c.weights,
            ignore_index: IGNORE,
        };
        weighted_ce_loss(&i, None).unwrap().total as f64
    };
    let mut grad = vec![0.0f32; c.logits.len()];
    let i = WeightedCeInput {
        layout: &c.layout,
        n: c.n,
        logits: &c.logits,
        targets: &c.targets,
        mask: None,
        weights: &c.weights,
        ignore_index: IGNORE,
    };
    weighted_ce_loss(&i, Some(&mut grad)).unwrap();
    let h = 1e-2f32;
    for j in 0..c.logits.len() {
        let mut plus = c.logits.clone();
        plus[j] += h;
        let mut minus = c.logits.clone();
        minus[j] -= h;
        let fd = (input(&plus) - input(&minus)) / (2.0 * h as f64);
        assert_close(grad[j] as f64, fd, 2e-2, 2e-4, &format!("fd grad[{j}]"));
    }
}

#[test]
fn bce_matches_reference_with_mask_and_extreme_logits() {
    let mut rng = StdRng::seed_from_u64(3);
    for &(n, sizes) in &[
        (1usize, &[1usize, 1][..]),
        (37, &[1; 40][..]),
        (9, &[3, 1, 6][..]),
    ] {
        let layout = TaskLayout::from_sizes(sizes).unwrap();
        let (t, w) = (layout.num_tasks(), layout.width());
        let logits: Vec<f32> = (0..n * w)
            .map(|_| match rng.random_range(0..6) {
                0 => 1e4,
                1 => -1e4,
                _ => rng.random_range(-8.0f32..8.0),
            })
            .collect();
        let targets: Vec<f32> = (0..n * w)
            .map(|_| match rng.random_range(0..3) {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0f32..1.0),
            })
            .collect();
        // Task 0 never counts (empty task); others count 70% of the time.
        let mask: Vec<u8> = (0..n * t)
            .map(|k| u8::from(k % t != 0 && rng.random_bool(0.7)))
            .collect();
        let weights: Vec<f32> = (0..t).map(|_| rng.random_range(0.1f32..2.0)).collect();
        let input = WeightedBceInput {
            layout: &layout,
            n,
            logits: &logits,
            targets: &targets,
            mask: Some(&mask),
            weights: &weights,
        };
        let mut grad = vec![f32::NAN; n * w];
        let out = weighted_bce_loss(&input, Some(&mut grad)).unwrap();
        for k in 0..t {
            let r = layout.range(k);
            let rows: Vec<usize> = (0..n).filter(|&i| mask[i * t + k] != 0).collect();
            assert_eq!(out.counts[k], rows.len());
            let mut s = 0.0f64;
            for &i in &rows {
                for col in r.clone() {
                    let (x, y) = (logits[i * w + col] as f64, targets[i * w + col] as f64);
                    s += x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
                }
            }
            let want = if rows.is_empty() {
                0.0
            } else {
                s / (rows.len() * r.len()) as f64
            };
            assert_close(out.task_loss[k] as f64, want, 1e-5, 1e-6, "bce loss");
            for i in 0..n {
                for col in r.clone() {
                    let want = if mask[i * t + k] == 0 {
                        0.0
                    } else {
                        let (x, y) = (logits[i * w + col] as f64, targets[i * w + col] as f64);
                        weights[k] as f64 / (rows.len() * r.len()) as f64
                            * (1.0 / (1.0 + (-x).exp()) - y)
                    };
                    assert_close(grad[i * w + col] as f64, want, 1e-5, 1e-6, "bce grad");
                }
            }
        }
    }
}

#[test]
fn deterministic_regardless_of_thread_count() {
    let mut rng = StdRng::seed_from_u64(4);
    // Large enough for the pool (smaller calls run on the calling thread).
    let c = ce_case(&mut rng, 4701, &[37, 11, 64], false);
    assert!(c.n * 112 >= LOSS_PAR_MIN_VALUES);
    let input = WeightedCeInput {
        layout: &c.layout,
        n: c.n,
        logits: &c.logits,
        targets: &c.targets,
        mask: Some(&c.mask),
        weights: &c.weights,
        ignore_index: IGNORE,
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| weighted_ce_loss(&input, None).unwrap())
    };
    let one = run(1);
    for threads in [2, 3] {
        assert_eq!(one, run(threads));
    }
}

/// The small-head tile kernel and the flat BCE kernel, gradients included: bit-identical
/// results on 1, 2 and 3 threads (losses are summed in an order fixed by the shapes alone).
#[test]
fn small_heads_and_bce_are_deterministic_regardless_of_thread_count() {
    let mut rng = StdRng::seed_from_u64(5);
    // Both calls large enough for the pool (smaller calls run on the calling thread).
    let c = ce_case(&mut rng, 1401, &[10; 40], true);
    assert!(c.n * 400 >= LOSS_PAR_MIN_VALUES);
    let ce = WeightedCeInput {
        layout: &c.layout,
        n: c.n,
        logits: &c.logits,
        targets: &c.targets,
        mask: Some(&c.mask),
        weights: &c.weights,
        ignore_index: IGNORE,
    };
    let layout = TaskLayout::from_sizes(&[1; 40]).unwrap();
    let n = 13_201;
    assert!(n * 40 >= LOSS_PAR_MIN_VALUES);
    let logits: Vec<f32> = (0..n * 40)
        .map(|_| rng.random_range(-9.0f32..9.0))
        .collect();
    let targets: Vec<f32> = (0..n * 40)
        .map(|_| rng.random_range(0.0f32..=1.0))
        .collect();
    let mask: Vec<u8> = (0..n * 40)
        .map(|_| u8::from(rng.random_bool(0.9)))
        .collect();
    let weights = vec![0.025f32; 40];
    let bce = WeightedBceInput {
        layout: &layout,
        n,
        logits: &logits,
        targets: &targets,
        mask: Some(&mask),
        weights: &weights,
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut g1 = vec![0.0f32; c.n * 400];
                let mut g2 = vec![0.0f32; n * 40];
                let o1 = weighted_ce_loss(&ce, Some(&mut g1)).unwrap();
                let o2 = weighted_bce_loss(&bce, Some(&mut g2)).unwrap();
                let bits = |g: &[f32]| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (o1, o2, bits(&g1), bits(&g2))
            })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(one == run(threads), "{threads} threads differ from one");
    }
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    assert!(TaskLayout::from_sizes(&[3, 0]).is_err());
    assert!(TaskLayout::new(vec![0]).is_err());
    let layout = TaskLayout::from_sizes(&[3, 2]).unwrap();
    let logits = vec![0.5f32; 10];
    let weights = [1.0f32, 1.0];
    let mut input = WeightedCeInput {
        layout: &layout,
        n: 2,
        logits: &logits,
        targets: &[0, 1, 2, 5],
        mask: None,
        weights: &weights,
        ignore_index: IGNORE,
    };
    let e = weighted_ce_loss(&input, None).unwrap_err();
    assert!(e.to_string().contains("targets[row 1, task 1] = 5"), "{e}");
    input.targets = &[0, 1, 2];
    let e = weighted_ce_loss(&input, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("`targets` has 3 elements, expected 4"),
        "{e}"
    );
    input.targets = &[0, 1, 2, 1];
    let mut short = vec![0.0f32; 9];
    let e = weighted_ce_loss(&input, Some(&mut short)).unwrap_err();
    assert!(e.to_string().contains("`dlogits` has 9 elements"), "{e}");
    let bad_w = [1.0f32, f32::NAN];
    input.weights = &bad_w;
    let e = weighted_ce_loss(&input, None).unwrap_err();
    assert!(e.to_string().contains("weights[1]"), "{e}");
    let b = WeightedBceInput {
        layout: &layout,
        n: 2,
        logits: &logits,
        targets: &[0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0],
        mask: None,
        weights: &weights,
    };
    let e = weighted_bce_loss(&b, None).unwrap_err();
    assert!(
        e.to_string().contains("targets[row 1, column 2] = 2"),
        "{e}"
    );
}
