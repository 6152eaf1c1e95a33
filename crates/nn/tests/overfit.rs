//! Each family memorises a fixed batch of 32 random images with random labels (two 10-class
//! heads): the training loss must fall to near zero. Catches wrong gradients, a broken
//! optimizer or BN bookkeeping that a single-step check would miss.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_autograd::Tensor;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::optim::{AdamWConfig, Optimizer, OptimizerConfig, SgdConfig};
use scalarize_nn::{Model, Routing};

fn overfit(spec: &str, config: OptimizerConfig, lr: f32, max_steps: usize) -> (f32, f32, usize) {
    let mut m = Model::from_specs(spec, "10,10", InitOptions::default(), 1).unwrap();
    let r = m.spec().resolution;
    let n = 32;
    let mut rng = StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..n * 3 * r * r)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let x = Tensor::new(x, &[n, 3, r, r]).unwrap();
    let labels: Vec<Vec<i64>> = (0..2)
        .map(|_| (0..n).map(|_| rng.random_range(0..10)).collect())
        .collect();
    let mut opt = Optimizer::new(config, true).unwrap();
    let mut first = f32::NAN;
    let mut last = f32::NAN;
    for step in 0..max_steps {
        let out = m.forward(&x, &Routing::AllHeads).unwrap();
        let losses: Vec<Tensor> = out
            .outputs
            .iter()
            .zip(&labels)
            .map(|(o, l)| {
                head_loss(&m.heads().0[o.head], &o.output, &Target::Classes(l.clone())).unwrap()
            })
            .collect();
        let loss = weighted_sum(&losses, &[0.5, 0.5]).unwrap();
        last = loss.item().unwrap();
        if step == 0 {
            first = last;
        }
        if last < 0.01 {
            return (first, last, step);
        }
        let grads = loss.backward().unwrap();
        drop(out);
        m.step(&mut opt, &grads, lr, Some(5.0)).unwrap();
    }
    (first, last, max_steps)
}

#[test]
fn resnet26_overfits_a_fixed_batch() {
    let sgd = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    });
    let (first, last, steps) = overfit("resnet26:w0.25:r16", sgd, 0.05, 150);
    println!("resnet26:w0.25 16x16: loss {first:.3} -> {last:.4} in {steps} steps");
    assert!(first > 2.0, "initial loss {first} should be near ln 10");
    assert!(last < 0.05, "loss only fell to {last}");
}

#[test]
fn vit_ti_overfits_a_fixed_batch() {
    let adamw = OptimizerConfig::AdamW(AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    });
    let (first, last, steps) = overfit("vit-ti:p4:d2:r16", adamw, 1e-3, 150);
    println!("vit-ti:p4:d2 16x16: loss {first:.3} -> {last:.4} in {steps} steps");
    assert!(first > 2.0, "initial loss {first} should be near ln 10");
    assert!(last < 0.05, "loss only fell to {last}");
}
