//! Shared test helpers: a deterministic RNG and a finite-difference gradient checker.
#![allow(dead_code)]

use std::sync::Arc;

use scalarize_autograd::{Device, Result, Tensor, no_grad};
use scalarize_kernels::cuda::Gpu;

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Approximately standard normal (sum of uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.unit()).sum::<f32>() - 6.0
    }

    /// Values in ±[0.1, 1): random sign, bounded away from zero (no ReLU kink within a step).
    pub fn away_from_zero(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let m = self.uniform(0.1, 1.0);
                if self.unit() < 0.5 { -m } else { m }
            })
            .collect()
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// An untracked tensor with values uniform in [-1, 1).
    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(self.vec(n, -1.0, 1.0), shape).unwrap()
    }

    /// Non-zero cotangent values in ±[0.5, 1.5).
    pub fn cotangent(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                let m = self.uniform(0.5, 1.5);
                if self.unit() < 0.5 { -m } else { m }
            })
            .collect();
        Tensor::new(v, shape).unwrap()
    }
}

/// <cot, out> in f64.
fn dot64(cot: &[f32], out: &[f32]) -> f64 {
    cot.iter()
        .zip(out)
        .map(|(&c, &o)| c as f64 * o as f64)
        .sum()
}

/// Checks the tape's gradients of `L = <cot, f(inputs)>` for every input against central
/// finite differences with step `h` (relative tolerance `tol` of the gradient's scale).
pub fn check_grads(
    name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    h: f32,
    tol: f64,
    rng: &mut Rng,
) {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.requires_grad()).collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert!(out.is_tracked(), "{name}: output not tracked");
    let cot = rng.cotangent(out.shape());
    let grads = out
        .backward_with(&cot)
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let _guard = no_grad();
    let loss_at = |vals: &[Vec<f32>]| -> f64 {
        let ts: Vec<Tensor> = vals
            .iter()
            .zip(inputs)
            .map(|(v, t)| Tensor::new(v.clone(), t.shape()).unwrap())
            .collect();
        let y = f(&ts).unwrap();
        dot64(&cot.to_vec(), &y.to_vec())
    };
    let mut vals: Vec<Vec<f32>> = inputs.iter().map(|t| t.to_vec()).collect();
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = grads
            .get(leaf)
            .unwrap_or_else(|| panic!("{name}: no gradient for input {i}"));
        assert_eq!(
            analytic.shape(),
            leaf.shape(),
            "{name}: gradient shape of input {i}"
        );
        let analytic = analytic.to_vec();
        let mut numeric = vec![0.0f64; analytic.len()];
        for j in 0..analytic.len() {
            let x0 = vals[i][j];
            let (xp, xm) = (x0 + h, x0 - h);
            vals[i][j] = xp;
            let lp = loss_at(&vals);
            vals[i][j] = xm;
            let lm = loss_at(&vals);
            vals[i][j] = x0;
            numeric[j] = (lp - lm) / (xp as f64 - xm as f64);
        }
        let scale = numeric.iter().fold(1e-2f64, |m, v| m.max(v.abs()));
        for j in 0..analytic.len() {
            let (a, n) = (analytic[j] as f64, numeric[j]);
            assert!(
                (a - n).abs() <= tol * (scale + n.abs()),
                "{name}: input {i} element {j}: tape {a:.6}, finite difference {n:.6} (scale {scale:.4})"
            );
        }
    }
}

pub fn assert_close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    let scale = a.iter().chain(b).fold(1e-6f32, |m, v| m.max(v.abs()));
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{name}: element {j}: {x} vs {y} (scale {scale})"
        );
    }
}

/// |got - want| <= tol·(1 + |want|) elementwise.
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: [{i}] cuda {g} cpu {w}"
        );
    }
}

/// Runs `f` on CPU copies and device copies of `inputs` (all tracked) and compares the output
/// and every input gradient under one random cotangent.
pub fn same_on_gpu(
    g: &Arc<Gpu>,
    name: &str,
    inputs: &[Tensor],
    rng: &mut Rng,
    f: impl Fn(&[Tensor]) -> scalarize_autograd::Result<Tensor>,
) {
    let cpu_in: Vec<Tensor> = inputs.iter().map(Tensor::requires_grad).collect();
    let dev_in: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_gpu(g).unwrap().requires_grad())
        .collect();
    let y = f(&cpu_in).unwrap();
    let yd = f(&dev_in).unwrap();
    assert_eq!(
        yd.device(),
        Device::Cuda(g.ordinal()),
        "{name}: output device"
    );
    assert_eq!(yd.shape(), y.shape(), "{name}: shape");
    close(&yd.to_host().unwrap(), &y.to_vec(), 1e-5, name);
    let cot = rng.cotangent(y.shape());
    let cot_d = cot.to_gpu(g).unwrap();
    let gc = y.backward_with(&cot).unwrap();
    let gd = yd.backward_with(&cot_d).unwrap();
    for (k, (a, b)) in cpu_in.iter().zip(&dev_in).enumerate() {
        let want = gc.get(a).map(Tensor::to_vec);
        let got = gd.get(b).map(|t| {
            assert_eq!(t.device(), yd.device(), "{name}: gradient {k} device");
            t.to_host().unwrap()
        });
        match (got, want) {
            (Some(got), Some(want)) => close(&got, &want, 1e-5, &format!("{name}: d input {k}")),
            (None, None) => {}
            (got, want) => panic!(
                "{name}: input {k} gradient present on cuda {} / cpu {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
}
