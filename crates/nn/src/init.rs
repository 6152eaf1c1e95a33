//! Seeded, reproducible initial values for a [`Layout`].
//!
//! Each tensor draws from its own random stream, seeded from the model seed and the tensor's
//! name, so a tensor's initial values do not depend on which other tensors (e.g. which heads)
//! the model has, nor on the order they are created in.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::layout::{Init, Layout, ParamInfo};

/// The random stream of tensor `name` under model seed `seed`.
pub fn param_rng(seed: u64, name: &str) -> StdRng {
    // FNV-1a over the name, then mixed with the seed (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Initial values of one tensor.
pub fn init_values(info: &ParamInfo, seed: u64) -> Vec<f32> {
    let n = info.numel();
    let mut rng = param_rng(seed, &info.name);
    let mut normal = |std: f64| -> f32 {
        let z: f64 = StandardNormal.sample(&mut rng);
        (z * std) as f32
    };
    match info.init {
        Init::Const(v) => vec![v; n],
        Init::Normal { std } => (0..n).map(|_| normal(std as f64)).collect(),
        Init::KaimingNormalFanOut { fan_out } => {
            let std = (2.0 / fan_out as f64).sqrt();
            (0..n).map(|_| normal(std)).collect()
        }
        Init::TruncNormal { std, lo, hi } => (0..n)
            .map(|_| {
                loop {
                    // Rejection sampling: same distribution as timm's inverse-CDF method.
                    let v = normal(std as f64);
                    if v >= lo && v <= hi {
                        break v;
                    }
                }
            })
            .collect(),
        Init::Uniform { bound } => {
            let b = bound as f64;
            (0..n)
                .map(|_| (rng.random::<f64>() * 2.0 * b - b) as f32)
                .collect()
        }
    }
}

/// Initial values of every tensor of `layout`, in layout order.
pub fn init_layout(layout: &Layout, seed: u64) -> Vec<Vec<f32>> {
    layout.params.iter().map(|p| init_values(p, seed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{InitOptions, ParamKind};
    use crate::spec::{HeadsSpec, ModelSpec};

    fn stats(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    fn info(init: Init, n: usize) -> ParamInfo {
        ParamInfo::new("t.weight".into(), vec![n], ParamKind::Weight, init)
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let n = 200_000;
        let v = init_values(&info(Init::KaimingNormalFanOut { fan_out: 72 }, n), 1);
        let (m, s) = stats(&v);
        assert!(
            m.abs() < 0.003 && (s - (2.0f64 / 72.0).sqrt()).abs() < 0.002,
            "{m} {s}"
        );
        let v = init_values(&info(Init::Uniform { bound: 0.25 }, n), 2);
        let (m, s) = stats(&v);
        assert!(v.iter().all(|x| x.abs() <= 0.25));
        assert!(
            m.abs() < 0.002 && (s - 0.25 / 3f64.sqrt()).abs() < 0.001,
            "{m} {s}"
        );
        let v = init_values(
            &info(
                Init::TruncNormal {
                    std: 1.0,
                    lo: -1.0,
                    hi: 1.5,
                },
                n,
            ),
            3,
        );
        assert!(v.iter().all(|&x| (-1.0..=1.5).contains(&x)));
        // Mean of N(0,1) truncated to [-1, 1.5]: (phi(-1) - phi(1.5)) / (Phi(1.5) - Phi(-1)).
        let (m, _) = stats(&v);
        let expect = (0.241_970_7 - 0.129_517_6) / (0.933_192_8 - 0.158_655_3);
        assert!((m - expect).abs() < 0.01, "{m} vs {expect}");
        let v = init_values(&info(Init::Normal { std: 1e-6 }, n), 4);
        let (_, s) = stats(&v);
        assert!((s - 1e-6).abs() < 2e-8);
        assert_eq!(init_values(&info(Init::Const(1.0), 3), 5), vec![1.0; 3]);
    }

    #[test]
    fn seeded_reproducible_and_independent_of_other_heads() {
        let spec = ModelSpec::parse("resnet26:w0.25").unwrap();
        let a = Layout::new(
            &spec,
            &HeadsSpec::parse("10").unwrap(),
            InitOptions::default(),
        );
        let b = Layout::new(
            &spec,
            &HeadsSpec::parse("a40,10").unwrap(),
            InitOptions::default(),
        );
        let va = init_layout(&a, 7);
        assert_eq!(va, init_layout(&a, 7));
        assert_ne!(va[0], init_layout(&a, 8)[0]);
        let vb = init_layout(&b, 7);
        // Backbone tensors agree whatever the heads are.
        let nb = a
            .params
            .iter()
            .filter(|p| p.name.starts_with("backbone."))
            .count();
        assert_eq!(va[..nb], vb[..nb]);
        // Different tensors of the same shape get different values.
        let i = a
            .params
            .iter()
            .position(|p| p.name == "backbone.layer1.0.conv2.weight")
            .unwrap();
        let j = a
            .params
            .iter()
            .position(|p| p.name == "backbone.layer1.1.conv2.weight")
            .unwrap();
        assert_ne!(va[i], va[j]);
    }
}
