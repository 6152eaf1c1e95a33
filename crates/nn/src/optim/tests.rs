use super::*;

fn close(a: f32, b: f64, tol: f64) -> bool {
    ((a as f64) - b).abs() <= tol * (1.0 + b.abs())
}

/// Naive f64 reference of torch.optim.SGD's update rule.
fn sgd_ref(p: &mut [f64], g: &[f64], buf: &mut Option<Vec<f64>>, c: &SgdConfig, lr: f64, wd: f64) {
    let (mu, damp) = (c.momentum as f64, c.dampening as f64);
    let d: Vec<f64> = p.iter().zip(g).map(|(p, g)| g + wd * p).collect();
    let step: Vec<f64> = if mu == 0.0 {
        d
    } else {
        let b = match buf {
            None => d.clone(),
            Some(b) => b
                .iter()
                .zip(&d)
                .map(|(b, d)| mu * b + (1.0 - damp) * d)
                .collect(),
        };
        *buf = Some(b.clone());
        if c.nesterov {
            d.iter().zip(&b).map(|(d, b)| d + mu * b).collect()
        } else {
            b
        }
    };
    for (p, s) in p.iter_mut().zip(step) {
        *p -= lr * s;
    }
}

fn grads(step: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.37 + step as f32 * 1.3).sin()) * (1.0 + i as f32 * 0.1))
        .collect()
}

#[test]
fn sgd_known_answers() {
    // Plain momentum, weight decay 0.1, lr 0.1, g = 0.5 twice (worked by hand).
    let c = SgdConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.1,
    };
    let mut opt = Optimizer::new(OptimizerConfig::Sgd(c), false).unwrap();
    let mut p = [1.0f32];
    opt.update("w", ParamKind::Weight, &mut p, &[0.5], 0.1)
        .unwrap();
    assert!(close(p[0], 0.94, 1e-6), "{}", p[0]);
    opt.update("w", ParamKind::Weight, &mut p, &[0.5], 0.1)
        .unwrap();
    assert!(close(p[0], 0.8266, 1e-6), "{}", p[0]);
    // Nesterov.
    let c = SgdConfig {
        nesterov: true,
        ..c
    };
    let mut opt = Optimizer::new(OptimizerConfig::Sgd(c), false).unwrap();
    let mut p = [1.0f32];
    opt.update("w", ParamKind::Weight, &mut p, &[0.5], 0.1)
        .unwrap();
    assert!(close(p[0], 0.886, 1e-6), "{}", p[0]);
    opt.update("w", ParamKind::Weight, &mut p, &[0.5], 0.1)
        .unwrap();
    assert!(close(p[0], 0.725566, 1e-6), "{}", p[0]);
}

#[test]
fn sgd_matches_the_f64_reference_over_many_steps() {
    for (momentum, dampening, nesterov, wd) in [
        (0.0, 0.0, false, 0.0),
        (0.0, 0.0, false, 5e-4),
        (0.9, 0.0, false, 5e-4),
        (0.9, 0.25, false, 1e-2),
        (0.8, 0.0, true, 1e-3),
    ] {
        let c = SgdConfig {
            momentum,
            dampening,
            nesterov,
            weight_decay: wd,
        };
        let mut opt = Optimizer::new(OptimizerConfig::Sgd(c), false).unwrap();
        let n = 7;
        let mut p: Vec<f32> = (0..n).map(|i| 0.3 - 0.11 * i as f32).collect();
        let mut pr: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let mut buf = None;
        for step in 0..6 {
            let g = grads(step, n);
            let lr = 0.05 + 0.01 * step as f32;
            opt.update("layer.weight", ParamKind::Weight, &mut p, &g, lr)
                .unwrap();
            let gd: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            sgd_ref(&mut pr, &gd, &mut buf, &c, lr as f64, wd as f64);
        }
        for (a, b) in p.iter().zip(&pr) {
            assert!(close(*a, *b, 1e-5), "{c:?}: {a} vs {b}");
        }
        if momentum > 0.0 {
            let st = opt.state_tensors();
            assert_eq!(st.len(), 1);
            assert_eq!(st[0].0, "optim.momentum.layer.weight");
            for (a, b) in st[0].1.iter().zip(buf.as_ref().unwrap()) {
                assert!(close(*a, *b, 1e-5));
            }
        } else {
            assert!(opt.state_tensors().is_empty());
        }
    }
}

#[test]
fn adamw_known_answer_and_reference() {
    let c = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(c), false).unwrap();
    let mut p = [1.0f32];
    // Step 1: p = 0.99 - lr * m_hat / (sqrt(v_hat) + eps) = 0.99 - 0.1 * 0.5 / 0.5.
    opt.update("w", ParamKind::Weight, &mut p, &[0.5], 0.1)
        .unwrap();
    assert!(close(p[0], 0.89, 1e-6), "{}", p[0]);

    // Many steps against a naive f64 transcription of torch.optim.AdamW.
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(c), false).unwrap();
    let n = 5;
    let mut p: Vec<f32> = (0..n).map(|i| 0.5 - 0.2 * i as f32).collect();
    let mut pr: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0f64; n], vec![0f64; n]);
    let (b1, b2, eps, wd) = (0.9f64, 0.999f64, 1e-8f64, 0.1f64);
    for step in 1..=8 {
        let g = grads(step, n);
        let lr = 1e-2 * step as f64;
        opt.update("w", ParamKind::Weight, &mut p, &g, lr as f32)
            .unwrap();
        for i in 0..n {
            let g = g[i] as f64;
            pr[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let mh = m[i] / (1.0 - b1.powi(step as i32));
            let vh = v[i] / (1.0 - b2.powi(step as i32));
            pr[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    for (a, b) in p.iter().zip(&pr) {
        assert!(close(*a, *b, 2e-5), "{a} vs {b}");
    }
    assert_eq!(opt.param_steps().get("w"), Some(&8));
}

#[test]
fn no_decay_filter_spares_norms_biases_and_embeddings() {
    for config in [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.0,
            weight_decay: 0.5,
            ..Default::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            weight_decay: 0.5,
            ..Default::default()
        }),
    ] {
        let mut opt = Optimizer::new(config, true).unwrap();
        for kind in [ParamKind::Bias, ParamKind::Norm, ParamKind::Embedding] {
            let mut p = [2.0f32];
            opt.update(&format!("{kind:?}"), kind, &mut p, &[0.0], 0.1)
                .unwrap();
            assert_eq!(p[0], 2.0, "{kind:?} decayed");
        }
        let mut p = [2.0f32];
        opt.update("w", ParamKind::Weight, &mut p, &[0.0], 0.1)
            .unwrap();
        assert!(p[0] < 2.0, "weight did not decay");
        // Without the filter, a bias decays too.
        let mut opt = Optimizer::new(config, false).unwrap();
        let mut p = [2.0f32];
        opt.update("b", ParamKind::Bias, &mut p, &[0.0], 0.1)
            .unwrap();
        assert!(p[0] < 2.0);
    }
}

#[test]
fn bad_input_is_reported() {
    let mut opt = Optimizer::new(OptimizerConfig::Sgd(SgdConfig::default()), false).unwrap();
    let e = opt
        .update("w", ParamKind::Weight, &mut [1.0, 2.0], &[1.0], 0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`w`") && e.contains("2 elements"), "{e}");
    let e = opt
        .update(
            "bn.running_mean",
            ParamKind::RunningMean,
            &mut [1.0],
            &[1.0],
            0.1,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("buffer"), "{e}");
    let e = Optimizer::new(
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.0,
            nesterov: true,
            ..Default::default()
        }),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Nesterov"), "{e}");
    let e = Optimizer::new(
        OptimizerConfig::AdamW(AdamWConfig {
            beta2: 1.0,
            ..Default::default()
        }),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("betas"), "{e}");
}

#[test]
fn state_round_trips_and_resumes_identically() {
    for config in [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ] {
        let n = 6;
        let mut a = Optimizer::new(config, false).unwrap();
        let mut pa: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        for s in 0..3 {
            a.update("w", ParamKind::Weight, &mut pa, &grads(s, n), 0.01)
                .unwrap();
        }
        let tensors: BTreeMap<String, Vec<f32>> = a
            .state_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        let mut b = Optimizer::new(config, false).unwrap();
        b.load_state(&tensors, &a.param_steps()).unwrap();
        assert_eq!(a, b);
        let mut pb = pa.clone();
        for s in 3..6 {
            a.update("w", ParamKind::Weight, &mut pa, &grads(s, n), 0.01)
                .unwrap();
            b.update("w", ParamKind::Weight, &mut pb, &grads(s, n), 0.01)
                .unwrap();
        }
        assert_eq!(pa, pb);
    }
    // Inconsistent state is rejected with every problem named.
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), false).unwrap();
    let mut t = BTreeMap::new();
    t.insert("optim.exp_avg.a".to_string(), vec![0.0]);
    t.insert("optim.exp_avg_sq.b".to_string(), vec![0.0]);
    t.insert("optim.momentum.c".to_string(), vec![0.0]);
    let e = opt
        .load_state(&t, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("optim.exp_avg.a") && e.contains("optim.exp_avg_sq.b"),
        "{e}"
    );
    assert!(e.contains("SGD momentum"), "{e}");
}

#[test]
fn schedules() {
    let s = Schedule::new(0.1, 4, 104, ScheduleKind::Cosine { min_lr: 0.001 }).unwrap();
    assert!(close(s.lr_at(0), 0.025, 1e-7));
    assert!(close(s.lr_at(3), 0.1, 1e-7));
    assert!(close(s.lr_at(4), 0.1, 1e-7));
    assert!(close(s.lr_at(54), 0.0505, 1e-6));
    assert!(close(s.lr_at(104), 0.001, 1e-7));
    assert!(close(s.lr_at(500), 0.001, 1e-7));
    // Strictly decreasing after warm-up.
    assert!((4..104).all(|t| s.lr_at(t + 1) < s.lr_at(t)));

    let s = Schedule::new(
        1.0,
        0,
        100,
        ScheduleKind::Step {
            milestones: vec![10, 20],
            gamma: 0.1,
        },
    )
    .unwrap();
    assert_eq!(s.lr_at(9), 1.0);
    assert!(close(s.lr_at(10), 0.1, 1e-7));
    assert!(close(s.lr_at(25), 0.01, 1e-7));
    let s = Schedule::new(0.3, 2, 10, ScheduleKind::Constant).unwrap();
    assert_eq!(
        (0..4).map(|t| s.lr_at(t)).collect::<Vec<_>>(),
        vec![0.15, 0.3, 0.3, 0.3]
    );
    assert!(Schedule::new(0.1, 10, 10, ScheduleKind::Cosine { min_lr: 0.0 }).is_err());
    assert!(Schedule::new(-1.0, 0, 10, ScheduleKind::Constant).is_err());
    let e = Schedule::new(
        0.1,
        0,
        10,
        ScheduleKind::Step {
            milestones: vec![5, 3],
            gamma: 0.1,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("increasing"), "{e}");
}

#[test]
fn configs_deserialize_from_json() {
    let c: OptimizerConfig = serde_json::from_str(
        r#"{"kind":"sgd","momentum":0.9,"nesterov":true,"weight_decay":5e-4}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 5e-4
        })
    );
    let c: OptimizerConfig =
        serde_json::from_str(r#"{"kind":"adamw","weight_decay":0.05}"#).unwrap();
    assert_eq!(
        c,
        OptimizerConfig::AdamW(AdamWConfig {
            weight_decay: 0.05,
            ..Default::default()
        })
    );
    let s: Schedule = serde_json::from_str(
        r#"{"base_lr":0.1,"warmup_steps":5,"total_steps":50,"kind":"cosine"}"#,
    )
    .unwrap();
    assert_eq!(s.kind, ScheduleKind::Cosine { min_lr: 0.0 });
    assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"sgd","momentun":0.9}"#).is_err());
}

#[test]
fn clipping() {
    let mut g = vec![vec![3.0f32], vec![4.0f32]];
    let n = clip_grad_norm(&mut g, 1.0).unwrap();
    assert!(close(n, 5.0, 1e-7));
    assert!(close(g[0][0], 0.6, 1e-6) && close(g[1][0], 0.8, 1e-6));
    assert!(close(global_grad_norm(&g) as f32, 1.0, 1e-6));
    let mut g = vec![vec![0.3f32, -0.4]];
    let n = clip_grad_norm(&mut g, 1.0).unwrap();
    assert!(close(n, 0.5, 1e-7));
    assert_eq!(g[0], vec![0.3, -0.4]);
    let mut g = vec![vec![f32::NAN]];
    assert!(
        clip_grad_norm(&mut g, 1.0)
            .unwrap_err()
            .to_string()
            .contains("non-finite")
    );
    assert!(clip_grad_norm(&mut g, 0.0).is_err());
}

/// Parameters after six steps of torch.optim (PyTorch 2.15) on the same gradients and
/// per-step learning rates, printed by a short script and copied here.
#[test]
#[allow(clippy::excessive_precision)]
fn matches_torch_optim_after_six_steps() {
    let lrs = [0.1f32, 0.05, 0.1, 0.02, 0.1, 0.07];
    let cases: [(OptimizerConfig, f32, [f64; 5]); 3] = [
        (
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
                weight_decay: 0.01,
            }),
            1.0,
            [
                0.3457385301589966,
                0.012497270479798317,
                -0.3011323809623718,
                -0.5713580250740051,
                -0.7788174748420715,
            ],
        ),
        (
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.8,
                dampening: 0.3,
                nesterov: false,
                weight_decay: 0.01,
            }),
            1.0,
            [
                0.42371124029159546,
                0.13803602755069733,
                -0.13867224752902985,
                -0.3911590576171875,
                -0.6063699126243591,
            ],
        ),
        (
            OptimizerConfig::AdamW(AdamWConfig {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.05,
            }),
            0.1,
            [
                0.4882536828517914,
                0.2771642804145813,
                0.07822178304195404,
                -0.11945049464702606,
                -0.31649473309516907,
            ],
        ),
    ];
    for (config, lr_scale, expect) in cases {
        let mut opt = Optimizer::new(config, false).unwrap();
        let mut p: Vec<f32> = (0..5).map(|i| 0.5 - 0.2 * i as f32).collect();
        for (s, lr) in lrs.iter().enumerate() {
            opt.update("p", ParamKind::Weight, &mut p, &grads(s, 5), lr * lr_scale)
                .unwrap();
        }
        for (a, b) in p.iter().zip(expect) {
            assert!(close(*a, b, 1e-5), "{config:?}: {a} vs {b}");
        }
    }
}
