use crate::common::*;
use scalarize_kernels::cpu::{
    Pool2dShape, avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward,
    global_avg_pool_forward, max_pool2d_backward, max_pool2d_forward,
};

/// f64 pooling over the padded input: `max` or average with divisor kh·kw.
fn naive_pool(s: &Pool2dShape, x: &[f64], max: bool) -> Vec<f64> {
    let (oh, ow) = (
        (s.h + 2 * s.pad - s.kh) / s.stride + 1,
        (s.w + 2 * s.pad - s.kw) / s.stride + 1,
    );
    let mut y = Vec::new();
    for p in 0..s.n * s.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for ki in 0..s.kh {
                    for kj in 0..s.kw {
                        let iy = (oy * s.stride + ki) as isize - s.pad as isize;
                        let ix = (ox * s.stride + kj) as isize - s.pad as isize;
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        let v = x[p * s.h * s.w + iy as usize * s.w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                y.push(if max { acc } else { acc / (s.kh * s.kw) as f64 });
            }
        }
    }
    y
}

fn cases() -> Vec<Pool2dShape> {
    let p = |n, c, h, w, k: (usize, usize), stride, pad| Pool2dShape {
        n,
        c,
        h,
        w,
        kh: k.0,
        kw: k.1,
        stride,
        pad,
    };
    vec![
        p(1, 3, 7, 5, (2, 2), 2, 0),
        p(2, 2, 7, 5, (3, 3), 2, 1),
        p(2, 3, 6, 6, (3, 3), 1, 1),
        p(1, 1, 5, 7, (4, 4), 3, 2),
        p(3, 2, 4, 4, (2, 3), 1, 1),
        // Large enough for the parallel path.
        p(4, 16, 32, 32, (3, 3), 2, 1),
    ]
}

#[test]
fn avg_pool_forward_backward() {
    let mut r = rng(50);
    for s in cases() {
        let x = randv(&mut r, s.n * s.c * s.h * s.w);
        let mut y = vec![f32::NAN; s.n * s.c * s.out_h() * s.out_w()];
        avg_pool2d_forward(&s, &x, &mut y).unwrap();
        let x64 = f64s(&x);
        assert_close(
            &format!("avg pool {s:?}"),
            &y,
            &naive_pool(&s, &x64, false),
            1e-6,
        );
        let dy = randv(&mut r, y.len());
        let mut dx = vec![f32::NAN; x.len()];
        avg_pool2d_backward(&s, &dy, &mut dx).unwrap();
        if x.len() < 2000 {
            let fd = fd_grad(|v| naive_pool(&s, v, false), &x64, &f64s(&dy));
            assert_close(&format!("avg pool dx {s:?}"), &dx, &fd, 1e-6);
        } else {
            // Linear op: the backward is the adjoint, <dy, A x> = <Aᵀ dy, x>.
            let (l, rr) = (dot(&dy, &y), dot(&dx, &x));
            assert!(
                (l - rr).abs() < 1e-4 * (1.0 + l.abs()),
                "avg pool adjoint {l} vs {rr}"
            );
        }
    }
}

#[test]
fn max_pool_forward_backward() {
    let mut r = rng(51);
    for s in cases() {
        let x = randv(&mut r, s.n * s.c * s.h * s.w);
        let out = s.n * s.c * s.out_h() * s.out_w();
        let mut y = vec![f32::NAN; out];
        let mut am = vec![u32::MAX; out];
        max_pool2d_forward(&s, &x, &mut y, &mut am).unwrap();
        let x64 = f64s(&x);
        assert_close(
            &format!("max pool {s:?}"),
            &y,
            &naive_pool(&s, &x64, true),
            0.0,
        );
        // argmax points at the value chosen.
        let ohw = s.out_h() * s.out_w();
        for (i, (&a, &v)) in am.iter().zip(&y).enumerate() {
            assert_eq!(x[(i / ohw) * s.h * s.w + a as usize], v, "argmax {i} {s:?}");
        }
        let dy = randv(&mut r, out);
        let mut dx = vec![f32::NAN; x.len()];
        max_pool2d_backward(&s, &am, &dy, &mut dx).unwrap();
        if x.len() < 2000 {
            let fd = fd_grad(|v| naive_pool(&s, v, true), &x64, &f64s(&dy));
            assert_close(&format!("max pool dx {s:?}"), &dx, &fd, 1e-6);
        } else {
            let total: f64 = dx.iter().map(|&v| v as f64).sum();
            let want: f64 = dy.iter().map(|&v| v as f64).sum();
            assert!(
                (total - want).abs() < 1e-3,
                "max pool dx mass {total} vs {want}"
            );
        }
    }
}

#[test]
fn global_avg_pool_forward_backward() {
    let mut r = rng(52);
    for &(n, c, hw) in &[(1, 3, 35), (2, 5, 1), (4, 7, 16)] {
        let x = randv(&mut r, n * c * hw);
        let mut y = vec![f32::NAN; n * c];
        global_avg_pool_forward(n, c, hw, &x, &mut y).unwrap();
        let want: Vec<f64> = x
            .chunks(hw)
            .map(|p| f64s(p).iter().sum::<f64>() / hw as f64)
            .collect();
        assert_close("gap", &y, &want, 1e-6);
        let dy = randv(&mut r, n * c);
        let mut dx = vec![f32::NAN; x.len()];
        global_avg_pool_backward(n, c, hw, &dy, &mut dx).unwrap();
        let want: Vec<f64> = (0..x.len())
            .map(|i| dy[i / hw] as f64 / hw as f64)
            .collect();
        assert_close("gap dx", &dx, &want, 1e-6);
    }
}
