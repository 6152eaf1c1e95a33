//! `scalarize init` + `scalarize inspect` end to end on a tiny ViT.

use std::collections::HashMap;
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

fn scalarize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scalarize"))
        .args(args)
        .output()
        .expect("the scalarize binary runs")
}

fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn inspect_writes_losses_logits_and_every_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("w.safetensors");
    let batch = dir.path().join("b.safetensors");
    let out = dir.path().join("o.safetensors");
    let (model, heads) = ("vit-ti:p4:d1:r8", "5,3");

    let init = scalarize(&[
        "init",
        "--model",
        model,
        "--heads",
        heads,
        "--seed",
        "3",
        "--out",
        ck.to_str().unwrap(),
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // A batch of 3 images 3x8x8 with pseudo-random, non-zero pixels.
    let n = 3;
    let images: Vec<f32> = (0..n * 3 * 8 * 8)
        .map(|i| ((i as f32 * 0.7311).sin() * 1.3) + 0.1)
        .collect();
    let (l0, l1): (Vec<i64>, Vec<i64>) = (vec![4, 0, 2], vec![1, 2, 0]);
    let (bi, b0, b1) = (bytes_f32(&images), bytes_i64(&l0), bytes_i64(&l1));
    let mut tensors = HashMap::new();
    tensors.insert(
        "images".to_string(),
        TensorView::new(Dtype::F32, vec![n, 3, 8, 8], &bi).unwrap(),
    );
    tensors.insert(
        "labels.0".to_string(),
        TensorView::new(Dtype::I64, vec![n], &b0).unwrap(),
    );
    tensors.insert(
        "labels.1".to_string(),
        TensorView::new(Dtype::I64, vec![n], &b1).unwrap(),
    );
    safetensors::serialize_to_file(&tensors, None, &batch).unwrap();

    let run = scalarize(&[
        "inspect",
        "--model",
        model,
        "--heads",
        heads,
        "--checkpoint",
        ck.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--weights",
        "0.7,0.3",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (loss0, loss1, total) = (
        read_f32(&st, "loss.0")[0],
        read_f32(&st, "loss.1")[0],
        read_f32(&st, "loss")[0],
    );
    // Freshly initialised heads give losses near log(C).
    assert!((loss0 - 5f32.ln()).abs() < 1.0, "loss.0 = {loss0}");
    assert!((loss1 - 3f32.ln()).abs() < 1.0, "loss.1 = {loss1}");
    assert!((total - (0.7 * loss0 + 0.3 * loss1)).abs() < 1e-5);
    assert_eq!(read_f32(&st, "logits.0").len(), n * 5);
    assert_eq!(read_f32(&st, "logits.1").len(), n * 3);
    for name in [
        "grad.backbone.patch_embed.proj.weight",
        "grad.backbone.blocks.0.attn.qkv.weight",
        "grad.heads.0.weight",
        "grad.heads.1.bias",
    ] {
        let g = read_f32(&st, name);
        assert!(g.iter().all(|v| v.is_finite()), "{name}");
        assert!(g.iter().any(|v| *v != 0.0), "{name} is all zero");
    }
}

#[test]
fn inspect_names_a_bad_model_spec() {
    let out = scalarize(&[
        "inspect",
        "--model",
        "resnet27:w0.25",
        "--heads",
        "10",
        "--checkpoint",
        "w",
        "--batch",
        "b",
        "--out",
        "o",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resnet27"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn inspect_names_a_missing_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let out = scalarize(&[
        "inspect",
        "--model",
        "vit-ti:p4:d1:r8",
        "--heads",
        "10",
        "--checkpoint",
        missing.to_str().unwrap(),
        "--batch",
        "b",
        "--out",
        "o",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.safetensors"), "{err}");
}
