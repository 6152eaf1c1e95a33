//! Softmax, the fused self-attention core, the logit losses and the matrix products on a CUDA
//! device (the emulator without a GPU) against the same ops on the CPU, and a small
//! single-head attention block trained end to end on the device.

mod common;

use std::sync::Arc;

use common::{Rng, close, same_on_gpu};
use scalarize_autograd::{AutogradError, Tensor};
use scalarize_kernels::cuda::Gpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

/// Class targets in 0..classes, with every `ignore_every`-th row set to -100.
fn targets(rng: &mut Rng, rows: usize, classes: usize, ignore_every: usize) -> Vec<i64> {
    (0..rows)
        .map(|r| {
            if ignore_every > 0 && r % ignore_every == ignore_every - 1 {
                -100
            } else {
                rng.below(classes) as i64
            }
        })
        .collect()
}

#[test]
fn softmax_matches_cpu() {
    let Some(g) = gpu("softmax") else {
        return;
    };
    let mut rng = Rng::new(51);
    // [2, 1100]: rows longer than a warp's 1024 take the block-per-row kernels.
    for shape in [
        vec![1],
        vec![1, 1],
        vec![3, 5],
        vec![2, 3, 37],
        vec![2, 1100],
    ] {
        let x = rng.tensor(&shape).scale(3.0).unwrap();
        same_on_gpu(&g, "softmax", &[x], &mut rng, |t| t[0].softmax());
    }
}

#[test]
fn self_attention_matches_cpu() {
    let Some(g) = gpu("self_attention") else {
        return;
    };
    let mut rng = Rng::new(52);
    for (n, t, heads, hd) in [(1, 1, 1, 1), (2, 3, 2, 4), (1, 5, 3, 2), (3, 7, 1, 3)] {
        let x = rng.tensor(&[n, t, 3 * heads * hd]);
        same_on_gpu(&g, "self_attention", &[x], &mut rng, |t| {
            t[0].self_attention(heads)
        });
    }
}

#[test]
fn cross_entropy_matches_cpu_including_ignored_rows() {
    let Some(g) = gpu("cross_entropy") else {
        return;
    };
    let mut rng = Rng::new(53);
    for (rows, classes, ignore_every) in [(1, 1, 0), (1, 4, 0), (7, 5, 3), (9, 33, 2), (2, 1100, 0)]
    {
        let x = rng.tensor(&[rows, classes]).scale(2.0).unwrap();
        let tg = targets(&mut rng, rows, classes, ignore_every);
        same_on_gpu(&g, "cross_entropy", &[x], &mut rng, |t| {
            t[0].cross_entropy(&tg, -100)
        });
    }
    // Every row ignored: loss 0 and a zero gradient, on the device, as on the CPU.
    let x = rng.tensor(&[3, 4]);
    same_on_gpu(&g, "cross_entropy_all_ignored", &[x], &mut rng, |t| {
        t[0].cross_entropy(&[-100, -100, -100], -100)
    });
}

#[test]
fn bce_with_logits_matches_cpu() {
    let Some(g) = gpu("bce_with_logits") else {
        return;
    };
    let mut rng = Rng::new(54);
    for shape in [vec![1], vec![3, 5], vec![2, 3, 7]] {
        let x = rng.tensor(&shape).scale(3.0).unwrap();
        let tg = rng.vec(x.numel(), 0.0, 1.0);
        same_on_gpu(&g, "bce_with_logits", &[x], &mut rng, |t| {
            t[0].bce_with_logits(&tg)
        });
    }
}

#[test]
fn matmul_and_bmm_match_cpu_for_every_transpose() {
    let Some(g) = gpu("matmul") else {
        return;
    };
    let mut rng = Rng::new(55);
    let stored = |m: usize, k: usize, trans: bool| if trans { [k, m] } else { [m, k] };
    for (m, k, n) in [(1, 1, 1), (3, 5, 2), (4, 1, 7), (2, 9, 3)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rng.tensor(&stored(m, k, ta));
            let b = rng.tensor(&stored(k, n, tb));
            same_on_gpu(&g, "matmul_t", &[a.clone(), b.clone()], &mut rng, |t| {
                t[0].matmul_t(&t[1], ta, tb)
            });
            for lead in [vec![1], vec![3], vec![2, 2]] {
                let with = |s: [usize; 2]| {
                    let mut v = lead.clone();
                    v.extend(s);
                    v
                };
                let a = rng.tensor(&with(stored(m, k, ta)));
                let b = rng.tensor(&with(stored(k, n, tb)));
                same_on_gpu(&g, "bmm_t", &[a, b], &mut rng, |t| {
                    t[0].bmm_t(&t[1], ta, tb)
                });
            }
        }
    }
    let (a, b) = (rng.tensor(&[3, 4]), rng.tensor(&[4, 2]));
    same_on_gpu(&g, "matmul", &[a, b], &mut rng, |t| t[0].matmul(&t[1]));
    let (a, b) = (rng.tensor(&[2, 3, 4]), rng.tensor(&[2, 4, 5]));
    same_on_gpu(&g, "bmm", &[a.clone(), b], &mut rng, |t| t[0].bmm(&t[1]));
    // One operand used twice: its gradient is the device sum of both contributions.
    same_on_gpu(&g, "bmm_self", &[a], &mut rng, |t| {
        t[0].bmm_t(&t[0], false, true)
    });
}

#[test]
fn single_head_attention_block_trains_on_the_device() {
    let Some(g) = gpu("attention_block") else {
        return;
    };
    let mut rng = Rng::new(56);
    let (n, t, d, classes) = (2, 5, 4, 3);
    let x = rng.tensor(&[n * t, d]);
    let ws: Vec<Tensor> = (0..4).map(|_| rng.tensor(&[d, d])).collect();
    let wo = rng.tensor(&[classes, d]);
    let bo = rng.tensor(&[classes]);
    let tg = targets(&mut rng, n * t, classes, 4);
    let mut inputs = vec![x.clone()];
    inputs.extend(ws[..3].iter().cloned());
    inputs.extend([wo.clone(), bo.clone()]);
    // q, k, v from one input, softmax(q·kᵀ/√d)·v by bmm / softmax / bmm, a linear head and CE:
    // every gradient crosses all four op files on the device.
    same_on_gpu(&g, "attention_block", &inputs, &mut rng, |p| {
        let proj = |w: &Tensor| p[0].linear(w, None)?.reshape(&[n, t, d]);
        let (q, k, v) = (proj(&p[1])?, proj(&p[2])?, proj(&p[3])?);
        let att = q
            .bmm_t(&k, false, true)?
            .scale(1.0 / (d as f32).sqrt())?
            .softmax()?;
        let o = att.bmm(&v)?.reshape(&[n * t, d])?;
        o.linear(&p[4], Some(&p[5]))?.cross_entropy(&tg, -100)
    });
    // The same block through the fused core (one qkv projection, two heads) under BCE.
    let wqkv = rng.tensor(&[3 * d, d]);
    let bce_t = rng.vec(n * t * classes, 0.0, 1.0);
    same_on_gpu(
        &g,
        "fused_attention_block",
        &[x, wqkv, wo, bo],
        &mut rng,
        |p| {
            let qkv = p[0].linear(&p[1], None)?.reshape(&[n, t, 3 * d])?;
            let o = qkv.self_attention(2)?.reshape(&[n * t, d])?;
            o.linear(&p[2], Some(&p[3]))?.bce_with_logits(&bce_t)
        },
    );
}

#[test]
fn device_loss_seeds_its_own_backward_and_errors_match_the_cpu() {
    let Some(g) = gpu("attn_errors") else {
        return;
    };
    let mut rng = Rng::new(57);
    // backward() of the device loss: the seed and the gradient stay on the device.
    let x = rng.tensor(&[4, 3]).to_gpu(&g).unwrap().requires_grad();
    let tg = [0, 2, -100, 1];
    let loss = x.cross_entropy(&tg, -100).unwrap();
    assert_eq!(loss.device(), x.device());
    let gx = loss.backward().unwrap().get(&x).unwrap().clone();
    assert_eq!(gx.device(), x.device());
    let xc = Tensor::new(x.to_host().unwrap(), &[4, 3])
        .unwrap()
        .requires_grad();
    let want = xc.cross_entropy(&tg, -100).unwrap().backward().unwrap();
    close(
        &gx.to_host().unwrap(),
        &want.get(&xc).unwrap().to_vec(),
        1e-6,
        "d cross_entropy",
    );
    // A target outside [0, classes) is refused on the device too, naming the row.
    let e = x.cross_entropy(&[0, 3, 1, 1], -100).unwrap_err();
    assert!(e.to_string().contains("target 3 of row 1"), "{e}");
    // Shape errors are the CPU's, and devices do not mix.
    let a = rng.tensor(&[3, 4]);
    let d = rng.tensor(&[4, 2]).to_gpu(&g).unwrap();
    let e = d.matmul(&d).unwrap_err();
    assert!(e.to_string().contains("inner dimensions 2 and 4"), "{e}");
    match a.matmul(&d) {
        Err(AutogradError::Device(msg)) => assert!(msg.contains("different devices"), "{msg}"),
        other => panic!("expected a device error, got {other:?}"),
    }
}
