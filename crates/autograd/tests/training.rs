//! A tiny MLP and a tiny conv net (conv-BN-ReLU-pool-linear) trained with plain SGD on
//! separable toy problems must reach near-zero loss.

mod common;

use common::Rng;
use scalarize_autograd::{ParamStore, Tensor, no_grad};

/// Uniform(-a, a) with a = √(6 / fan_in) (He-uniform, good for ReLU nets).
fn init(rng: &mut Rng, shape: &[usize], fan_in: usize) -> Tensor {
    let a = (6.0 / fan_in as f32).sqrt();
    let n = shape.iter().product();
    Tensor::new(rng.vec(n, -a, a), shape).unwrap()
}

/// One plain SGD step over every trainable parameter.
fn sgd_step(s: &mut ParamStore, loss: &Tensor, lr: f32) {
    let grads = loss.backward().unwrap();
    let names: Vec<String> = s.trainable().map(|e| e.name().to_string()).collect();
    for name in names {
        let Some(g) = s.grad(&grads, &name).unwrap() else {
            continue;
        };
        let g = g.to_vec();
        for (v, d) in s.values_mut(&name).unwrap().iter_mut().zip(g) {
            *v -= lr * d;
        }
    }
}

#[test]
fn mlp_fits_three_blobs() {
    let mut rng = Rng::new(1);
    let (per_class, classes) = (20, 3);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for c in 0..classes {
        let angle = c as f32 * 2.0 * std::f32::consts::PI / classes as f32;
        for _ in 0..per_class {
            xs.push(2.0 * angle.cos() + 0.3 * rng.normal());
            xs.push(2.0 * angle.sin() + 0.3 * rng.normal());
            ys.push(c as i64);
        }
    }
    let x = Tensor::new(xs, &[per_class * classes, 2]).unwrap();
    let mut s = ParamStore::new();
    s.add_parameter("fc1.weight", init(&mut rng, &[16, 2], 2))
        .unwrap();
    s.add_parameter("fc1.bias", Tensor::zeros(&[16]).unwrap())
        .unwrap();
    s.add_parameter("fc2.weight", init(&mut rng, &[classes, 16], 16))
        .unwrap();
    s.add_parameter("fc2.bias", Tensor::zeros(&[classes]).unwrap())
        .unwrap();
    let forward = |s: &ParamStore| {
        let p = |n: &str| s.get(n).unwrap().clone();
        x.linear(&p("fc1.weight"), Some(&p("fc1.bias")))
            .unwrap()
            .relu()
            .unwrap()
            .linear(&p("fc2.weight"), Some(&p("fc2.bias")))
            .unwrap()
            .cross_entropy(&ys, -100)
            .unwrap()
    };
    let first = forward(&s).item().unwrap();
    let mut last = first;
    for _ in 0..400 {
        let loss = forward(&s);
        last = loss.item().unwrap();
        sgd_step(&mut s, &loss, 0.3);
    }
    assert!(last < 0.05, "MLP loss {first} -> {last}, expected < 0.05");
}

/// 8x8 single-channel images: class 0 has a bright vertical bar, class 1 a horizontal one.
fn bars(rng: &mut Rng, n: usize) -> (Tensor, Vec<i64>) {
    let mut xs = vec![0.0f32; n * 64];
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        let pos = 1 + rng.below(6);
        let img = &mut xs[i * 64..(i + 1) * 64];
        for (j, v) in img.iter_mut().enumerate() {
            let (r, c) = (j / 8, j % 8);
            let on = if class == 0 { c == pos } else { r == pos };
            *v = if on { 1.0 } else { 0.0 } + 0.1 * rng.normal();
        }
        ys.push(class as i64);
    }
    (Tensor::new(xs, &[n, 1, 8, 8]).unwrap(), ys)
}

fn conv_net(s: &mut ParamStore, x: &Tensor, train: bool) -> Tensor {
    let w = s.get("conv1.weight").unwrap().clone();
    let h = x.conv2d(&w, None, 1, 1).unwrap();
    let h = s.batch_norm("bn1", &h, train, 0.1, 1e-5).unwrap();
    let h = h
        .relu()
        .unwrap()
        .max_pool2d(2, 2, 0)
        .unwrap()
        .flatten_from(1)
        .unwrap();
    let (fw, fb) = (
        s.get("fc.weight").unwrap().clone(),
        s.get("fc.bias").unwrap().clone(),
    );
    h.linear(&fw, Some(&fb)).unwrap()
}

#[test]
fn conv_bn_relu_pool_linear_fits_bars() {
    let mut rng = Rng::new(2);
    let mut s = ParamStore::new();
    s.add_parameter("conv1.weight", init(&mut rng, &[4, 1, 3, 3], 9))
        .unwrap();
    s.add_parameter("bn1.weight", Tensor::ones(&[4]).unwrap())
        .unwrap();
    s.add_parameter("bn1.bias", Tensor::zeros(&[4]).unwrap())
        .unwrap();
    s.add_buffer("bn1.running_mean", Tensor::zeros(&[4]).unwrap())
        .unwrap();
    s.add_buffer("bn1.running_var", Tensor::ones(&[4]).unwrap())
        .unwrap();
    s.add_parameter("fc.weight", init(&mut rng, &[2, 64], 64))
        .unwrap();
    s.add_parameter("fc.bias", Tensor::zeros(&[2]).unwrap())
        .unwrap();
    let (x, y) = bars(&mut rng, 16);
    let mut last = f32::INFINITY;
    for _ in 0..200 {
        let loss = conv_net(&mut s, &x, true).cross_entropy(&y, -100).unwrap();
        last = loss.item().unwrap();
        sgd_step(&mut s, &loss, 0.1);
    }
    assert!(
        last < 0.05,
        "conv net training loss {last}, expected < 0.05"
    );
    // Eval mode (running statistics, nothing recorded) classifies fresh images.
    let (xt, yt) = bars(&mut rng, 32);
    let _g = no_grad();
    let logits = conv_net(&mut s, &xt, false);
    assert!(!logits.is_tracked());
    let l = logits.to_vec();
    let correct = (0..32)
        .filter(|&i| (l[2 * i + 1] > l[2 * i]) as i64 == yt[i])
        .count();
    assert!(correct >= 30, "eval accuracy {correct}/32");
}
