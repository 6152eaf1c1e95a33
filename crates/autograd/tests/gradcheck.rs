//! Every op's backward through the tape against central finite differences of
//! L = <cotangent, op(inputs)> (random non-zero cotangents, loss summed in f64), on random
//! shapes including batch 1 and odd sizes.

mod common;

use common::{Rng, check_grads};
use scalarize_autograd::{BatchNormMode, BnEpilogue, Tensor};

const H: f32 = 1e-2;
const TOL: f64 = 1e-2;

#[test]
fn elementwise_ops() {
    let mut rng = Rng::new(1);
    for shape in [vec![1, 3], vec![2, 3, 5], vec![7]] {
        let (a, b) = (rng.tensor(&shape), rng.tensor(&shape));
        let ins = [a, b];
        check_grads("add", &ins, |t| t[0].add(&t[1]), H, TOL, &mut rng);
        check_grads("sub", &ins, |t| t[0].sub(&t[1]), H, TOL, &mut rng);
        check_grads("mul", &ins, |t| t[0].mul(&t[1]), H, TOL, &mut rng);
        check_grads("mul_self", &ins[..1], |t| t[0].mul(&t[0]), H, TOL, &mut rng);
        check_grads("scale", &ins[..1], |t| t[0].scale(-1.7), H, TOL, &mut rng);
    }
}

#[test]
fn bias_ops() {
    let mut rng = Rng::new(2);
    for (x, b) in [
        (vec![1, 5], vec![5]),
        (vec![3, 2, 5], vec![5]),
        (vec![2, 3, 4], vec![1, 3, 4]),
    ] {
        let ins = [rng.tensor(&x), rng.tensor(&b)];
        check_grads("add_bias", &ins, |t| t[0].add_bias(&t[1]), H, TOL, &mut rng);
    }
    for x in [vec![1, 3, 2, 2], vec![2, 5, 3, 1], vec![3, 4]] {
        let ins = [rng.tensor(&x), rng.tensor(&[x[1]])];
        check_grads(
            "add_channel_bias",
            &ins,
            |t| t[0].add_channel_bias(&t[1]),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn reductions() {
    let mut rng = Rng::new(3);
    for shape in [vec![1], vec![2, 3, 5], vec![1, 4, 1]] {
        let ins = [rng.tensor(&shape)];
        check_grads("sum", &ins, |t| t[0].sum(), H, TOL, &mut rng);
        check_grads("mean", &ins, |t| t[0].mean(), H, TOL, &mut rng);
        for axis in 0..shape.len() {
            check_grads("sum_axis", &ins, |t| t[0].sum_axis(axis), H, TOL, &mut rng);
            check_grads(
                "mean_axis",
                &ins,
                |t| t[0].mean_axis(axis),
                H,
                TOL,
                &mut rng,
            );
        }
    }
}

#[test]
fn shape_ops() {
    let mut rng = Rng::new(4);
    let ins = [rng.tensor(&[2, 3, 5])];
    // mul after reshape makes the check see both the view and a real op downstream.
    check_grads(
        "reshape",
        &ins,
        |t| t[0].reshape(&[5, 6])?.mul(&t[0].reshape(&[5, 6])?),
        H,
        TOL,
        &mut rng,
    );
    check_grads(
        "flatten_from",
        &ins,
        |t| t[0].flatten_from(1),
        H,
        TOL,
        &mut rng,
    );
    for perm in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]] {
        check_grads("permute", &ins, |t| t[0].permute(&perm), H, TOL, &mut rng);
    }
    let ins4 = [rng.tensor(&[1, 3, 2, 4])];
    check_grads(
        "permute4",
        &ins4,
        |t| t[0].permute(&[0, 2, 1, 3]),
        H,
        TOL,
        &mut rng,
    );
    check_grads(
        "transpose",
        &ins4,
        |t| t[0].transpose(1, 3),
        H,
        TOL,
        &mut rng,
    );
}

#[test]
fn concat_narrow_split() {
    let mut rng = Rng::new(5);
    for axis in 0..3 {
        let mut s1 = vec![2, 3, 4];
        let mut s2 = s1.clone();
        s1[axis] = 1;
        s2[axis] = 3;
        let ins = [rng.tensor(&s1), rng.tensor(&s2), rng.tensor(&s1)];
        check_grads(
            "concat",
            &ins,
            |t| Tensor::concat(&[&t[0], &t[1], &t[2]], axis),
            H,
            TOL,
            &mut rng,
        );
    }
    let ins = [rng.tensor(&[5, 3, 4])];
    check_grads("narrow0", &ins, |t| t[0].narrow(0, 1, 3), H, TOL, &mut rng);
    check_grads("narrow1", &ins, |t| t[0].narrow(1, 0, 1), H, TOL, &mut rng);
    check_grads("narrow2", &ins, |t| t[0].narrow(2, 2, 2), H, TOL, &mut rng);
    check_grads(
        "select_rows",
        &ins,
        |t| t[0].select_rows(&[4, 0, 4, 2]),
        H,
        TOL,
        &mut rng,
    );
    // Split pieces recombined with different weights so every piece's gradient matters.
    check_grads(
        "split",
        &ins,
        |t| {
            let p = t[0].split(0, &[2, 1, 2])?;
            Tensor::concat(&[&p[2], &p[0].scale(2.0)?, &p[1]], 0)
        },
        H,
        TOL,
        &mut rng,
    );
}

#[test]
fn matmul_all_transposes() {
    let mut rng = Rng::new(6);
    for (m, k, n) in [(1, 3, 2), (4, 5, 3), (3, 1, 7)] {
        for ta in [false, true] {
            for tb in [false, true] {
                let a = if ta { [k, m] } else { [m, k] };
                let b = if tb { [n, k] } else { [k, n] };
                let ins = [rng.tensor(&a), rng.tensor(&b)];
                check_grads(
                    "matmul_t",
                    &ins,
                    |t| t[0].matmul_t(&t[1], ta, tb),
                    H,
                    TOL,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn batched_matmul_all_transposes() {
    let mut rng = Rng::new(7);
    for (lead, m, k, n) in [(vec![1], 2, 3, 4), (vec![2, 3], 3, 2, 1)] {
        for ta in [false, true] {
            for tb in [false, true] {
                let mut a = lead.clone();
                a.extend(if ta { [k, m] } else { [m, k] });
                let mut b = lead.clone();
                b.extend(if tb { [n, k] } else { [k, n] });
                let ins = [rng.tensor(&a), rng.tensor(&b)];
                check_grads(
                    "bmm_t",
                    &ins,
                    |t| t[0].bmm_t(&t[1], ta, tb),
                    H,
                    TOL,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn linear_layer() {
    let mut rng = Rng::new(8);
    for x in [vec![1, 4], vec![3, 4], vec![2, 3, 4]] {
        let ins = [rng.tensor(&x), rng.tensor(&[5, 4]), rng.tensor(&[5])];
        check_grads(
            "linear+b",
            &ins,
            |t| t[0].linear(&t[1], Some(&t[2])),
            H,
            TOL,
            &mut rng,
        );
        check_grads(
            "linear",
            &ins[..2],
            |t| t[0].linear(&t[1], None),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn conv2d_shapes() {
    let mut rng = Rng::new(9);
    // (n, c_in, h, w, c_out, k, stride, pad)
    for (n, ci, h, w, co, k, s, p) in [
        (1, 2, 5, 5, 3, 3, 1, 1),
        (2, 3, 5, 4, 2, 3, 2, 1),
        (2, 2, 3, 3, 4, 1, 1, 0),
        (1, 1, 6, 5, 2, 2, 2, 0),
    ] {
        let ins = [
            rng.tensor(&[n, ci, h, w]),
            rng.tensor(&[co, ci, k, k]),
            rng.tensor(&[co]),
        ];
        check_grads(
            "conv2d+b",
            &ins,
            |t| t[0].conv2d(&t[1], Some(&t[2]), s, p),
            H,
            TOL,
            &mut rng,
        );
        check_grads(
            "conv2d",
            &ins[..2],
            |t| t[0].conv2d(&t[1], None, s, p),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn batch_norm_train_and_eval() {
    let mut rng = Rng::new(10);
    for x in [vec![2, 3, 2, 3], vec![4, 2], vec![1, 2, 3, 1]] {
        let c = x[1];
        let gamma = Tensor::new(rng.vec(c, 0.5, 1.5), &[c]).unwrap();
        let ins = [rng.tensor(&x), gamma, rng.tensor(&[c])];
        check_grads(
            "batch_norm_train",
            &ins,
            |t| {
                t[0].batch_norm(&t[1], &t[2], BatchNormMode::TrainNoRunning, 1e-5)?
                    .mul(&t[0])
            },
            5e-3,
            2e-2,
            &mut rng,
        );
        let mut rm = vec![0.0; c];
        let mut rv = vec![1.0; c];
        check_grads(
            "batch_norm_train_running",
            &ins,
            |t| {
                t[0].batch_norm(
                    &t[1],
                    &t[2],
                    BatchNormMode::Train {
                        running_mean: &mut rm.clone(),
                        running_var: &mut rv.clone(),
                        momentum: 0.1,
                    },
                    1e-5,
                )
            },
            5e-3,
            2e-2,
            &mut rng,
        );
        rm = rng.vec(c, -0.5, 0.5);
        rv = rng.vec(c, 0.5, 2.0);
        check_grads(
            "batch_norm_eval",
            &ins,
            |t| {
                t[0].batch_norm(
                    &t[1],
                    &t[2],
                    BatchNormMode::Eval {
                        running_mean: &rm,
                        running_var: &rv,
                    },
                    1e-5,
                )
            },
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn batch_norm_fused_epilogues() {
    let mut rng = Rng::new(12);
    for x in [vec![2, 3, 2, 3], vec![3, 2, 5], vec![1, 2, 3, 1]] {
        let c = x[1];
        for train in [true, false] {
            let (rm, rv) = (rng.vec(c, -0.5, 0.5), rng.vec(c, 0.5, 2.0));
            let mode = || {
                if train {
                    BatchNormMode::TrainNoRunning
                } else {
                    BatchNormMode::Eval {
                        running_mean: &rm,
                        running_var: &rv,
                    }
                }
            };
            // Inputs whose ReLU inputs stay 0.1 away from the kink, where finite differences
            // (h = 5e-3 moves a normalised value by ~0.02) are valid.
            let ins = (0..1000)
                .map(|_| {
                    let gamma = Tensor::new(rng.vec(c, 0.5, 1.5), &[c]).unwrap();
                    [rng.tensor(&x), gamma, rng.tensor(&[c]), rng.tensor(&x)]
                })
                .find(|t| {
                    let _g = scalarize_autograd::no_grad();
                    let z = t[0].batch_norm(&t[1], &t[2], mode(), 1e-5).unwrap();
                    let zr = z.add(&t[3]).unwrap();
                    z.to_vec().iter().chain(&zr.to_vec()).all(|v| v.abs() > 0.1)
                })
                .expect("inputs away from the ReLU kink");
            check_grads(
                "batch_norm_relu",
                &ins[..3],
                |t| t[0].batch_norm_with(&t[1], &t[2], mode(), 1e-5, BnEpilogue::Relu),
                5e-3,
                2e-2,
                &mut rng,
            );
            check_grads(
                "batch_norm_add_relu",
                &ins,
                |t| t[0].batch_norm_with(&t[1], &t[2], mode(), 1e-5, BnEpilogue::AddRelu(&t[3])),
                5e-3,
                2e-2,
                &mut rng,
            );
            // On any input, the fused ops equal the separate ops (values and gradients).
            let ins = [
                rng.tensor(&x).requires_grad(),
                rng.tensor(&[c]).requires_grad(),
                rng.tensor(&[c]).requires_grad(),
                rng.tensor(&x).requires_grad(),
            ];
            let cot = rng.cotangent(&x);
            let fused = ins[0]
                .batch_norm_with(&ins[1], &ins[2], mode(), 1e-5, BnEpilogue::AddRelu(&ins[3]))
                .unwrap();
            let plain = ins[0]
                .batch_norm(&ins[1], &ins[2], mode(), 1e-5)
                .and_then(|z| z.add(&ins[3]))
                .and_then(|z| z.relu())
                .unwrap();
            common::assert_close("fused value", &fused.to_vec(), &plain.to_vec(), 1e-6);
            let (gf, gp) = (
                fused.backward_with(&cot).unwrap(),
                plain.backward_with(&cot).unwrap(),
            );
            for (i, t) in ins.iter().enumerate() {
                let (a, b) = (gf.get(t).unwrap().to_vec(), gp.get(t).unwrap().to_vec());
                common::assert_close(&format!("fused grad {i}"), &a, &b, 1e-5);
            }
        }
    }
}

#[test]
fn layer_norm_rows() {
    let mut rng = Rng::new(11);
    for x in [vec![1, 5], vec![2, 3, 4], vec![3, 7]] {
        let d = *x.last().unwrap();
        let gamma = Tensor::new(rng.vec(d, 0.5, 1.5), &[d]).unwrap();
        let ins = [rng.tensor(&x), gamma, rng.tensor(&[d])];
        check_grads(
            "layer_norm",
            &ins,
            |t| t[0].layer_norm(&t[1], &t[2], 1e-6),
            5e-3,
            2e-2,
            &mut rng,
        );
    }
}

#[test]
fn activations_and_softmax() {
    let mut rng = Rng::new(12);
    for shape in [vec![1, 5], vec![2, 3, 7]] {
        let n = shape.iter().product();
        let x = Tensor::new(rng.away_from_zero(n), &shape).unwrap();
        check_grads(
            "relu",
            std::slice::from_ref(&x),
            |t| t[0].relu(),
            H,
            TOL,
            &mut rng,
        );
        let ins = [rng.tensor(&shape).scale(2.0).unwrap()];
        check_grads("gelu", &ins, |t| t[0].gelu(), H, TOL, &mut rng);
        check_grads("softmax", &ins, |t| t[0].softmax(), H, TOL, &mut rng);
    }
}

#[test]
fn pooling() {
    let mut rng = Rng::new(13);
    for (shape, k, s, p) in [
        (vec![1, 2, 4, 4], 2, 2, 0),
        (vec![2, 3, 5, 5], 3, 2, 1),
        (vec![1, 1, 5, 3], 3, 1, 1),
    ] {
        let n: usize = shape.iter().product();
        // Distinct values spaced well beyond the step, so the argmax never flips.
        let mut vals: Vec<f32> = (0..n).map(|i| i as f32 * 0.05).collect();
        for i in (1..n).rev() {
            vals.swap(i, rng.below(i + 1));
        }
        let x = Tensor::new(vals, &shape).unwrap();
        check_grads(
            "max_pool2d",
            std::slice::from_ref(&x),
            |t| t[0].max_pool2d(k, s, p),
            H,
            TOL,
            &mut rng,
        );
        let ins = [rng.tensor(&shape)];
        check_grads(
            "avg_pool2d",
            &ins,
            |t| t[0].avg_pool2d(k, s, p),
            H,
            TOL,
            &mut rng,
        );
        check_grads(
            "global_avg_pool",
            &ins,
            |t| t[0].global_avg_pool(),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn losses() {
    let mut rng = Rng::new(14);
    for (rows, classes) in [(1, 3), (5, 4), (6, 2)] {
        let ins = [rng.tensor(&[rows, classes]).scale(2.0).unwrap()];
        let targets: Vec<i64> = (0..rows).map(|_| rng.below(classes) as i64).collect();
        check_grads(
            "cross_entropy",
            &ins,
            |t| t[0].cross_entropy(&targets, -100),
            H,
            TOL,
            &mut rng,
        );
        if rows > 1 {
            let mut ignored = targets.clone();
            ignored[0] = -100;
            check_grads(
                "cross_entropy_ignore",
                &ins,
                |t| t[0].cross_entropy(&ignored, -100),
                H,
                TOL,
                &mut rng,
            );
        }
        let probs = rng.vec(rows * classes, 0.0, 1.0);
        check_grads(
            "bce_with_logits",
            &ins,
            |t| t[0].bce_with_logits(&probs),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn upsampling() {
    let mut rng = Rng::new(15);
    for (shape, oh, ow) in [
        (vec![1, 2, 3, 3], 6, 6),
        (vec![2, 1, 2, 3], 5, 7),
        (vec![1, 1, 4, 4], 2, 3),
    ] {
        let ins = [rng.tensor(&shape)];
        check_grads(
            "upsample_bilinear",
            &ins,
            |t| t[0].upsample_bilinear(oh, ow),
            H,
            TOL,
            &mut rng,
        );
        check_grads(
            "upsample_nearest",
            &ins,
            |t| t[0].upsample_nearest(oh, ow),
            H,
            TOL,
            &mut rng,
        );
    }
}

#[test]
fn composite_attention_block() {
    // q·kᵀ/√d → softmax → ·v → merge heads → linear: the ViT attention path end to end.
    let mut rng = Rng::new(16);
    let (b, t, heads, d) = (2, 3, 2, 2);
    let ins = [
        rng.tensor(&[b, t, heads * d]),
        rng.tensor(&[3 * heads * d, heads * d]),
    ];
    check_grads(
        "attention",
        &ins,
        |x| {
            let qkv = x[0]
                .linear(&x[1], None)?
                .reshape(&[b, t, 3, heads, d])?
                .permute(&[2, 0, 3, 1, 4])?;
            let q = qkv.narrow(0, 0, 1)?.reshape(&[b, heads, t, d])?;
            let k = qkv.narrow(0, 1, 1)?.reshape(&[b, heads, t, d])?;
            let v = qkv.narrow(0, 2, 1)?.reshape(&[b, heads, t, d])?;
            let att = q
                .bmm_t(&k, false, true)?
                .scale(1.0 / (d as f32).sqrt())?
                .softmax()?;
            att.bmm(&v)?
                .transpose(1, 2)?
                .reshape(&[b, t, heads * d])?
                .narrow(1, 0, 1)
        },
        H,
        TOL,
        &mut rng,
    );
}

#[test]
fn fused_self_attention() {
    // The fused core against finite differences, and its values against the composed chain.
    let mut rng = Rng::new(18);
    for (b, t, heads, d) in [(2, 3, 2, 2), (1, 5, 3, 4), (3, 1, 1, 3)] {
        let ins = [rng.tensor(&[b, t, 3 * heads * d])];
        check_grads(
            "self_attention",
            &ins,
            |x| x[0].self_attention(heads),
            H,
            TOL,
            &mut rng,
        );
        let fused = ins[0].self_attention(heads).unwrap().to_vec();
        let qkv = ins[0]
            .reshape(&[b, t, 3, heads, d])
            .unwrap()
            .permute(&[2, 0, 3, 1, 4])
            .unwrap();
        let part = |i| {
            qkv.narrow(0, i, 1)
                .unwrap()
                .reshape(&[b, heads, t, d])
                .unwrap()
        };
        let composed = part(0)
            .bmm_t(&part(1), false, true)
            .unwrap()
            .scale(1.0 / (d as f32).sqrt())
            .unwrap()
            .softmax()
            .unwrap()
            .bmm(&part(2))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape(&[b, t, heads * d])
            .unwrap()
            .to_vec();
        for (u, v) in fused.iter().zip(&composed) {
            assert!((u - v).abs() < 1e-5, "fused {u} vs composed {v}");
        }
    }
    assert!(rng.tensor(&[2, 3, 10]).self_attention(3).is_err());
}

#[test]
fn fused_weighted_losses() {
    use scalarize_autograd::TaskLayout;
    let mut rng = Rng::new(17);
    let layout = TaskLayout::from_sizes(&[3, 1, 4]).unwrap();
    for n in [1, 5] {
        let ins = [rng.tensor(&[n, 8]).scale(2.0).unwrap()];
        let targets: Vec<i64> = (0..n)
            .flat_map(|_| [rng.below(3) as i64, 0, rng.below(4) as i64])
            .collect();
        let mut mask = vec![1u8; n * 3];
        mask[n * 3 - 1] = 0;
        let weights = [0.5, 0.2, 0.3];
        check_grads(
            "weighted_ce_loss",
            &ins,
            |t| {
                Ok(t[0]
                    .weighted_ce_loss(&layout, &targets, Some(&mask), &weights, -100)?
                    .0)
            },
            H,
            TOL,
            &mut rng,
        );
        let probs = rng.vec(n * 8, 0.0, 1.0);
        check_grads(
            "weighted_bce_loss",
            &ins,
            |t| Ok(t[0].weighted_bce_loss(&layout, &probs, None, &weights)?.0),
            H,
            TOL,
            &mut rng,
        );
        // The fused total equals Σ p_t · (per-task cross_entropy) built from separate ops.
        let (total, out) = ins[0]
            .weighted_ce_loss(&layout, &targets, None, &weights, -100)
            .unwrap();
        let mut expected = 0.0;
        for (t, &(start, len)) in [(0, 3), (3, 1), (4, 4)].iter().enumerate() {
            let tt: Vec<i64> = (0..n).map(|i| targets[i * 3 + t]).collect();
            let l = ins[0]
                .narrow(1, start, len)
                .unwrap()
                .cross_entropy(&tt, -100)
                .unwrap()
                .item()
                .unwrap();
            assert!((out.task_loss.to_vec()[t] - l).abs() < 1e-5);
            expected += weights[t] * l;
        }
        assert!((total.item().unwrap() - expected).abs() < 1e-5);
    }
}
