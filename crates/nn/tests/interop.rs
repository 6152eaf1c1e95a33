//! The interop check end to end: our `inspect` output against the PyTorch twin of the model
//! (crates/nn/python), run only where `python3` can import torch, numpy and safetensors (the
//! skip reason is printed otherwise; CI does not need torch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_nn::checkpoint::{TensorData, TensorRef, read_safetensors, write_safetensors_atomic};
use scalarize_nn::inspect::inspect;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::{HeadSpec, Model};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_has(modules: &str) -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import {modules}: {}",
            python(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/interop_check.py")
}

fn run_py(args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A random batch for `m`: images in [-1, 1], labels of the right kind for every head.
fn write_batch(m: &Model, n: usize, path: &Path) {
    let mut rng = StdRng::seed_from_u64(42);
    let (c, r) = (m.spec().in_channels, m.spec().resolution);
    let images: Vec<f32> = (0..n * c * r * r)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let mut f32s: Vec<(String, Vec<usize>, Vec<f32>)> =
        vec![("images".into(), vec![n, c, r, r], images)];
    let mut i64s: Vec<(String, Vec<usize>, Vec<i64>)> = Vec::new();
    for (t, h) in m.heads().0.iter().enumerate() {
        let key = format!("labels.{t}");
        match *h {
            HeadSpec::Classifier { classes } => i64s.push((
                key,
                vec![n],
                (0..n)
                    .map(|_| rng.random_range(0..classes as i64))
                    .collect(),
            )),
            HeadSpec::Binary { attributes } => f32s.push((
                key,
                vec![n, attributes],
                (0..n * attributes)
                    .map(|_| rng.random_range(0..2) as f32)
                    .collect(),
            )),
            HeadSpec::Dense { channels } if t % 2 == 0 => f32s.push((
                key,
                vec![n, channels, r, r],
                (0..n * channels * r * r)
                    .map(|_| rng.random::<f32>())
                    .collect(),
            )),
            HeadSpec::Dense { channels } => i64s.push((
                key,
                vec![n, r, r],
                (0..n * r * r)
                    .map(|_| rng.random_range(0..channels as i64))
                    .collect(),
            )),
        }
    }
    let mut tensors: Vec<(String, Vec<usize>, TensorRef<'_>)> = Vec::new();
    for (k, s, v) in &f32s {
        tensors.push((k.clone(), s.clone(), TensorRef::F32(v)));
    }
    for (k, s, v) in &i64s {
        tensors.push((k.clone(), s.clone(), TensorRef::I64(v)));
    }
    write_safetensors_atomic(path, &tensors, &BTreeMap::new()).unwrap();
}

const CASES: [(&str, &str); 2] = [
    ("resnet26:w0.125:r16", "3,a2,d2"),
    ("vit-ti:p4:d2:r16", "5,d3,a4"),
];

#[test]
fn inspect_writes_every_tensor() {
    for (spec, heads) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let (ck, batch, out) = (
            dir.path().join("w.safetensors"),
            dir.path().join("b.safetensors"),
            dir.path().join("o.safetensors"),
        );
        let m = Model::from_specs(spec, heads, InitOptions::default(), 5).unwrap();
        m.save(&ck, None, 0, &BTreeMap::new()).unwrap();
        write_batch(&m, 4, &batch);
        let rep = inspect(spec, heads, &ck, &batch, &out, Some(&[0.5, 0.3, 0.2])).unwrap();
        let f = read_safetensors(&out).unwrap();
        assert_eq!(rep.num_grads, m.store().trainable().count());
        for e in m.store().trainable() {
            let g = &f.tensors[&format!("grad.{}", e.name())];
            assert_eq!(g.shape, e.tensor().shape());
        }
        let total: f32 = rep
            .losses
            .iter()
            .zip(&rep.weights)
            .map(|(l, w)| l * w)
            .sum();
        assert!((total - rep.total).abs() < 1e-5);
        match &f.tensors["loss.0"].data {
            TensorData::F32(v) => assert_eq!(v, &vec![rep.losses[0]]),
            other => panic!("{other:?}"),
        }
        assert!(f.tensors["loss.0"].shape.is_empty());
        assert_eq!(f.metadata["heads"], heads);
        // Wrong weights count and a batch without labels are refused with clear errors.
        let e = inspect(spec, heads, &ck, &batch, &out, Some(&[1.0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 weights given for 3 heads"), "{e}");
        let e = inspect(spec, "3", &ck, &batch, &out, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected tensor"), "{e}");
    }
}

#[test]
fn our_files_open_in_python_safetensors() {
    if let Err(why) = python_has("numpy, safetensors") {
        // CI sets this after installing them, so there the check cannot be skipped.
        assert!(
            std::env::var("SCALARIZE_REQUIRE_PY_SAFETENSORS").is_err(),
            "SCALARIZE_REQUIRE_PY_SAFETENSORS is set but {why}"
        );
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("w.safetensors");
    let m = Model::from_specs("resnet26:w0.125", "10", InitOptions::default(), 1).unwrap();
    m.save(&ck, None, 7, &BTreeMap::new()).unwrap();
    let code = format!(
        "from safetensors import safe_open\n\
         f = safe_open({:?}, 'np')\n\
         assert f.metadata()['step'] == '7'\n\
         w = f.get_tensor('backbone.layer1.0.conv2.weight')\n\
         assert w.shape == (8, 8, 3, 3) and str(w.dtype) == 'float32'\n\
         print(len(list(f.keys())), float(w.sum()))",
        ck.to_str().unwrap()
    );
    let out = Command::new(python()).args(["-c", &code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    assert_eq!(
        parts.next().unwrap().parse::<usize>().unwrap(),
        m.layout().params.len()
    );
    let ours: f64 = m
        .store()
        .values("backbone.layer1.0.conv2.weight")
        .unwrap()
        .iter()
        .map(|&x| x as f64)
        .sum();
    let theirs: f64 = parts.next().unwrap().parse().unwrap();
    assert!((ours - theirs).abs() < 1e-4, "{ours} vs {theirs}");
}

#[test]
fn matches_pytorch_tensor_by_tensor() {
    if let Err(why) = python_has("torch, numpy, safetensors") {
        println!("skipped: {why}");
        return;
    }
    for (spec, heads) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let (ck, batch, out) = (
            dir.path().join("w.safetensors"),
            dir.path().join("b.safetensors"),
            dir.path().join("o.safetensors"),
        );
        let s = |p: &Path| p.to_str().unwrap().to_string();
        // Our checkpoint into PyTorch.
        let m = Model::from_specs(spec, heads, InitOptions::default(), 9).unwrap();
        m.save(&ck, None, 0, &BTreeMap::new()).unwrap();
        write_batch(&m, 6, &batch);
        inspect(spec, heads, &ck, &batch, &out, Some(&[0.6, 0.3, 0.1])).unwrap();
        let (ok, text) = run_py(&[
            "check",
            "--model",
            spec,
            "--heads",
            heads,
            "--checkpoint",
            &s(&ck),
            "--batch",
            &s(&batch),
            "--ours",
            &s(&out),
            "--weights",
            "0.6,0.3,0.1",
        ]);
        println!("{spec} {heads} (our init):\n{text}");
        assert!(ok, "{text}");
        // A PyTorch-initialised checkpoint (with num_batches_tracked) into ours.
        let (ok, text) = run_py(&[
            "export",
            "--model",
            spec,
            "--heads",
            heads,
            "--out",
            &s(&ck),
        ]);
        assert!(ok, "{text}");
        inspect(spec, heads, &ck, &batch, &out, None).unwrap();
        let (ok, text) = run_py(&[
            "check",
            "--model",
            spec,
            "--heads",
            heads,
            "--checkpoint",
            &s(&ck),
            "--batch",
            &s(&batch),
            "--ours",
            &s(&out),
        ]);
        println!("{spec} {heads} (PyTorch init):\n{text}");
        assert!(ok, "{text}");
    }
}
