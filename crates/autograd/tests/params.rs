//! The parameter store: names, order, gradients by name, flat views, in-place updates,
//! BatchNorm running statistics.

mod common;

use common::{Rng, assert_close};
use scalarize_autograd::{EntryKind, ParamStore, Tensor, no_grad};

fn store(rng: &mut Rng) -> ParamStore {
    let mut s = ParamStore::new();
    s.add_parameter("backbone.conv1.weight", rng.tensor(&[2, 1, 3, 3]))
        .unwrap();
    s.add_parameter("backbone.bn1.weight", Tensor::ones(&[2]).unwrap())
        .unwrap();
    s.add_parameter("backbone.bn1.bias", Tensor::zeros(&[2]).unwrap())
        .unwrap();
    s.add_buffer("backbone.bn1.running_mean", Tensor::zeros(&[2]).unwrap())
        .unwrap();
    s.add_buffer("backbone.bn1.running_var", Tensor::ones(&[2]).unwrap())
        .unwrap();
    s.add_parameter("heads.0.weight", rng.tensor(&[3, 2]))
        .unwrap();
    s.add_parameter("heads.0.bias", rng.tensor(&[3])).unwrap();
    s
}

fn forward(s: &mut ParamStore, x: &Tensor, train: bool) -> Tensor {
    let w = s.get("backbone.conv1.weight").unwrap().clone();
    let h = x.conv2d(&w, None, 1, 1).unwrap();
    let h = s.batch_norm("backbone.bn1", &h, train, 0.1, 1e-5).unwrap();
    let f = h.relu().unwrap().global_avg_pool().unwrap();
    let (hw, hb) = (
        s.get("heads.0.weight").unwrap().clone(),
        s.get("heads.0.bias").unwrap().clone(),
    );
    f.linear(&hw, Some(&hb)).unwrap()
}

#[test]
fn names_order_and_kinds() {
    let mut rng = Rng::new(1);
    let s = store(&mut rng);
    let names: Vec<&str> = s.iter().map(|e| e.name()).collect();
    assert_eq!(names[0], "backbone.conv1.weight");
    assert_eq!(names[3], "backbone.bn1.running_mean");
    assert_eq!(s.len(), 7);
    assert_eq!(s.parameters().count(), 5);
    assert_eq!(s.buffers().count(), 2);
    assert_eq!(s.num_trainable_elements(), 18 + 2 + 2 + 6 + 3);
    assert_eq!(
        s.entry("backbone.bn1.running_var").unwrap().kind(),
        EntryKind::Buffer
    );
    assert!(s.get("heads.0.bias").unwrap().is_leaf());
    assert!(!s.get("backbone.bn1.running_mean").unwrap().is_tracked());
}

#[test]
fn bad_names_are_errors() {
    let mut rng = Rng::new(2);
    let mut s = store(&mut rng);
    let dup = s
        .add_parameter("heads.0.bias", rng.tensor(&[3]))
        .unwrap_err()
        .to_string();
    assert!(
        dup.contains("heads.0.bias") && dup.contains("already"),
        "{dup}"
    );
    let missing = s.get("heads.9.weight").unwrap_err().to_string();
    assert!(missing.contains("heads.9.weight"), "{missing}");
    assert!(s.set_values("heads.0.bias", &[1.0]).is_err());
    assert!(s.set_flat_values(&[0.0; 3]).is_err());
    assert!(s.values_mut_pair("heads.0.bias", "heads.0.bias").is_err());
    assert!(s.set_trainable("backbone.bn1.running_mean", true).is_err());
}

#[test]
fn gradients_by_name_and_flat_layout() {
    let mut rng = Rng::new(3);
    let mut s = store(&mut rng);
    let x = rng.tensor(&[2, 1, 4, 4]);
    let loss = forward(&mut s, &x, true)
        .cross_entropy(&[0, 2], -100)
        .unwrap();
    let g = loss.backward().unwrap();
    let flat = s.flat_grads(&g);
    let mut offset = 0;
    for e in s.trainable() {
        let gi = s
            .grad(&g, e.name())
            .unwrap()
            .expect("every parameter is reached");
        assert_eq!(gi.shape(), e.tensor().shape(), "{}", e.name());
        assert_eq!(&flat[offset..offset + gi.numel()], gi.as_slice().unwrap());
        offset += gi.numel();
    }
    assert_eq!(offset, flat.len());
    // Buffers never get gradients.
    assert!(s.grad(&g, "backbone.bn1.running_mean").unwrap().is_none());
}

#[test]
fn flat_values_round_trip_and_frozen_parameters() {
    let mut rng = Rng::new(4);
    let mut s = store(&mut rng);
    let v = s.flat_values();
    let doubled: Vec<f32> = v.iter().map(|x| 2.0 * x).collect();
    s.set_flat_values(&doubled).unwrap();
    assert_eq!(s.flat_values(), doubled);
    s.set_trainable("backbone.conv1.weight", false).unwrap();
    assert_eq!(s.num_trainable_elements(), 13);
    let x = rng.tensor(&[1, 1, 3, 3]);
    let loss = forward(&mut s, &x, true).sum().unwrap();
    let g = loss.backward().unwrap();
    assert!(s.grad(&g, "backbone.conv1.weight").unwrap().is_none());
    assert!(s.grad(&g, "heads.0.weight").unwrap().is_some());
    s.set_trainable("backbone.conv1.weight", true).unwrap();
    assert!(s.get("backbone.conv1.weight").unwrap().is_leaf());
}

#[test]
fn in_place_update_keeps_identity_and_live_graphs_keep_old_values() {
    let mut rng = Rng::new(5);
    let mut s = ParamStore::new();
    let w0 = rng.tensor(&[3, 2]);
    let w = s.add_parameter("w", w0.clone()).unwrap();
    let x = rng.tensor(&[4, 3]).requires_grad();
    let y = x.matmul(&w).unwrap().sum().unwrap();
    // An SGD-style step while the graph is alive.
    for v in s.values_mut("w").unwrap() {
        *v -= 0.5;
    }
    assert_eq!(
        s.get("w").unwrap().id(),
        w.id(),
        "update keeps the tape identity"
    );
    assert_ne!(s.values("w").unwrap(), w0.as_slice().unwrap());
    let g = y.backward().unwrap();
    // dy/dx = 1·Wᵀ row sums with the OLD W (the graph's values).
    let dx = g.get(&x).unwrap().to_vec();
    for r in 0..4 {
        for c in 0..3 {
            let expected: f32 = w0.as_slice().unwrap()[c * 2..c * 2 + 2].iter().sum();
            assert!((dx[r * 3 + c] - expected).abs() < 1e-6);
        }
    }
    // Without live sharing the update happens in place: the buffer is not copied.
    drop((y, g, w));
    let ptr = s.values("w").unwrap().as_ptr();
    s.values_mut("w").unwrap()[0] = 7.0;
    assert_eq!(s.values("w").unwrap()[0], 7.0);
    assert_eq!(s.values("w").unwrap().as_ptr(), ptr);
}

#[test]
fn batch_norm_running_statistics() {
    let mut rng = Rng::new(6);
    let mut s = store(&mut rng);
    let x = rng.tensor(&[3, 1, 4, 5]);
    let w = s.get("backbone.conv1.weight").unwrap().clone();
    let h = {
        let _g = no_grad();
        x.conv2d(&w, None, 1, 1).unwrap()
    };
    // Naive f64 batch statistics per channel.
    let hv = h.to_vec();
    let (n, c, hw) = (3, 2, 20);
    let mut mean = [0.0f64; 2];
    let mut var = [0.0f64; 2];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| {
                hv[(i * c + ch) * hw..(i * c + ch + 1) * hw]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        mean[ch] = vals.iter().sum::<f64>() / vals.len() as f64;
        var[ch] =
            vals.iter().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
    }
    s.batch_norm("backbone.bn1", &h, true, 0.1, 1e-5).unwrap();
    let rm = s.values("backbone.bn1.running_mean").unwrap().to_vec();
    let rv = s.values("backbone.bn1.running_var").unwrap().to_vec();
    for ch in 0..c {
        assert!(
            (rm[ch] as f64 - 0.1 * mean[ch]).abs() < 1e-5,
            "running mean"
        );
        assert!(
            (rv[ch] as f64 - (0.9 + 0.1 * var[ch])).abs() < 1e-4,
            "running var"
        );
    }
    // Eval mode normalises with the running statistics and leaves them alone.
    let y = s
        .batch_norm("backbone.bn1", &h, false, 0.1, 1e-5)
        .unwrap()
        .to_vec();
    for (i, &v) in hv.iter().enumerate() {
        let ch = (i / hw) % c;
        let expected = (v - rm[ch]) / (rv[ch] + 1e-5).sqrt();
        assert!((y[i] - expected).abs() < 1e-5);
    }
    assert_eq!(s.values("backbone.bn1.running_mean").unwrap(), &rm[..]);
}

#[test]
fn clone_gets_fresh_leaves_sharing_values() {
    let mut rng = Rng::new(7);
    let s = store(&mut rng);
    let mut t = s.clone();
    let a = s.get("heads.0.weight").unwrap();
    let b = t.get("heads.0.weight").unwrap();
    assert_ne!(a.id(), b.id());
    assert!(a.shares_storage(b));
    t.values_mut("heads.0.weight").unwrap()[0] += 1.0;
    assert_ne!(
        s.values("heads.0.weight").unwrap()[0],
        t.values("heads.0.weight").unwrap()[0]
    );
    assert_close(
        "other values",
        s.values("heads.0.bias").unwrap(),
        t.values("heads.0.bias").unwrap(),
        0.0,
    );
}
