use crate::common::*;
use scalarize_kernels::cpu::{Conv2dShape, conv2d_backward, conv2d_forward};

/// Direct f64 convolution (no im2col), the independent reference.
fn naive_conv(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let (oh, ow) = (
        (s.h + 2 * s.pad - s.kh) / s.stride + 1,
        (s.w + 2 * s.pad - s.kw) / s.stride + 1,
    );
    let mut y = vec![0.0; s.n * s.c_out * oh * ow];
    for n in 0..s.n {
        for co in 0..s.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co];
                    for ci in 0..s.c_in {
                        for ki in 0..s.kh {
                            for kj in 0..s.kw {
                                let iy = (oy * s.stride + ki) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kj) as isize - s.pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((n * s.c_in + ci) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = w[((co * s.c_in + ci) * s.kh + ki) * s.kw + kj];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * s.c_out + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k.0,
        kw: k.1,
        stride,
        pad,
    }
}

fn cases() -> Vec<Conv2dShape> {
    vec![
        shape(1, 3, 7, 5, 4, (3, 3), 1, 1),
        shape(2, 3, 7, 5, 2, (3, 3), 2, 1),
        shape(2, 2, 6, 7, 3, (1, 1), 1, 0),
        shape(1, 3, 9, 4, 2, (1, 1), 1, 0),
        shape(3, 2, 5, 5, 2, (1, 1), 2, 0),
        shape(2, 2, 8, 6, 3, (4, 4), 2, 1),
        shape(1, 2, 7, 7, 2, (5, 5), 1, 2),
        shape(2, 3, 5, 7, 2, (5, 5), 3, 0),
        shape(2, 2, 6, 5, 3, (3, 1), 1, 1),
        shape(5, 2, 4, 3, 3, (3, 3), 1, 1),
        shape(9, 3, 3, 3, 2, (1, 1), 1, 0),
        shape(7, 2, 5, 6, 3, (3, 3), 2, 1),
    ]
}

#[test]
fn conv_forward_matches_direct_reference() {
    let mut r = rng(10);
    for s in cases() {
        let x = randv(&mut r, s.n * s.c_in * s.h * s.w);
        let w = randv(&mut r, s.c_out * s.c_in * s.kh * s.kw);
        let b = randv(&mut r, s.c_out);
        let mut y = vec![f32::NAN; s.n * s.c_out * s.out_h() * s.out_w()];
        conv2d_forward(&s, &x, &w, Some(&b), &mut y).unwrap();
        let want = naive_conv(&s, &f64s(&x), &f64s(&w), &f64s(&b));
        assert_close(&format!("conv forward {s:?}"), &y, &want, 1e-5);
        // Without bias.
        conv2d_forward(&s, &x, &w, None, &mut y).unwrap();
        let want = naive_conv(&s, &f64s(&x), &f64s(&w), &vec![0.0; s.c_out]);
        assert_close(&format!("conv forward no bias {s:?}"), &y, &want, 1e-5);
    }
}

#[test]
fn conv_backward_matches_finite_differences() {
    let mut r = rng(11);
    for s in cases() {
        let x = randv(&mut r, s.n * s.c_in * s.h * s.w);
        let w = randv(&mut r, s.c_out * s.c_in * s.kh * s.kw);
        let b = randv(&mut r, s.c_out);
        let dy = randv(&mut r, s.n * s.c_out * s.out_h() * s.out_w());
        let mut dx = vec![f32::NAN; x.len()];
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; b.len()];
        conv2d_backward(&s, &x, &w, &dy, Some(&mut dx), Some(&mut dw), Some(&mut db)).unwrap();
        let (x64, w64, b64, g) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dy));
        let fx = fd_grad(|v| naive_conv(&s, v, &w64, &b64), &x64, &g);
        let fw = fd_grad(|v| naive_conv(&s, &x64, v, &b64), &w64, &g);
        let fb = fd_grad(|v| naive_conv(&s, &x64, &w64, v), &b64, &g);
        assert_close(&format!("conv dx {s:?}"), &dx, &fx, 1e-5);
        assert_close(&format!("conv dw {s:?}"), &dw, &fw, 1e-5);
        assert_close(&format!("conv dbias {s:?}"), &db, &fb, 1e-5);
        // Each output alone gives the same values.
        let mut dx2 = vec![f32::NAN; x.len()];
        conv2d_backward(&s, &x, &w, &dy, Some(&mut dx2), None, None).unwrap();
        assert_eq!(dx, dx2, "dx alone {s:?}");
        let mut dw2 = vec![f32::NAN; w.len()];
        conv2d_backward(&s, &x, &w, &dy, None, Some(&mut dw2), None).unwrap();
        assert_close(&format!("conv dw alone {s:?}"), &dw2, &fw, 1e-5);
    }
}

#[test]
fn conv_resnet_like_shape_batch_chunks() {
    // Enough images and pixels that the kernel packs several images per GEMM and runs chunks
    // on several threads; checked against the direct reference on every output.
    let mut r = rng(12);
    for s in [
        shape(6, 8, 8, 8, 8, (3, 3), 1, 1),
        shape(6, 8, 8, 8, 16, (1, 1), 1, 0),
        shape(5, 8, 9, 9, 8, (3, 3), 2, 1),
    ] {
        let x = randv(&mut r, s.n * s.c_in * s.h * s.w);
        let w = randv(&mut r, s.c_out * s.c_in * s.kh * s.kw);
        let mut y = vec![0.0; s.n * s.c_out * s.out_h() * s.out_w()];
        conv2d_forward(&s, &x, &w, None, &mut y).unwrap();
        let (x64, w64) = (f64s(&x), f64s(&w));
        let want = naive_conv(&s, &x64, &w64, &vec![0.0; s.c_out]);
        assert_close(&format!("conv forward {s:?}"), &y, &want, 1e-5);
        // Backward through the adjoint identities: <dy, conv(x)> = <dx, x> = <dw, w>.
        let dy = randv(&mut r, y.len());
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        conv2d_backward(&s, &x, &w, &dy, Some(&mut dx), Some(&mut dw), None).unwrap();
        let lhs = dot(&dy, &y);
        assert!(
            (lhs - dot(&dx, &x)).abs() < 1e-3 * (1.0 + lhs.abs()),
            "dx adjoint {s:?}"
        );
        assert!(
            (lhs - dot(&dw, &w)).abs() < 1e-3 * (1.0 + lhs.abs()),
            "dw adjoint {s:?}"
        );
    }
}

#[test]
fn conv_and_layer_norm_gradients_are_deterministic() {
    // Same inputs, same bits: weight-gradient partials are added in a fixed order whatever
    // the thread scheduling.
    use scalarize_kernels::cpu::{layer_norm_backward, layer_norm_forward};
    let mut r = rng(13);
    let s = shape(16, 8, 8, 8, 8, (3, 3), 1, 1);
    let x = randv(&mut r, s.n * s.c_in * s.h * s.w);
    let w = randv(&mut r, s.c_out * s.c_in * s.kh * s.kw);
    let dy = randv(&mut r, s.n * s.c_out * s.out_h() * s.out_w());
    let run = || {
        let mut dw = vec![0.0f32; w.len()];
        conv2d_backward(&s, &x, &w, &dy, None, Some(&mut dw), None).unwrap();
        dw
    };
    let first = run();
    for _ in 0..5 {
        assert_eq!(run(), first, "conv dw differs between runs");
    }
    let (rows, dim) = (300, 128);
    let lx = randv(&mut r, rows * dim);
    let g = randv(&mut r, dim);
    let ldy = randv(&mut r, rows * dim);
    let (mut y, mut m, mut is) = (vec![0.0; lx.len()], vec![0.0; rows], vec![0.0; rows]);
    layer_norm_forward(rows, dim, &lx, &g, &g, 1e-6, &mut y, &mut m, &mut is).unwrap();
    let run = || {
        let (mut dx, mut dg, mut db) = (vec![0.0; lx.len()], vec![0.0; dim], vec![0.0; dim]);
        layer_norm_backward(rows, dim, &lx, &ldy, &g, &m, &is, &mut dx, &mut dg, &mut db).unwrap();
        (dg, db)
    };
    let first = run();
    for _ in 0..5 {
        assert_eq!(run(), first, "layer norm dgamma/dbeta differ between runs");
    }
}
