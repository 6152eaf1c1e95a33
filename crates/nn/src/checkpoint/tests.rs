use super::*;
use crate::init::init_layout;
use crate::layout::InitOptions;
use crate::optim::{AdamWConfig, SgdConfig};
use crate::spec::{HeadsSpec, ModelSpec};

fn small() -> (ModelSpec, HeadsSpec, Layout) {
    let spec = ModelSpec::parse("vit-ti:p8:d1:r16").unwrap();
    let heads = HeadsSpec::parse("10,a3").unwrap();
    let layout = Layout::new(&spec, &heads, InitOptions::default());
    (spec, heads, layout)
}

fn save(
    path: &Path,
    layout: &Layout,
    values: &[Vec<f32>],
    opt: Option<&Optimizer>,
    step: u64,
) -> Result<()> {
    let refs: Vec<&[f32]> = values.iter().map(|v| v.as_slice()).collect();
    save_checkpoint(
        path,
        "vit-ti:p8:d1:r16",
        "10,a3",
        layout,
        &refs,
        opt,
        step,
        &BTreeMap::from([("pbt.member".to_string(), "3".to_string())]),
    )
}

#[test]
fn round_trip_is_bit_exact_with_optimizer_state() {
    let (_, _, layout) = small();
    let mut values = init_layout(&layout, 11);
    // Awkward bit patterns survive: -0, subnormal, NaN payload, infinities.
    values[0][..5].copy_from_slice(&[
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    for config in [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ] {
        let mut opt = Optimizer::new(config, true).unwrap();
        for (p, v) in layout.params.iter().zip(values.iter_mut()) {
            if p.kind.trainable() && p.name.contains("qkv") {
                let g: Vec<f32> = (0..v.len()).map(|i| (i as f32).cos()).collect();
                opt.update(&p.name, p.kind, v, &g, 0.01).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        save(&path, &layout, &values, Some(&opt), 17).unwrap();
        // Overwriting works and leaves no temporary file behind.
        save(&path, &layout, &values, Some(&opt), 17).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ck.safetensors")]);

        let ck = load_checkpoint(&path, &layout).unwrap();
        assert_eq!(ck.values.len(), values.len());
        for (a, b) in ck.values.iter().zip(&values) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        assert_eq!(ck.meta.step, 17);
        assert_eq!(ck.meta.model, "vit-ti:p8:d1:r16");
        assert_eq!(ck.meta.heads, "10,a3");
        assert_eq!(
            ck.meta.extra.get("pbt.member").map(String::as_str),
            Some("3")
        );
        assert_eq!(ck.optimizer().unwrap().unwrap(), opt);
        assert_eq!(read_checkpoint_meta(&path).unwrap(), ck.meta);
        // The state tensors carry their parameter's shape.
        let file = read_safetensors(&path).unwrap();
        let key = match config {
            OptimizerConfig::Sgd(_) => "optim.momentum.backbone.blocks.0.attn.qkv.weight",
            OptimizerConfig::AdamW(_) => "optim.exp_avg_sq.backbone.blocks.0.attn.qkv.weight",
        };
        assert_eq!(file.tensors[key].shape, vec![576, 192]);
        assert_eq!(file.metadata["format"], FORMAT);
    }
}

#[test]
fn mismatches_are_all_listed_with_the_file_name() {
    let (_, _, layout) = small();
    let values = init_layout(&layout, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    save(&path, &layout, &values, None, 0).unwrap();
    // Another depth and other heads: missing, unexpected and wrongly shaped tensors at once.
    let spec = ModelSpec::parse("vit-ti:p8:d2:r16").unwrap();
    let other = Layout::new(
        &spec,
        &HeadsSpec::parse("5").unwrap(),
        InitOptions::default(),
    );
    let e = load_checkpoint(&path, &other).unwrap_err().to_string();
    assert!(e.contains("ck.safetensors"), "{e}");
    assert!(
        e.contains("missing tensor(s)") && e.contains("`backbone.blocks.1.norm1.weight`"),
        "{e}"
    );
    assert!(
        e.contains("unexpected tensor(s)")
            && e.contains("`heads.1.weight`")
            && e.contains("`heads.1.bias`"),
        "{e}"
    );
    assert!(
        e.contains("`heads.0.weight` has shape [10, 192], expected [5, 192]"),
        "{e}"
    );
    assert!(e.contains("written for model `vit-ti:p8:d1:r16`"), "{e}");

    // Wrong dtype and optimizer state for an unknown parameter.
    let mut tensors: Vec<(String, Vec<usize>, TensorRef<'_>)> = layout
        .params
        .iter()
        .zip(&values)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), TensorRef::F32(v)))
        .collect();
    let labels = vec![1i64; 10];
    tensors[0] = (
        "backbone.cls_token".into(),
        vec![1, 1, 10],
        TensorRef::I64(&labels),
    );
    let junk = [0.0f32; 3];
    tensors.push(("optim.momentum.nope".into(), vec![3], TensorRef::F32(&junk)));
    write_safetensors_atomic(&path, &tensors, &BTreeMap::new()).unwrap();
    let e = load_checkpoint(&path, &layout).unwrap_err().to_string();
    assert!(
        e.contains("`backbone.cls_token` has shape [1, 1, 10]"),
        "{e}"
    );
    assert!(e.contains("`optim.momentum.nope`"), "{e}");
    let l192 = vec![0i64; 192];
    tensors[0] = (
        "backbone.cls_token".into(),
        vec![1, 1, 192],
        TensorRef::I64(&l192),
    );
    write_safetensors_atomic(&path, &tensors, &BTreeMap::new()).unwrap();
    let e = load_checkpoint(&path, &layout).unwrap_err().to_string();
    assert!(
        e.contains("`backbone.cls_token` is I64, expected F32"),
        "{e}"
    );
}

#[test]
fn plain_state_dict_files_load_and_garbage_is_rejected() {
    let (_, _, layout) = small();
    let values = init_layout(&layout, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    let tensors: Vec<_> = layout
        .params
        .iter()
        .zip(&values)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), TensorRef::F32(v)))
        .collect();
    write_safetensors_atomic(&path, &tensors, &BTreeMap::new()).unwrap();
    let ck = load_checkpoint(&path, &layout).unwrap();
    assert_eq!(ck.meta.step, 0);
    assert!(ck.optimizer().unwrap().is_none());
    assert_eq!(ck.values, values);

    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}").unwrap();
    let e = load_checkpoint(&bad, &layout).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    let e = load_checkpoint(&dir.path().join("absent.safetensors"), &layout)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    // Reserved metadata keys and wrong buffer counts are refused before anything is written.
    let refs: Vec<&[f32]> = values.iter().map(|v| v.as_slice()).collect();
    let reserved = BTreeMap::from([("step".to_string(), "1".to_string())]);
    let out = dir.path().join("x.safetensors");
    assert!(save_checkpoint(&out, "m", "h", &layout, &refs, None, 0, &reserved).is_err());
    assert!(
        save_checkpoint(
            &out,
            "m",
            "h",
            &layout,
            &refs[1..],
            None,
            0,
            &BTreeMap::new()
        )
        .is_err()
    );
    assert!(!out.exists());
}
