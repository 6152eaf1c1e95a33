//! The CPU fused losses and the Gram on random, often malformed input (buffers one element
//! short or long, empty heads and tasks, zero rows, labels out of range, NaN and infinite
//! values, unsorted or out-of-range segment ends): every call returns, either a result or an
//! error naming the operation; none panics.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{
    TaskLayout, WeightedBceInput, WeightedCeInput, grad_gram, grad_gram_fast, weighted_bce_loss,
    weighted_ce_loss,
};

/// `len`, or now and then one more or one less (a buffer of the wrong size).
fn jitter(rng: &mut StdRng, len: usize) -> usize {
    match rng.random_range(0..20) {
        0 => len + rng.random_range(1..3),
        1 => len.saturating_sub(1),
        _ => len,
    }
}

/// A value that is now and then NaN, infinite or huge.
fn value(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..50) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => -1e30,
        _ => rng.random_range(-50.0f32..50.0),
    }
}

/// Outcomes of the calls: results and errors.
#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
}

impl Tally {
    /// Runs `f`, an `op` call on `what`: a panic fails the test, an error must name `op`;
    /// counts the outcome.
    fn call<E: std::fmt::Display>(
        &mut self,
        op: &str,
        what: &str,
        f: impl FnOnce() -> Result<(), E>,
    ) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Err(_) => panic!("{op} panicked on {what}"),
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(op),
                    "{op}: error does not name it: {msg} ({what})"
                );
                self.err += 1;
            }
            Ok(Ok(())) => self.ok += 1,
        }
    }
}

#[test]
fn random_malformed_input_gives_results_or_errors_never_panics() {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut tally = Tally::default();
    for _ in 0..3000 {
        // Tasks (possibly none) with heads of 0..40 classes (possibly empty).
        let sizes: Vec<usize> = (0..rng.random_range(0..5))
            .map(|_| rng.random_range(0..40))
            .collect();
        let Ok(layout) = TaskLayout::from_sizes(&sizes) else {
            tally.err += 1;
            continue;
        };
        let (w, t) = (layout.width(), layout.num_tasks());
        let n = rng.random_range(0..40);
        let logits: Vec<f32> = (0..jitter(&mut rng, n * w))
            .map(|_| value(&mut rng))
            .collect();
        let targets: Vec<i64> = (0..jitter(&mut rng, n * t))
            .map(|_| match rng.random_range(0..20) {
                0 => -100,
                1 => 1_000_000,
                2 => -5,
                _ => rng.random_range(0..40),
            })
            .collect();
        let mask: Option<Vec<u8>> = rng.random_bool(0.5).then(|| {
            (0..jitter(&mut rng, n * t))
                .map(|_| rng.random_range(0..3))
                .collect()
        });
        let weights: Vec<f32> = (0..jitter(&mut rng, t))
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => -1.0,
                _ => 0.5,
            })
            .collect();
        let mut grad = vec![0.0f32; jitter(&mut rng, logits.len())];
        let with_grad = rng.random_bool(0.5);
        let what = format!(
            "sizes {sizes:?}, n {n}, logits {}, targets {}, mask {:?}, weights {}, grad {:?}",
            logits.len(),
            targets.len(),
            mask.as_ref().map(Vec::len),
            weights.len(),
            with_grad.then_some(grad.len())
        );

        let ce = WeightedCeInput {
            layout: &layout,
            n,
            logits: &logits,
            targets: &targets,
            mask: mask.as_deref(),
            weights: &weights,
            ignore_index: -100,
        };
        tally.call("weighted_ce_loss", &what, || {
            weighted_ce_loss(&ce, with_grad.then_some(&mut grad[..])).map(|_| ())
        });

        let soft: Vec<f32> = (0..jitter(&mut rng, n * w))
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => 2.0,
                2 => -0.5,
                _ => rng.random_range(0.0f32..=1.0),
            })
            .collect();
        let bce = WeightedBceInput {
            layout: &layout,
            n,
            logits: &logits,
            targets: &soft,
            mask: mask.as_deref(),
            weights: &weights,
        };
        tally.call("weighted_bce_loss", &what, || {
            weighted_bce_loss(&bce, with_grad.then_some(&mut grad[..])).map(|_| ())
        });

        let (gt, p) = (rng.random_range(0..5), rng.random_range(0..3000));
        let g: Vec<f32> = (0..jitter(&mut rng, gt * p))
            .map(|_| value(&mut rng))
            .collect();
        let mut ends: Vec<usize> = (0..rng.random_range(0..6))
            .map(|_| rng.random_range(0..p + 2))
            .collect();
        if rng.random_bool(0.7) {
            ends.sort_unstable();
            ends.push(p);
        }
        let what = format!("t {gt}, p {p}, g {}, ends {ends:?}", g.len());
        tally.call("grad_gram", &what, || {
            grad_gram(&g, gt, p, &ends).map(|_| ())
        });
        tally.call("grad_gram", &what, || {
            grad_gram_fast(&g, gt, p, &ends).map(|_| ())
        });
    }
    // Both outcomes are exercised (the generator is not stuck on one side).
    let Tally { ok, err } = tally;
    assert!(ok > 1000 && err > 1000, "ok {ok}, errors {err}");
}
