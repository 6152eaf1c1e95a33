//! Known answers from PyTorch 2.15 (crates/nn/python/scalarize_torch.py, training mode), for
//! models initialised here with seed 1234 and saved, then loaded into PyTorch by name. They pin
//! the forward pass, the losses and the gradients in CI, where torch is not installed (the full
//! tensor-by-tensor comparison is `tests/interop.rs`). Images: `x[i] = (37 i mod 101) / 50 - 1`.

// The constants are PyTorch's values printed as Python floats, copied verbatim.
#![allow(clippy::excessive_precision)]

use scalarize_autograd::Tensor;
use scalarize_nn::layout::InitOptions;
use scalarize_nn::loss::{Target, head_loss, weighted_sum};
use scalarize_nn::{Model, Routing};

struct Golden {
    spec: &'static str,
    /// Image side.
    res: usize,
    logits0: [f32; 9],
    logits1: [f32; 6],
    losses: [f32; 2],
    /// (parameter, sum of gradient, sum of |gradient|)
    grads: [(&'static str, f64, f64); 4],
}

const GOLDEN: [Golden; 2] = [
    Golden {
        spec: "resnet26:w0.0625:r16",
        res: 16,
        logits0: [
            -0.34465640783309937,
            -0.40023913979530334,
            0.06875104457139969,
            -1.011489748954773,
            -0.40215378999710083,
            -0.038695141673088074,
            -0.8983893990516663,
            -1.1544736623764038,
            -0.7712324857711792,
        ],
        logits1: [
            -0.01928826794028282,
            0.5533942580223083,
            -1.0245167016983032,
            0.3439997136592865,
            -0.4356396198272705,
            0.4364781975746155,
        ],
        losses: [1.284436583518982, 0.6643530130386353],
        grads: [
            (
                "backbone.conv1.weight",
                1.2291784286499023,
                62.533721923828125,
            ),
            (
                "backbone.layer4.1.conv3.weight",
                0.8021870851516724,
                28.31415557861328,
            ),
            ("backbone.layer2.0.bn2.weight", f64::NAN, 1.1371235847473145),
            ("heads.0.weight", f64::NAN, 34.397430419921875),
        ],
    },
    Golden {
        spec: "vit-ti:p4:d1:r8",
        res: 8,
        logits0: [
            0.09022974967956543,
            0.11267213523387909,
            -0.40580809116363525,
            0.07367914170026779,
            -0.13016274571418762,
            -0.5187960863113403,
            0.20176856219768524,
            -0.05475137010216713,
            -0.25791481137275696,
        ],
        logits1: [
            -0.23424243927001953,
            0.07703866064548492,
            -0.08648177981376648,
            0.0340263657271862,
            -0.2439587563276291,
            -0.0643826574087143,
        ],
        losses: [1.1533609628677368, 0.7375072836875916],
        grads: [
            (
                "backbone.patch_embed.proj.weight",
                f64::NAN,
                41.817710876464844,
            ),
            (
                "backbone.blocks.0.attn.qkv.weight",
                f64::NAN,
                380.3269348144531,
            ),
            ("backbone.pos_embed", f64::NAN, 12.479551315307617),
            ("heads.0.weight", f64::NAN, 47.407920837402344),
        ],
    },
];

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-2)
}

#[test]
fn forward_losses_and_gradients_match_pytorch() {
    for g in &GOLDEN {
        let mut m = Model::from_specs(g.spec, "3,a2", InitOptions::default(), 1234).unwrap();
        let n = 3;
        let r = g.res;
        let x: Vec<f32> = (0..n * 3 * r * r)
            .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
            .collect();
        let x = Tensor::new(x, &[n, 3, r, r]).unwrap();
        let out = m.forward(&x, &Routing::AllHeads).unwrap();
        let l0 = head_loss(
            &m.heads().0[0],
            &out.outputs[0].output,
            &Target::Classes(vec![2, 0, 1]),
        )
        .unwrap();
        let l1 = head_loss(
            &m.heads().0[1],
            &out.outputs[1].output,
            &Target::Attributes(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        )
        .unwrap();
        for (ours, theirs) in out.outputs[0].output.to_vec().iter().zip(&g.logits0) {
            assert!(
                (ours - theirs).abs() < 2e-4,
                "{}: logits0 {ours} vs {theirs}",
                g.spec
            );
        }
        for (ours, theirs) in out.outputs[1].output.to_vec().iter().zip(&g.logits1) {
            assert!(
                (ours - theirs).abs() < 2e-4,
                "{}: logits1 {ours} vs {theirs}",
                g.spec
            );
        }
        for (ours, theirs) in [l0.item().unwrap(), l1.item().unwrap()]
            .iter()
            .zip(&g.losses)
        {
            assert!(
                (ours - theirs).abs() < 2e-5,
                "{}: loss {ours} vs {theirs}",
                g.spec
            );
        }
        let loss = weighted_sum(&[l0, l1], &[0.7, 0.3]).unwrap();
        let grads = loss.backward().unwrap();
        for (name, sum, abs_sum) in g.grads {
            let v = m.store().grad(&grads, name).unwrap().unwrap().to_vec();
            let s: f64 = v.iter().map(|&x| x as f64).sum();
            let a: f64 = v.iter().map(|&x| (x as f64).abs()).sum();
            assert!(
                close(a, abs_sum, 1e-3),
                "{}: {name} |grad| sum {a} vs {abs_sum}",
                g.spec
            );
            if !sum.is_nan() {
                assert!(
                    close(s, sum, 1e-3),
                    "{}: {name} grad sum {s} vs {sum}",
                    g.spec
                );
            }
        }
    }
}
