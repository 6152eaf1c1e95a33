//! Convolution, pooling and upsampling on a CUDA device (the emulator without a GPU) against
//! the same ops on the CPU: values and every input gradient under a random cotangent.

mod common;

use std::sync::Arc;

use common::{Rng, close, same_on_gpu};
use scalarize_autograd::{AutogradError, Device, Tensor, no_grad};
use scalarize_kernels::cuda::Gpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

/// (x shape, c_out, k, stride, pad): batch 1, odd sizes, strided, padded and pointwise convs.
const CONVS: [([usize; 4], usize, usize, usize, usize); 5] = [
    ([1, 1, 5, 5], 2, 3, 1, 0),
    ([2, 3, 7, 5], 4, 3, 2, 1),
    ([1, 2, 6, 9], 3, 2, 1, 1),
    ([3, 4, 3, 5], 5, 1, 1, 0),
    ([2, 2, 5, 4], 1, 3, 3, 2),
];

#[test]
fn conv2d_with_and_without_bias_matches_cpu() {
    let Some(g) = gpu("conv2d") else {
        return;
    };
    let mut rng = Rng::new(71);
    for (xs, c_out, k, stride, pad) in CONVS {
        let x = rng.tensor(&xs);
        let w = rng.tensor(&[c_out, xs[1], k, k]);
        let b = rng.tensor(&[c_out]);
        let name = format!("conv2d {xs:?} c_out {c_out} k {k} s {stride} p {pad}");
        same_on_gpu(&g, &name, &[x.clone(), w.clone(), b], &mut rng, |t| {
            t[0].conv2d(&t[1], Some(&t[2]), stride, pad)
        });
        same_on_gpu(&g, &format!("{name} no bias"), &[x, w], &mut rng, |t| {
            t[0].conv2d(&t[1], None, stride, pad)
        });
    }
}

#[test]
fn conv2d_gradients_only_where_needed() {
    let Some(g) = gpu("conv2d_needs") else {
        return;
    };
    let mut rng = Rng::new(72);
    let (x, w, b) = (
        rng.tensor(&[2, 3, 6, 5]),
        rng.tensor(&[4, 3, 3, 3]),
        rng.tensor(&[4]),
    );
    let cot = rng.cotangent(&[2, 4, 3, 3]);
    // Every subset of tracked inputs (x, w, bias): only those get a gradient, equal to the CPU's.
    for mask in 1..8u32 {
        let track = |t: &Tensor, bit: u32| {
            if mask & (1 << bit) != 0 {
                t.requires_grad()
            } else {
                t.clone()
            }
        };
        let cpu_in = [track(&x, 0), track(&w, 1), track(&b, 2)];
        let dev_in: Vec<Tensor> = [&x, &w, &b]
            .iter()
            .enumerate()
            .map(|(k, t)| track(&t.to_gpu(&g).unwrap(), k as u32))
            .collect();
        let y = cpu_in[0]
            .conv2d(&cpu_in[1], Some(&cpu_in[2]), 2, 1)
            .unwrap();
        let yd = dev_in[0]
            .conv2d(&dev_in[1], Some(&dev_in[2]), 2, 1)
            .unwrap();
        close(&yd.to_host().unwrap(), &y.to_vec(), 1e-5, "conv2d y");
        let gc = y.backward_with(&cot).unwrap();
        let gd = yd.backward_with(&cot.to_gpu(&g).unwrap()).unwrap();
        for k in 0..3 {
            let (want, got) = (gc.get(&cpu_in[k]), gd.get(&dev_in[k]));
            assert_eq!(got.is_some(), mask & (1 << k) != 0, "mask {mask} input {k}");
            assert_eq!(want.is_some(), got.is_some(), "mask {mask} input {k}");
            if let (Some(want), Some(got)) = (want, got) {
                assert_eq!(got.device(), Device::Cuda(g.ordinal()));
                let what = format!("mask {mask} d input {k}");
                close(&got.to_host().unwrap(), &want.to_vec(), 1e-5, &what);
            }
        }
    }
}

#[test]
fn pooling_matches_cpu() {
    let Some(g) = gpu("pooling") else {
        return;
    };
    let mut rng = Rng::new(73);
    // (x shape, k, stride, pad): batch 1, odd sizes, overlapping, padded and strided windows.
    for (xs, k, stride, pad) in [
        ([1, 1, 4, 4], 2, 2, 0),
        ([2, 3, 5, 7], 3, 1, 1),
        ([1, 2, 7, 5], 3, 2, 1),
        ([3, 1, 6, 3], 2, 1, 0),
    ] {
        let x = rng.tensor(&xs);
        let name = format!("{xs:?} k {k} s {stride} p {pad}");
        same_on_gpu(
            &g,
            &format!("avg_pool2d {name}"),
            std::slice::from_ref(&x),
            &mut rng,
            |t| t[0].avg_pool2d(k, stride, pad),
        );
        same_on_gpu(
            &g,
            &format!("max_pool2d {name}"),
            std::slice::from_ref(&x),
            &mut rng,
            |t| t[0].max_pool2d(k, stride, pad),
        );
        same_on_gpu(
            &g,
            &format!("global_avg_pool {name}"),
            &[x],
            &mut rng,
            |t| t[0].global_avg_pool(),
        );
    }
}

#[test]
fn upsampling_matches_cpu() {
    let Some(g) = gpu("upsampling") else {
        return;
    };
    let mut rng = Rng::new(74);
    // Up by 2, up by a fraction, down, the same size, and a 1x1 source.
    for (xs, oh, ow) in [
        ([1, 1, 3, 3], 6, 6),
        ([2, 3, 3, 5], 7, 8),
        ([1, 2, 6, 7], 4, 3),
        ([2, 1, 4, 5], 4, 5),
        ([1, 2, 1, 1], 3, 2),
    ] {
        let x = rng.tensor(&xs);
        let name = format!("{xs:?} to {oh}x{ow}");
        same_on_gpu(
            &g,
            &format!("bilinear {name}"),
            std::slice::from_ref(&x),
            &mut rng,
            |t| t[0].upsample_bilinear(oh, ow),
        );
        same_on_gpu(&g, &format!("nearest {name}"), &[x], &mut rng, |t| {
            t[0].upsample_nearest(oh, ow)
        });
    }
}

#[test]
fn conv_max_pool_global_pool_sum_chain_matches_cpu() {
    let Some(g) = gpu("conv_pool_chain") else {
        return;
    };
    let mut rng = Rng::new(75);
    for (xs, c_out) in [([1, 2, 7, 7], 3), ([2, 3, 8, 6], 4)] {
        let x = rng.tensor(&xs);
        let w = rng.tensor(&[c_out, xs[1], 3, 3]);
        let b = rng.tensor(&[c_out]);
        // Gradients reach x, w and the bias through max-pool's device argmax and the pooling.
        same_on_gpu(&g, "conv_maxpool_gap_sum", &[x, w, b], &mut rng, |t| {
            t[0].conv2d(&t[1], Some(&t[2]), 1, 1)?
                .max_pool2d(2, 2, 0)?
                .global_avg_pool()?
                .sum()
        });
    }
    // A small decoder: conv, upsample both ways, average-pool back, conv again.
    let x = rng.tensor(&[2, 2, 4, 5]);
    let w1 = rng.tensor(&[3, 2, 3, 3]);
    let w2 = rng.tensor(&[2, 3, 1, 1]);
    let b2 = rng.tensor(&[2]);
    same_on_gpu(
        &g,
        "conv_upsample_pool_conv",
        &[x, w1, w2, b2],
        &mut rng,
        |t| {
            let h = t[0].conv2d(&t[1], None, 1, 1)?.relu()?;
            let up = h
                .upsample_bilinear(8, 10)?
                .add(&h.upsample_nearest(8, 10)?)?;
            up.avg_pool2d(3, 2, 1)?.conv2d(&t[2], Some(&t[3]), 1, 0)
        },
    );
}

#[test]
fn device_ops_refuse_mixed_inputs_and_skip_the_tape_without_grad() {
    let Some(g) = gpu("conv_devices") else {
        return;
    };
    let mut rng = Rng::new(76);
    let x = rng.tensor(&[1, 2, 4, 4]);
    let w = rng.tensor(&[3, 2, 3, 3]);
    let (xd, wd) = (x.to_gpu(&g).unwrap(), w.to_gpu(&g).unwrap());
    for res in [x.conv2d(&wd, None, 1, 0), xd.conv2d(&w, None, 1, 0)] {
        match res {
            Err(AutogradError::Device(msg)) => {
                assert!(
                    msg.contains("conv2d") && msg.contains("different devices"),
                    "{msg}"
                )
            }
            other => panic!("expected a device error, got {other:?}"),
        }
    }
    // Shape errors are the CPU's, whatever the device.
    let e = xd.conv2d(&rng.tensor(&[3, 5, 3, 3]).to_gpu(&g).unwrap(), None, 1, 0);
    assert!(
        matches!(e, Err(AutogradError::Invalid { op: "conv2d", .. })),
        "{e:?}"
    );
    let e = xd.upsample_nearest(0, 3).unwrap_err();
    assert!(e.to_string().contains("upsample_nearest"), "{e}");
    // Without gradients the device ops record nothing and keep their outputs on the device.
    let tracked = xd.requires_grad();
    let _guard = no_grad();
    let y = tracked
        .conv2d(&wd, None, 1, 1)
        .unwrap()
        .max_pool2d(2, 2, 0)
        .unwrap()
        .upsample_nearest(4, 4)
        .unwrap();
    assert!(!y.is_tracked());
    assert_eq!(y.device(), Device::Cuda(g.ordinal()));
}
