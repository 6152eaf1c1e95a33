use crate::common::*;
use scalarize_kernels::cpu::{
    upsample_bilinear2d_backward, upsample_bilinear2d_forward, upsample_nearest2d_backward,
    upsample_nearest2d_forward,
};

#[test]
fn bilinear_known_answer_matches_pytorch() {
    // torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    // of [[1, 2], [3, 4]].
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut y = [0.0f32; 16];
    upsample_bilinear2d_forward(1, 1, 2, 2, 4, 4, &x, &mut y).unwrap();
    let want = [
        1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
    ];
    assert_close("bilinear 2x2->4x4", &y, &want, 1e-7);
    // Downsampling 4 -> 2 averages the two middle taps: out = mean of x[2i+0.5] taps.
    let x: Vec<f32> = (0..4).map(|v| v as f32).collect();
    let mut y = [0.0f32; 2];
    upsample_bilinear2d_forward(1, 1, 1, 4, 1, 2, &x, &mut y).unwrap();
    assert_close("bilinear 1x4->1x2", &y, &[0.5, 2.5], 1e-7);
}

#[test]
fn nearest_known_answer_matches_pytorch() {
    // interpolate(arange(3), size=7, mode="nearest") = [0, 0, 0, 1, 1, 2, 2].
    let x = [0.0f32, 1.0, 2.0];
    let mut y = [0.0f32; 7];
    upsample_nearest2d_forward(1, 1, 1, 3, 1, 7, &x, &mut y).unwrap();
    assert_close(
        "nearest 3->7",
        &y,
        &[0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0],
        0.0,
    );
    let mut y = [0.0f32; 6];
    upsample_nearest2d_forward(1, 1, 1, 3, 1, 6, &x, &mut y).unwrap();
    assert_close("nearest 3->6", &y, &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 0.0);
}

#[test]
fn upsample_backward_is_the_adjoint() {
    // Both ops are linear: <dy, U x> = <Uᵀ dy, x> for every x, dy, and the adjoint is unique,
    // so checking it on random x, dy (plus the forward known answers) pins the backward.
    let mut r = rng(60);
    for &(n, c, h, w, oh, ow) in &[
        (1, 1, 2, 2, 4, 4),
        (2, 3, 3, 5, 7, 4),
        (1, 2, 7, 6, 3, 3),
        (2, 2, 4, 4, 8, 8),
        (1, 1, 5, 5, 5, 5),
        (4, 8, 16, 16, 32, 32),
    ] {
        let x = randv(&mut r, n * c * h * w);
        let dy = randv(&mut r, n * c * oh * ow);
        for bilinear in [true, false] {
            let mut y = vec![f32::NAN; dy.len()];
            let mut dx = vec![f32::NAN; x.len()];
            if bilinear {
                upsample_bilinear2d_forward(n, c, h, w, oh, ow, &x, &mut y).unwrap();
                upsample_bilinear2d_backward(n, c, h, w, oh, ow, &dy, &mut dx).unwrap();
            } else {
                upsample_nearest2d_forward(n, c, h, w, oh, ow, &x, &mut y).unwrap();
                upsample_nearest2d_backward(n, c, h, w, oh, ow, &dy, &mut dx).unwrap();
            }
            let (l, rr) = (dot(&dy, &y), dot(&dx, &x));
            assert!(
                (l - rr).abs() < 1e-4 * (1.0 + l.abs()),
                "adjoint bilinear={bilinear} {h}x{w}->{oh}x{ow}: {l} vs {rr}"
            );
            // Per element: dx[i] = <dy, U e_i>, the forward applied to a one-hot input.
            if x.len() <= 64 {
                let want: Vec<f64> = (0..x.len())
                    .map(|i| {
                        let mut e = vec![0.0f32; x.len()];
                        e[i] = 1.0;
                        let mut col = vec![0.0f32; dy.len()];
                        if bilinear {
                            upsample_bilinear2d_forward(n, c, h, w, oh, ow, &e, &mut col).unwrap();
                        } else {
                            upsample_nearest2d_forward(n, c, h, w, oh, ow, &e, &mut col).unwrap();
                        }
                        dot(&dy, &col)
                    })
                    .collect();
                assert_close(
                    &format!("upsample dx bilinear={bilinear}"),
                    &dx,
                    &want,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn bilinear_matches_independent_formula() {
    // Independent f64 evaluation of PyTorch's align_corners=False rule for odd scales.
    let mut r = rng(61);
    let (h, w, oh, ow) = (3, 5, 7, 4);
    let x = randv(&mut r, h * w);
    let mut y = vec![0.0; oh * ow];
    upsample_bilinear2d_forward(1, 1, h, w, oh, ow, &x, &mut y).unwrap();
    let tap = |o: usize, inp: usize, out: usize| -> (usize, usize, f64) {
        let src = ((o as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(inp - 1);
        (i0, i1, src - i0 as f64)
    };
    let mut want = vec![0.0; oh * ow];
    for oy in 0..oh {
        let (y0, y1, ly) = tap(oy, h, oh);
        for ox in 0..ow {
            let (x0, x1, lx) = tap(ox, w, ow);
            let v = |a: usize, b: usize| x[a * w + b] as f64;
            want[oy * ow + ox] = (1.0 - ly) * ((1.0 - lx) * v(y0, x0) + lx * v(y0, x1))
                + ly * ((1.0 - lx) * v(y1, x0) + lx * v(y1, x1));
        }
    }
    assert_close("bilinear 3x5->7x4", &y, &want, 1e-6);
}
