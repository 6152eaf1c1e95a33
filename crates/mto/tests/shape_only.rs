//! Aggregating from the Gram alone (shape-only gradients, as when the gradients live on a GPU)
//! gives exactly the weights of the full host path, for every registered method.

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use scalarize_mto::combine::{combine, combine_segments};
use scalarize_mto::*;

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// T x P gradients with a shared component and random per-task parts (some pairs conflict,
/// some agree), plus per-task losses.
fn random_step(t: usize, p: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let mut rng = Rng::seed_from_u64(seed);
    let shared: Vec<f64> = (0..p)
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect();
    let mut g = Vec::with_capacity(t * p);
    for i in 0..t {
        let scale = 0.5 + i as f64;
        let mix: f64 = rng.random::<f64>() * 2.0 - 0.5;
        for s in &shared {
            let own: f64 = rng.sample(StandardNormal);
            g.push((scale * (mix * s + own)) as f32);
        }
    }
    let losses = (0..t).map(|_| 0.2 + rng.random::<f64>() * 2.0).collect();
    (g, losses)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn bits32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Segment layouts over P = 23: one segment, and several of uneven sizes.
const LAYOUTS: &[&[usize]] = &[&[23], &[5, 6, 17, 23], &[1, 22, 23]];
const P: usize = 23;

#[test]
fn gram_only_aggregation_matches_the_full_path_for_every_method() {
    for &name in METHOD_NAMES {
        for t in 2..=5 {
            for seed in [1u64, 2, 3] {
                for ends in LAYOUTS {
                    let mut full = build(name, t, seed).unwrap();
                    let mut lite = build(name, t, seed).unwrap();
                    assert_eq!(
                        lite.needs_gradient_values(),
                        name == "graddrop",
                        "{name}: needs_gradient_values"
                    );
                    // Several steps: warm starts, EMA targets, learnable weights, epochs.
                    for step in 0..4u64 {
                        let (g, losses) = random_step(t, P, seed * 1000 + step * 10 + t as u64);
                        let epoch = step as usize;
                        let grads = TaskGradients::new(&g, t, P, ends).unwrap();
                        let a = full
                            .aggregate(
                                &AggregateInput::from_losses(&losses)
                                    .with_grads(grads.clone())
                                    .with_epoch(epoch),
                            )
                            .unwrap();
                        let gram = task_gram(&grads).unwrap();
                        let shape = TaskGradients::shape_only(t, P, ends).unwrap();
                        let res = lite.aggregate(
                            &AggregateInput::from_losses(&losses)
                                .with_grads(shape)
                                .with_gram(&gram)
                                .with_epoch(epoch),
                        );
                        if lite.needs_gradient_values() {
                            let err = res.unwrap_err().to_string();
                            assert!(err.contains(name) && err.contains("values"), "{err}");
                            continue;
                        }
                        let b = res.unwrap_or_else(|e| panic!("{name}: {e}"));
                        let ctx = format!("{name} t={t} seed={seed} ends={ends:?} step={step}");
                        assert_eq!(bits(&a.weights), bits(&b.weights), "{ctx}: weights");
                        assert_eq!(
                            a.segment_weights
                                .as_ref()
                                .map(|s| s.iter().map(|w| bits(w)).collect::<Vec<_>>()),
                            b.segment_weights
                                .as_ref()
                                .map(|s| s.iter().map(|w| bits(w)).collect::<Vec<_>>()),
                            "{ctx}: segment weights"
                        );
                        assert!(b.direction.is_none(), "{ctx}: shape-only gave a direction");
                        // The caller's combination of the weights is the full path's direction.
                        let d = match &b.segment_weights {
                            Some(sw) => combine_segments(&grads, sw).unwrap(),
                            None => combine(&grads, &b.weights).unwrap(),
                        };
                        let want = a.direction.as_ref().expect("full path direction");
                        assert_eq!(bits32(want), bits32(&d), "{ctx}: direction");
                        // Both copies take the same step on their own parameters.
                        assert_eq!(bits(full.params()), bits(lite.params()), "{ctx}: params");
                        assert_eq!(
                            bits(full.param_grads()),
                            bits(lite.param_grads()),
                            "{ctx}: param grads"
                        );
                        let next: Vec<f64> = full
                            .params()
                            .iter()
                            .zip(full.param_grads())
                            .map(|(p, g)| p - 0.05 * g)
                            .collect();
                        full.set_params(&next).unwrap();
                        lite.set_params(&next).unwrap();
                    }
                }
            }
        }
    }
}

#[test]
fn gradvac_per_segment_weights_come_from_the_gram_alone() {
    // GradVac's default groups are the segments: its per-segment weights must differ between
    // segments here, or the test above would not tell per-segment from whole-model weights.
    let ends: &[usize] = &[5, 6, 17, 23];
    let (g, losses) = random_step(4, P, 99);
    let grads = TaskGradients::new(&g, 4, P, ends).unwrap();
    let gram = task_gram(&grads).unwrap();
    let mut gv = build("gradvac", 4, 5).unwrap();
    let a = gv
        .aggregate(
            &AggregateInput::from_losses(&losses)
                .with_grads(TaskGradients::shape_only(4, P, ends).unwrap())
                .with_gram(&gram),
        )
        .unwrap();
    let sw = a.segment_weights.expect("per-segment weights");
    assert_eq!(sw.len(), ends.len());
    assert!(sw.windows(2).any(|w| w[0] != w[1]), "{sw:?}");
    assert!(a.direction.is_none());
}

#[test]
fn graddrop_refuses_shape_only_gradients_and_keeps_its_draws() {
    let (g, losses) = random_step(3, P, 4);
    let grads = TaskGradients::whole(&g, 3, P).unwrap();
    let gram = task_gram(&grads).unwrap();
    let mut refused = GradDrop::new(3, 11).unwrap();
    assert!(refused.needs_gradient_values());
    let err = refused
        .aggregate(
            &AggregateInput::from_losses(&losses)
                .with_grads(TaskGradients::shape_only_whole(3, P).unwrap())
                .with_gram(&gram),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("graddrop:") && err.contains("values"),
        "{err}"
    );
    // The refused call drew nothing: the next call with values matches a fresh method's.
    let mut fresh = GradDrop::new(3, 11).unwrap();
    let input = AggregateInput::from_losses(&losses).with_grads(grads);
    assert_eq!(
        refused.aggregate(&input).unwrap(),
        fresh.aggregate(&input).unwrap()
    );
}

#[test]
fn shape_only_misuse_is_an_error_not_a_panic() {
    let ends: &[usize] = &[5, 23];
    let shape = TaskGradients::shape_only(3, P, ends).unwrap();
    assert!(!shape.has_values());
    assert!(shape.data().is_err());
    assert!(shape.row(0).is_err());
    assert!(task_gram(&shape).is_err());
    assert!(combine(&shape, &[1.0; 3]).is_err());
    assert!(combine_segments(&shape, &[vec![1.0; 3], vec![1.0; 3]]).is_err());
    assert!(ConflictRecord::measure(0, &shape, None).is_err());
    // Shape checks still apply without values.
    assert!(TaskGradients::shape_only(0, P, ends).is_err());
    assert!(TaskGradients::shape_only(3, P, &[5, 22]).is_err());
    assert!(TaskGradients::shape_only(3, P, &[6, 5, 23]).is_err());
    // A Gram method without the Gram cannot proceed: a clear error.
    let losses = [1.0, 1.0, 1.0];
    let err = build("pcgrad", 3, 1)
        .unwrap()
        .aggregate(&AggregateInput::from_losses(&losses).with_grads(shape.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("with_gram"), "{err}");
    // A Gram of the wrong shape, or with a non-finite diagonal, is refused.
    let (g, _) = random_step(2, P, 3);
    let other = task_gram(&TaskGradients::new(&g, 2, P, ends).unwrap()).unwrap();
    let err = build("mgda", 3, 1)
        .unwrap()
        .aggregate(
            &AggregateInput::from_losses(&losses)
                .with_grads(shape.clone())
                .with_gram(&other),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("precomputed Gram"), "{err}");
    let (g3, _) = random_step(3, P, 3);
    let mut bad = task_gram(&TaskGradients::new(&g3, 3, P, ends).unwrap()).unwrap();
    bad.total[4] = f64::NAN;
    let err = build("upgrad", 3, 1)
        .unwrap()
        .aggregate(
            &AggregateInput::from_losses(&losses)
                .with_grads(shape)
                .with_gram(&bad),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("task 1"), "{err}");
    // Wrong weight counts are refused by the combinations.
    let grads = TaskGradients::new(&g3, 3, P, ends).unwrap();
    assert!(combine(&grads, &[1.0; 2]).is_err());
    assert!(combine_segments(&grads, &[vec![1.0; 3]]).is_err());
}

#[test]
fn conflict_metrics_from_the_gram_equal_those_from_the_values() {
    let ends: &[usize] = &[5, 6, 17, 23];
    let names: Vec<String> = (0..ends.len()).map(|l| format!("layer{l}")).collect();
    for t in 2..=5 {
        let (g, _) = random_step(t, P, 40 + t as u64);
        let grads = TaskGradients::new(&g, t, P, ends).unwrap();
        let a = ConflictRecord::measure(3, &grads, Some(&names)).unwrap();
        let b = ConflictRecord::from_gram(3, &task_gram(&grads).unwrap(), Some(&names)).unwrap();
        assert_eq!(a, b);
    }
}
