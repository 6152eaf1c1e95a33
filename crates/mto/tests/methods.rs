//! Invariants and known answers of every aggregator, on random and hand-built gradients.

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use scalarize_mto::*;

type Rng = rand::rngs::Xoshiro256PlusPlus;

fn random_grads(t: usize, p: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed_from_u64(seed);
    (0..t * p)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

fn losses(t: usize) -> Vec<f64> {
    (0..t).map(|i| 0.7 + 0.3 * i as f64).collect()
}

/// Naive f64 dot product of rows i and j of a T x P buffer.
fn dot(g: &[f32], p: usize, i: usize, j: usize) -> f64 {
    (0..p)
        .map(|k| g[i * p + k] as f64 * g[j * p + k] as f64)
        .sum()
}

fn dot_vec(g: &[f32], p: usize, i: usize, d: &[f32]) -> f64 {
    (0..p).map(|k| g[i * p + k] as f64 * d[k] as f64).sum()
}

fn norm(d: &[f32]) -> f64 {
    d.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn run(agg: &mut dyn Aggregator, g: &[f32], t: usize, p: usize, ends: &[usize]) -> Aggregation {
    let l = losses(t);
    let grads = TaskGradients::new(g, t, p, ends).unwrap();
    agg.aggregate(&AggregateInput::from_losses(&l).with_grads(grads))
        .unwrap()
}

/// Every method, default settings.
fn all(t: usize) -> Vec<Box<dyn Aggregator>> {
    METHOD_NAMES
        .iter()
        .map(|n| build(n, t, 7).unwrap())
        .collect()
}

#[test]
fn direction_is_the_weighted_sum_of_the_gradients() {
    let (t, p) = (4, 37);
    let ends = [10, 25, 37];
    let g = random_grads(t, p, 1);
    for mut m in all(t) {
        if m.name() == "graddrop" {
            continue; // elementwise masking, not a weighted sum
        }
        let a = run(m.as_mut(), &g, t, p, &ends);
        let d = a.direction.as_ref().unwrap();
        assert_eq!(a.weights.len(), t, "{}", m.name());
        let mut start = 0;
        for (l, &end) in ends.iter().enumerate() {
            let w = a.segment_weights.as_ref().map_or(&a.weights, |s| &s[l]);
            for k in start..end {
                let r: f64 = (0..t).map(|i| w[i] * g[i * p + k] as f64).sum();
                assert!(
                    (r - d[k] as f64).abs() < 1e-5 * (1.0 + r.abs()),
                    "{} elem {k}: {r} vs {}",
                    m.name(),
                    d[k]
                );
            }
            start = end;
        }
    }
}

#[test]
fn identical_gradients_give_equal_weights() {
    let (t, p) = (3, 29);
    let row = random_grads(1, p, 2);
    let g: Vec<f32> = (0..t).flat_map(|_| row.iter().cloned()).collect();
    for mut m in all(t) {
        if m.name() == "rlw" {
            continue; // random weights by design
        }
        let a = run(m.as_mut(), &g, t, p, &[p]);
        for w in &a.weights {
            assert!(
                (w - a.weights[0]).abs() < 1e-9 * a.weights[0].abs().max(1.0),
                "{}: {:?}",
                m.name(),
                a.weights
            );
        }
        assert!(a.weights[0] > 0.0, "{}: {:?}", m.name(), a.weights);
        // The direction is a positive multiple of the shared gradient.
        let d = a.direction.unwrap();
        let s: f64 = a.weights.iter().sum();
        for k in 0..p {
            assert!(
                (d[k] as f64 - s * row[k] as f64).abs() < 1e-5 * (1.0 + (s * row[k] as f64).abs()),
                "{}",
                m.name()
            );
        }
    }
}

#[test]
fn single_task_and_zero_gradients_give_finite_answers() {
    let p = 13;
    let g = random_grads(1, p, 3);
    for mut m in all(1) {
        let a = run(m.as_mut(), &g, 1, p, &[p]);
        assert!(
            a.weights[0].is_finite() && a.weights[0] > 0.0,
            "{}: {:?}",
            m.name(),
            a.weights
        );
        let d = a.direction.unwrap();
        // One task: the direction points along its gradient.
        let c = dot_vec(&g, p, 0, &d) / (norm(&g) * norm(&d));
        assert!((c - 1.0).abs() < 1e-6, "{}: cos {c}", m.name());
    }
    let (t, p) = (3, 11);
    let zeros = vec![0f32; t * p];
    let mut one_zero = random_grads(t, p, 4);
    one_zero[p..2 * p].iter_mut().for_each(|x| *x = 0.0);
    for g in [&zeros, &one_zero] {
        for mut m in all(t) {
            let a = run(m.as_mut(), g, t, p, &[5, p]);
            assert!(
                a.weights.iter().all(|w| w.is_finite()),
                "{}: {:?}",
                m.name(),
                a.weights
            );
            assert!(
                a.direction.unwrap().iter().all(|x| x.is_finite()),
                "{}",
                m.name()
            );
        }
    }
    // All-zero gradients give a zero direction everywhere.
    for mut m in all(t) {
        let a = run(m.as_mut(), &zeros, t, p, &[p]);
        assert!(
            a.direction.unwrap().iter().all(|&x| x == 0.0),
            "{}",
            m.name()
        );
    }
}

#[test]
fn near_singular_gram_stays_finite_and_keeps_guarantees() {
    let (t, p) = (3, 40);
    let mut g = random_grads(t, p, 5);
    let noise = random_grads(1, p, 6);
    for k in 0..p {
        g[p + k] = g[k] + 1e-6 * noise[k];
        g[2 * p + k] = -g[k] + 1e-6 * noise[(k + 3) % p];
    }
    for mut m in all(t) {
        let a = run(m.as_mut(), &g, t, p, &[p]);
        assert!(
            a.weights.iter().all(|w| w.is_finite()),
            "{}: {:?}",
            m.name(),
            a.weights
        );
        assert!(
            a.direction.unwrap().iter().all(|x| x.is_finite()),
            "{}",
            m.name()
        );
    }
    let a = run(&mut UpGrad::new(), &g, t, p, &[p]);
    let d = a.direction.unwrap();
    let scale = norm(&g[..p]) * norm(&d);
    for i in 0..t {
        assert!(
            dot_vec(&g, p, i, &d) >= -1e-5 * scale,
            "upgrad conflicts with {i}"
        );
    }
}

#[test]
fn pcgrad_known_answers() {
    // Exactly opposite gradients: each is projected onto the other's normal plane -> 0.
    let g = [1.0f32, -2.0, 0.5, -1.0, 2.0, -0.5];
    let a = run(&mut PcGrad::new(1), &g, 2, 3, &[3]);
    assert!(a.direction.unwrap().iter().all(|x| x.abs() < 1e-7));
    // g1 = (1, 0), g2 = (-1, 1): g1' = (0.5, 0.5), g2' = (0, 1), sum (0.5, 1.5).
    let g = [1.0f32, 0.0, -1.0, 1.0];
    let a = run(&mut PcGrad::new(1), &g, 2, 2, &[2]);
    let d = a.direction.unwrap();
    assert!(
        (d[0] - 0.5).abs() < 1e-7 && (d[1] - 1.5).abs() < 1e-7,
        "{d:?}"
    );
    // Non-conflicting gradients are summed untouched.
    let g = [1.0f32, 0.0, 0.5, 1.0];
    let a = run(&mut PcGrad::new(1), &g, 2, 2, &[2]);
    assert_eq!(a.weights, vec![1.0, 1.0]);
}

#[test]
fn mgda_satisfies_min_norm_optimality() {
    for (t, p, seed) in [(2, 17, 10), (5, 31, 11), (8, 9, 12)] {
        let g = random_grads(t, p, seed);
        let a = run(&mut Mgda::new(), &g, t, p, &[p]);
        let w = &a.weights;
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w.iter().all(|&x| x >= 0.0));
        // KKT: g_t . d >= |d|^2 for all t, with equality where w_t > 0.
        let d: Vec<f64> = (0..p)
            .map(|k| (0..t).map(|i| w[i] * g[i * p + k] as f64).sum())
            .collect();
        let dd: f64 = d.iter().map(|x| x * x).sum();
        let scale = (0..t).map(|i| dot(&g, p, i, i)).fold(0.0, f64::max);
        for i in 0..t {
            let gd: f64 = (0..p).map(|k| g[i * p + k] as f64 * d[k]).sum();
            assert!(gd >= dd - 1e-9 * scale, "t={t} task {i}: {gd} < {dd}");
            if w[i] > 1e-9 {
                assert!(
                    (gd - dd).abs() < 1e-8 * scale,
                    "t={t} task {i}: {gd} != {dd}"
                );
            }
        }
        // Never longer than a random convex combination.
        let mut rng = Rng::seed_from_u64(seed);
        for _ in 0..200 {
            let mut c: Vec<f64> = (0..t).map(|_| rng.random::<f64>()).collect();
            let s: f64 = c.iter().sum();
            c.iter_mut().for_each(|x| *x /= s);
            let n2: f64 = (0..p)
                .map(|k| {
                    (0..t)
                        .map(|i| c[i] * g[i * p + k] as f64)
                        .sum::<f64>()
                        .powi(2)
                })
                .sum();
            assert!(dd <= n2 * (1.0 + 1e-9), "t={t}: {dd} > {n2}");
        }
    }
}

#[test]
fn mgda_ub_is_mgda_on_the_representation() {
    let (t, r) = (4, 23);
    let z = random_grads(t, r, 13);
    let a = run(&mut MgdaUb::new(), &z, t, r, &[r]);
    let b = run(&mut Mgda::new(), &z, t, r, &[r]);
    assert_eq!(a.weights, b.weights);
    assert_eq!(
        MgdaUb::new().requirement(),
        Requirement::RepresentationGradients
    );
}

#[test]
fn imtl_g_projects_equally_on_every_unit_gradient() {
    for (t, p, seed) in [(2, 7, 20), (4, 19, 21), (6, 33, 22)] {
        let g = random_grads(t, p, seed);
        for mut m in [
            Box::new(ImtlG::new()) as Box<dyn Aggregator>,
            Box::new(ImtlG::at_representation()),
        ] {
            let a = run(m.as_mut(), &g, t, p, &[p]);
            assert!((a.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let d = a.direction.unwrap();
            let proj: Vec<f64> = (0..t)
                .map(|i| dot_vec(&g, p, i, &d) / dot(&g, p, i, i).sqrt())
                .collect();
            for x in &proj {
                assert!(
                    (x - proj[0]).abs() < 1e-4 * proj[0].abs().max(1e-3),
                    "{proj:?}"
                );
            }
        }
    }
}

#[test]
fn imtl_h_equalises_projections_of_the_scaled_gradients() {
    let (t, r) = (3, 21);
    let z = random_grads(t, r, 23);
    let mut m = ImtlH::new(t).unwrap();
    let s = [0.3, -0.2, 0.5];
    m.set_params(&s).unwrap();
    let a = run(&mut m, &z, t, r, &[r]);
    let d = a.direction.unwrap();
    // Scaled gradients e^{s_t} z_t have the same unit vectors: equal projections on u_t.
    let proj: Vec<f64> = (0..t)
        .map(|i| dot_vec(&z, r, i, &d) / dot(&z, r, i, i).sqrt())
        .collect();
    for x in &proj {
        assert!((x - proj[0]).abs() < 1e-4 * proj[0].abs(), "{proj:?}");
    }
    // alpha sums to 1 over the scaled gradients.
    let alpha: f64 = a.weights.iter().zip(&s).map(|(w, s)| w / s.exp()).sum();
    assert!((alpha - 1.0).abs() < 1e-9);
}

#[test]
fn upgrad_never_conflicts_with_a_task() {
    for (t, p, seed) in [(2, 5, 30), (5, 8, 31), (9, 12, 32), (16, 40, 33)] {
        let g = random_grads(t, p, seed);
        let a = run(&mut UpGrad::new(), &g, t, p, &[p]);
        let d = a.direction.unwrap();
        assert!(a.weights.iter().sum::<f64>() >= 1.0 - 1e-9);
        for i in 0..t {
            let gd = dot_vec(&g, p, i, &d);
            let scale = dot(&g, p, i, i).sqrt() * norm(&d);
            assert!(gd >= -1e-6 * scale, "t={t} task {i}: {gd}");
        }
    }
}

#[test]
fn nash_mtl_alpha_solves_the_bargaining_system() {
    for (t, p, seed) in [(2, 9, 40), (4, 21, 41), (7, 30, 42)] {
        let g = random_grads(t, p, seed);
        let mut m = NashMtl::with_options(None, 100).unwrap();
        let a = run(&mut m, &g, t, p, &[p]);
        let w = &a.weights;
        for i in 0..t {
            let kw: f64 = (0..t).map(|j| dot(&g, p, i, j) * w[j]).sum();
            assert!(
                (kw * w[i] - 1.0).abs() < 1e-6,
                "t={t} task {i}: {}",
                kw * w[i]
            );
        }
        // Warm start: a second call on the same gradients gives the same alpha.
        let b = run(&mut m, &g, t, p, &[p]);
        for (x, y) in w.iter().zip(&b.weights) {
            assert!((x - y).abs() < 1e-9 * x);
        }
    }
    // Clipping: the default max norm 1 bounds the direction.
    let g: Vec<f32> = random_grads(3, 10, 43).iter().map(|x| x * 1e-3).collect();
    let a = run(&mut NashMtl::new(), &g, 3, 10, &[10]);
    assert!(norm(&a.direction.unwrap()) <= 1.0 + 1e-5);
}

#[test]
fn cagrad_known_answers() {
    let (t, p) = (4, 25);
    let g = random_grads(t, p, 50);
    let a = run(
        &mut CaGrad::with_options(0.0, CaGradRescale::OnePlusC2).unwrap(),
        &g,
        t,
        p,
        &[p],
    );
    assert!(a.weights.iter().all(|w| (w - 0.25).abs() < 1e-15));
    // c = 0.5, T = 2: the inner problem matches a fine grid search over the simplex.
    let g = random_grads(2, 15, 51);
    let k = [
        dot(&g, 15, 0, 0),
        dot(&g, 15, 0, 1),
        dot(&g, 15, 1, 0),
        dot(&g, 15, 1, 1),
    ];
    let obj = |x: f64| {
        let w = [x, 1.0 - x];
        let gw_g0: f64 = (0..2)
            .map(|i| (0..2).map(|j| w[i] * k[i * 2 + j] * 0.5).sum::<f64>())
            .sum();
        let gw2: f64 = (0..2)
            .map(|i| (0..2).map(|j| w[i] * k[i * 2 + j] * w[j]).sum::<f64>())
            .sum();
        let g02 = (k[0] + k[1] + k[2] + k[3]) / 4.0;
        (
            gw_g0 + 0.5 * g02.sqrt() * gw2.sqrt(),
            gw2.sqrt(),
            g02.sqrt(),
        )
    };
    let best = (0..=100_000)
        .map(|i| i as f64 / 100_000.0)
        .min_by(|a, b| obj(*a).0.total_cmp(&obj(*b).0))
        .unwrap();
    let (_, gw, g0) = obj(best);
    let lambda = 0.5 * g0 / gw;
    let expect = [
        (0.5 + lambda * best) / 1.25,
        (0.5 + lambda * (1.0 - best)) / 1.25,
    ];
    let a = run(&mut CaGrad::new(), &g, 2, 15, &[15]);
    for i in 0..2 {
        assert!(
            (a.weights[i] - expect[i]).abs() < 1e-3,
            "{:?} vs {expect:?}",
            a.weights
        );
    }
}

#[test]
fn gradvac_with_zero_targets_is_pcgrad() {
    let (t, p) = (5, 23);
    let g = random_grads(t, p, 60);
    let pc = run(&mut PcGrad::new(9), &g, t, p, &[p]);
    let mut gv = GradVac::with_options(9, 0.01, GradVacGrouping::WholeModel).unwrap();
    let a = run(&mut gv, &g, t, p, &[p]);
    for (x, y) in pc.weights.iter().zip(&a.weights) {
        assert!((x - y).abs() < 1e-9, "{:?} vs {:?}", pc.weights, a.weights);
    }
    // Targets then move towards the observed cosines.
    assert!(gv.targets()[0].iter().any(|&x| x != 0.0));
    // Per layer: each segment's weights are PCGrad's on that segment alone.
    let ends = [9, p];
    let mut gv = GradVac::new(9);
    let a = run(&mut gv, &g, t, p, &ends);
    let sw = a.segment_weights.unwrap();
    assert_eq!(sw.len(), 2);
    let mut start = 0;
    for (l, &end) in ends.iter().enumerate() {
        let n = end - start;
        let sub: Vec<f32> = (0..t)
            .flat_map(|i| g[i * p + start..i * p + end].iter().cloned())
            .collect();
        let pc = run(&mut PcGrad::new(9), &sub, t, n, &[n]);
        for (x, y) in pc.weights.iter().zip(&sw[l]) {
            assert!(
                (x - y).abs() < 1e-9,
                "segment {l}: {:?} vs {:?}",
                pc.weights,
                sw[l]
            );
        }
        start = end;
    }
}

#[test]
fn loss_based_parameter_gradients_match_finite_differences() {
    let l = [0.9, 2.3, 0.4];
    let s0 = [0.2, -0.4, 0.1];
    let h = 1e-6;
    // Uncertainty weighting.
    let mut u = Uncertainty::new(3).unwrap();
    u.set_params(&s0).unwrap();
    u.aggregate(&AggregateInput::from_losses(&l)).unwrap();
    let grads = u.param_grads().to_vec();
    for i in 0..3 {
        let mut sp = s0;
        sp[i] += h;
        let mut sm = s0;
        sm[i] -= h;
        u.set_params(&sp).unwrap();
        let fp = u.objective(&l);
        u.set_params(&sm).unwrap();
        let fm = u.objective(&l);
        assert!(
            ((fp - fm) / (2.0 * h) - grads[i]).abs() < 1e-6,
            "uncertainty {i}"
        );
    }
    // The weights are the objective's derivative with respect to each loss.
    u.set_params(&s0).unwrap();
    let a = u.aggregate(&AggregateInput::from_losses(&l)).unwrap();
    for i in 0..3 {
        let mut lp = l;
        lp[i] += h;
        let mut lm = l;
        lm[i] -= h;
        let fd = (u.objective(&lp) - u.objective(&lm)) / (2.0 * h);
        assert!((fd - a.weights[i]).abs() < 1e-6);
    }
    // IMTL-L and IMTL-H.
    let mut m = ImtlL::new(3).unwrap();
    let mut mh = ImtlH::new(3).unwrap();
    m.set_params(&s0).unwrap();
    mh.set_params(&s0).unwrap();
    let a = m.aggregate(&AggregateInput::from_losses(&l)).unwrap();
    let z = random_grads(3, 8, 70);
    mh.aggregate(
        &AggregateInput::from_losses(&l).with_grads(TaskGradients::whole(&z, 3, 8).unwrap()),
    )
    .unwrap();
    let grads = m.param_grads().to_vec();
    assert_eq!(grads, mh.param_grads());
    for i in 0..3 {
        let mut sp = s0;
        sp[i] += h;
        let mut sm = s0;
        sm[i] -= h;
        m.set_params(&sp).unwrap();
        let fp = m.objective(&l);
        m.set_params(&sm).unwrap();
        let fm = m.objective(&l);
        assert!(
            ((fp - fm) / (2.0 * h) - grads[i]).abs() < 1e-6,
            "imtl_l {i}"
        );
        let mut lp = l;
        lp[i] += h;
        m.set_params(&s0).unwrap();
        let fd = (m.objective(&lp) - m.objective(&l)) / h;
        assert!((fd - a.weights[i]).abs() < 1e-5);
    }
}

#[test]
fn gradnorm_weight_gradients_match_finite_differences() {
    let (t, p) = (3, 20);
    let g = random_grads(t, p, 80);
    let ends = [12, p];
    let mut m = GradNorm::new(t).unwrap();
    let l0 = [1.0, 2.0, 0.5];
    let grads = TaskGradients::new(&g, t, p, &ends).unwrap();
    m.aggregate(&AggregateInput::from_losses(&l0).with_grads(grads.clone()))
        .unwrap();
    m.set_params(&[0.8, 1.5, 0.7]).unwrap();
    let l1 = [0.6, 1.9, 0.2];
    let a = m
        .aggregate(&AggregateInput::from_losses(&l1).with_grads(grads))
        .unwrap();
    // Renormalised to sum T.
    assert!((a.weights.iter().sum::<f64>() - 3.0).abs() < 1e-12);
    let w = a.weights.clone();
    // Norms on the last segment (the "last shared layer").
    let norms: Vec<f64> = (0..t)
        .map(|i| {
            (12..p)
                .map(|k| (g[i * p + k] as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let targets = m.targets().to_vec();
    // Known answer of the targets: Gbar * r_t^1.5.
    let r: Vec<f64> = (0..t).map(|i| l1[i] / l0[i]).collect();
    let rm = r.iter().sum::<f64>() / 3.0;
    let gbar = (0..t).map(|i| w[i] * norms[i]).sum::<f64>() / 3.0;
    for i in 0..t {
        assert!((targets[i] - gbar * (r[i] / rm).powf(1.5)).abs() < 1e-9 * gbar);
    }
    let h = 1e-7;
    for i in 0..t {
        let mut wp = w.clone();
        wp[i] += h;
        let mut wm = w.clone();
        wm[i] -= h;
        let fd = (GradNorm::grad_loss(&wp, &norms, &targets)
            - GradNorm::grad_loss(&wm, &norms, &targets))
            / (2.0 * h);
        assert!(
            (fd - m.param_grads()[i]).abs() < 1e-5 * norms[i].max(1.0),
            "{i}: {fd}"
        );
    }
}

#[test]
fn dwa_weights_follow_epoch_mean_loss_ratios() {
    let mut m = Dwa::new(2).unwrap();
    let step = |m: &mut Dwa, l: [f64; 2], e: usize| {
        m.aggregate(&AggregateInput::from_losses(&l).with_epoch(e))
            .unwrap()
            .weights
    };
    assert_eq!(step(&mut m, [1.0, 1.0], 0), vec![1.0, 1.0]);
    assert_eq!(step(&mut m, [3.0, 1.0], 0), vec![1.0, 1.0]); // epoch 0 means (2, 1)
    assert_eq!(step(&mut m, [1.0, 0.5], 1), vec![1.0, 1.0]); // epoch 1 means (1, 0.5)
    let w = step(&mut m, [1.0, 1.0], 2);
    // Ratios (0.5, 0.5): equal weights.
    assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - 1.0).abs() < 1e-12);
    let w = step(&mut m, [9.0, 9.0], 3); // epoch 2 means (1, 1): ratios (1, 2)
    let e1 = (0.5f64).exp();
    let e2 = (1.0f64).exp();
    assert!((w[0] - 2.0 * e1 / (e1 + e2)).abs() < 1e-12, "{w:?}");
    assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
    assert!(
        m.aggregate(&AggregateInput::from_losses(&[1.0, 1.0]).with_epoch(1))
            .is_err()
    );
}

#[test]
fn randomised_methods_reproduce_with_their_seed() {
    let (t, p) = (4, 30);
    let g = random_grads(t, p, 90);
    for name in ["rlw", "pcgrad", "gradvac", "graddrop"] {
        let mut a = build(name, t, 5).unwrap();
        let mut b = build(name, t, 5).unwrap();
        for _ in 0..3 {
            let x = run(a.as_mut(), &g, t, p, &[p]);
            let y = run(b.as_mut(), &g, t, p, &[p]);
            assert_eq!(x, y, "{name}");
        }
    }
    let mut r = Rlw::new(5, 1).unwrap();
    let w = r
        .aggregate(&AggregateInput::from_losses(&[1.0; 5]))
        .unwrap()
        .weights;
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12 && w.iter().all(|&x| x > 0.0));
}

#[test]
fn graddrop_keeps_the_sign_it_picks_and_leak_one_is_the_sum() {
    let (t, r) = (3, 200);
    let z = random_grads(t, r, 95);
    let a = run(&mut GradDrop::new(t, 3).unwrap(), &z, t, r, &[r]);
    let d = a.direction.unwrap();
    for k in 0..r {
        // Each output element is the sum of the kept same-sign parts: its sign agrees with
        // every task gradient that contributed.
        let pos: f64 = (0..t).map(|i| z[i * r + k].max(0.0) as f64).sum();
        let neg: f64 = (0..t).map(|i| z[i * r + k].min(0.0) as f64).sum();
        let x = d[k] as f64;
        assert!(
            (x - pos).abs() < 1e-6 || (x - neg).abs() < 1e-6,
            "{k}: {x} {pos} {neg}"
        );
    }
    // Pure signs (purity 1 or 0) are always kept: all-positive and all-negative gradients
    // pass through summed.
    for sign in [1.0f32, -1.0] {
        let pure: Vec<f32> = z.iter().map(|x| sign * x.abs()).collect();
        let a = run(&mut GradDrop::new(t, 4).unwrap(), &pure, t, r, &[r]);
        let d = a.direction.unwrap();
        for k in 0..r {
            let s: f64 = (0..t).map(|i| pure[i * r + k] as f64).sum();
            assert!((d[k] as f64 - s).abs() < 1e-6);
        }
    }
    // Mixed signs: some entries are dropped.
    let a = run(&mut GradDrop::new(t, 3).unwrap(), &z, t, r, &[r]);
    assert!(
        a.weights.iter().all(|&w| w > 0.0 && w < 1.0),
        "{:?}",
        a.weights
    );
    let a = run(
        &mut GradDrop::with_leak(vec![1.0; t], 3).unwrap(),
        &z,
        t,
        r,
        &[r],
    );
    let d = a.direction.unwrap();
    for k in 0..r {
        let s: f64 = (0..t).map(|i| z[i * r + k] as f64).sum();
        assert!((d[k] as f64 - s).abs() < 1e-6);
    }
    assert_eq!(a.weights, vec![1.0; t]);
}

#[test]
fn conflict_metrics_match_naive_references() {
    let (t, p) = (4, 33);
    let g = random_grads(t, p, 100);
    let ends = [8, 20, 33];
    let grads = TaskGradients::new(&g, t, p, &ends).unwrap();
    let names: Vec<String> = ["conv1", "layer1", "layer2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rec = ConflictRecord::measure(12, &grads, Some(&names)).unwrap();
    let mut start = 0;
    for (l, &end) in ends.iter().enumerate() {
        let seg = &rec.segments[l];
        assert_eq!(seg.name.as_deref(), Some(names[l].as_str()));
        let d = |i: usize, j: usize| {
            (start..end)
                .map(|k| g[i * p + k] as f64 * g[j * p + k] as f64)
                .sum::<f64>()
        };
        let mut idx = 0;
        let mut neg = 0;
        for i in 0..t {
            assert!((seg.norms[i] - d(i, i).sqrt()).abs() < 1e-9);
            for j in i + 1..t {
                let c = d(i, j) / (d(i, i) * d(j, j)).sqrt();
                assert!((seg.cosines[idx] - c).abs() < 1e-9);
                let m = 2.0 * (d(i, i) * d(j, j)).sqrt() / (d(i, i) + d(j, j));
                assert!((seg.magnitude_similarity[idx] - m).abs() < 1e-9);
                neg += (c < 0.0) as usize;
                idx += 1;
            }
        }
        assert!((seg.conflict_fraction - neg as f64 / 6.0).abs() < 1e-12);
        start = end;
    }
    for i in 0..t {
        assert!((rec.total.norms[i] - dot(&g, p, i, i).sqrt()).abs() < 1e-9);
    }
    let line = rec.to_json_line();
    assert!(!line.contains('\n'));
    let back: ConflictRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back, rec);
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let g = random_grads(2, 6, 110);
    assert!(TaskGradients::new(&g, 2, 5, &[5]).is_err());
    assert!(TaskGradients::new(&g, 2, 6, &[4, 3, 6]).is_err());
    assert!(TaskGradients::new(&g, 2, 6, &[5]).is_err());
    let grads = TaskGradients::whole(&g, 2, 6).unwrap();
    let err = PcGrad::new(0)
        .aggregate(&AggregateInput::from_losses(&[1.0]).with_grads(grads.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pcgrad") && err.contains("1 task losses"),
        "{err}"
    );
    let err = Mgda::new()
        .aggregate(&AggregateInput::from_losses(&[1.0, f64::NAN]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
    let err = Mgda::new()
        .aggregate(&AggregateInput::from_losses(&[1.0, 2.0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs per-task gradients"), "{err}");
    let mut bad = g.clone();
    bad[3] = f32::NAN;
    let gb = TaskGradients::whole(&bad, 2, 6).unwrap();
    assert!(
        UpGrad::new()
            .aggregate(&AggregateInput::from_losses(&[1.0, 2.0]).with_grads(gb))
            .is_err()
    );
    let err = build("pcgrd", 2, 0).err().unwrap().to_string();
    assert!(err.contains("unknown method `pcgrd`"), "{err}");
    assert!(Linear::new(vec![0.5, -0.1]).is_err());
    assert!(Uncertainty::new(2).unwrap().set_params(&[1.0]).is_err());
}
