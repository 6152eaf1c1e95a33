use crate::common::*;
use rand::RngExt;
use scalarize_kernels::cpu::{
    bce_with_logits_backward, bce_with_logits_forward, cross_entropy_backward,
    cross_entropy_forward,
};

fn ce64(rows: usize, classes: usize, x: &[f64], t: &[i64], ignore: i64) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            if t[r] == ignore {
                return 0.0;
            }
            let xr = &x[r * classes..(r + 1) * classes];
            let lse = xr.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - xr[t[r] as usize]
        })
        .collect()
}

#[test]
fn cross_entropy_forward_backward_with_ignore() {
    let mut r = rng(40);
    for &(rows, classes) in &[(1, 1), (1, 5), (6, 3), (9, 10)] {
        let x: Vec<f32> = randv(&mut r, rows * classes)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let mut t: Vec<i64> = (0..rows)
            .map(|_| r.random_range(0..classes as i64))
            .collect();
        if rows > 2 {
            t[1] = -100;
        }
        let mut losses = vec![f32::NAN; rows];
        let valid = cross_entropy_forward(rows, classes, &x, &t, -100, &mut losses).unwrap();
        assert_eq!(valid, t.iter().filter(|&&v| v != -100).count());
        let x64 = f64s(&x);
        let tag = format!("ce {rows}x{classes}");
        assert_close(&tag, &losses, &ce64(rows, classes, &x64, &t, -100), 1e-6);
        // Mean loss L = Σ losses / valid; backward with scale = 1/valid.
        let scale = 1.0 / valid as f32;
        let mut dl = vec![f32::NAN; x.len()];
        cross_entropy_backward(rows, classes, &x, &t, -100, scale, &mut dl).unwrap();
        let g = vec![scale as f64; rows];
        let fd = fd_grad(|v| ce64(rows, classes, v, &t, -100), &x64, &g);
        assert_close(&format!("{tag} dlogits"), &dl, &fd, 1e-5);
    }
    // Stable for huge logits: loss of the right class ≈ 0, of the wrong one ≈ the gap.
    let x = [1000.0f32, -1000.0, 0.0, 1000.0];
    let mut l = [0.0f32; 2];
    cross_entropy_forward(2, 2, &x, &[0, 0], -1, &mut l).unwrap();
    assert!(l[0].abs() < 1e-6 && (l[1] - 1000.0).abs() < 1e-3, "{l:?}");
}

fn bce64(x: &[f64], t: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(t)
        .map(|(&v, &t)| {
            let s = 1.0 / (1.0 + (-v).exp());
            -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
        })
        .collect()
}

#[test]
fn bce_with_logits_forward_backward() {
    let mut r = rng(41);
    let n = 23;
    let x: Vec<f32> = randv(&mut r, n).iter().map(|v| 5.0 * v).collect();
    // Hard labels and soft targets.
    let t: Vec<f32> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                r.random_range(0.0..1.0)
            } else {
                (i % 2) as f32
            }
        })
        .collect();
    let mut l = vec![f32::NAN; n];
    bce_with_logits_forward(&x, &t, &mut l).unwrap();
    let (x64, t64) = (f64s(&x), f64s(&t));
    assert_close("bce", &l, &bce64(&x64, &t64), 1e-6);
    let mut dx = vec![f32::NAN; n];
    bce_with_logits_backward(&x, &t, 0.25, &mut dx).unwrap();
    let fd = fd_grad(|v| bce64(v, &t64), &x64, &vec![0.25; n]);
    assert_close("bce dx", &dx, &fd, 1e-6);
    // Stable for large |x|: no inf, no NaN.
    let mut l = [0.0f32; 2];
    bce_with_logits_forward(&[200.0, -200.0], &[0.0, 0.0], &mut l).unwrap();
    assert!((l[0] - 200.0).abs() < 1e-3 && l[1].abs() < 1e-6, "{l:?}");
}
