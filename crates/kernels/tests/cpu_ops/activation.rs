use crate::common::*;
use scalarize_kernels::cpu::{
    gelu_backward, gelu_forward, relu_backward, relu_forward, softmax_backward, softmax_forward,
};

fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

#[test]
fn relu_and_gelu_forward_backward() {
    let mut r = rng(30);
    // 70_001 elements takes the parallel path; 13 the serial one.
    for len in [13usize, 70_001] {
        let mut x = randv(&mut r, len);
        x[0] = 3.5; // far in the tails as well
        x[1] = -4.0;
        let dy = randv(&mut r, len);
        let (x64, g) = (f64s(&x), f64s(&dy));
        let mut y = vec![f32::NAN; len];
        let mut dx = vec![f32::NAN; len];

        relu_forward(&x, &mut y).unwrap();
        assert_close(
            "relu y",
            &y,
            &x64.iter().map(|v| v.max(0.0)).collect::<Vec<_>>(),
            0.0,
        );
        relu_backward(&x, &dy, &mut dx).unwrap();
        let want: Vec<f64> = x64
            .iter()
            .zip(&g)
            .map(|(v, d)| if *v > 0.0 { *d } else { 0.0 })
            .collect();
        assert_close("relu dx", &dx, &want, 0.0);

        gelu_forward(&x, &mut y).unwrap();
        assert_close(
            "gelu y",
            &y,
            &x64.iter().map(|&v| gelu64(v)).collect::<Vec<_>>(),
            1e-6,
        );
        gelu_backward(&x, &dy, &mut dx).unwrap();
        let h = 1e-6;
        let want: Vec<f64> = x64
            .iter()
            .zip(&g)
            .map(|(&v, d)| d * (gelu64(v + h) - gelu64(v - h)) / (2.0 * h))
            .collect();
        assert_close("gelu dx", &dx, &want, 1e-5);
    }
    // Known values: GELU(1) = 0.841344746, GELU(-1) = -0.158655254.
    let mut y = [0.0f32; 2];
    gelu_forward(&[1.0, -1.0], &mut y).unwrap();
    assert!(
        (y[0] as f64 - 0.841_344_746).abs() < 1e-6 && (y[1] as f64 + 0.158_655_254).abs() < 1e-6,
        "{y:?}"
    );
}

fn softmax64(rows: usize, dim: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let s: f64 = xr.iter().map(|v| v.exp()).sum();
        for j in 0..dim {
            y[r * dim + j] = xr[j].exp() / s;
        }
    }
    y
}

#[test]
fn softmax_forward_backward() {
    let mut r = rng(31);
    for &(rows, dim) in &[(1, 1), (1, 7), (5, 3), (4, 33)] {
        let x: Vec<f32> = randv(&mut r, rows * dim).iter().map(|v| 4.0 * v).collect();
        let mut y = vec![f32::NAN; x.len()];
        softmax_forward(rows, dim, &x, &mut y).unwrap();
        let x64 = f64s(&x);
        assert_close(
            &format!("softmax {rows}x{dim}"),
            &y,
            &softmax64(rows, dim, &x64),
            1e-6,
        );
        let dy = randv(&mut r, x.len());
        let mut dx = vec![f32::NAN; x.len()];
        softmax_backward(rows, dim, &y, &dy, &mut dx).unwrap();
        let fd = fd_grad(|v| softmax64(rows, dim, v), &x64, &f64s(&dy));
        assert_close(&format!("softmax dx {rows}x{dim}"), &dx, &fd, 1e-5);
    }
    // Large logits do not overflow (max-subtracted), and the parallel path agrees.
    let (rows, dim) = (300, 197);
    let x: Vec<f32> = randv(&mut r, rows * dim).iter().map(|v| 80.0 * v).collect();
    let mut y = vec![0.0; x.len()];
    softmax_forward(rows, dim, &x, &mut y).unwrap();
    let x64 = f64s(&x);
    let want: Vec<f64> = (0..rows)
        .flat_map(|r| {
            let xr = &x64[r * dim..(r + 1) * dim];
            let m = xr.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = xr.iter().map(|v| (v - m).exp()).sum();
            xr.iter()
                .map(move |v| (v - m).exp() / s)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close("softmax large", &y, &want, 1e-6);
    let dy = randv(&mut r, x.len());
    let mut dx = vec![0.0; x.len()];
    softmax_backward(rows, dim, &y, &dy, &mut dx).unwrap();
    let want: Vec<f64> = (0..rows)
        .flat_map(|r| {
            let yr = &want[r * dim..(r + 1) * dim];
            let gr = &dy[r * dim..(r + 1) * dim];
            let s: f64 = yr.iter().zip(gr).map(|(a, b)| a * *b as f64).sum();
            yr.iter()
                .zip(gr)
                .map(move |(a, b)| a * (*b as f64 - s))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close("softmax large dx", &dx, &want, 1e-6);
}

#[test]
fn gelu_is_accurate_to_f32_level_on_a_dense_grid() {
    // Every 1/512 over [-12, 12], both tails included: forward within 3e-7·(1 + |x|) of the
    // f64 erf form, derivative within 1e-6.
    let x: Vec<f32> = (-6144..=6144).map(|i| i as f32 / 512.0).collect();
    let ones = vec![1.0f32; x.len()];
    let (mut y, mut d) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    gelu_forward(&x, &mut y).unwrap();
    gelu_backward(&x, &ones, &mut d).unwrap();
    for i in 0..x.len() {
        let v = x[i] as f64;
        let want = gelu64(v);
        assert!(
            (y[i] as f64 - want).abs() <= 3e-7 * (1.0 + v.abs()),
            "gelu({v}) = {}, want {want}",
            y[i]
        );
        let cdf = 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
        let dwant = cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
        assert!(
            (d[i] as f64 - dwant).abs() <= 1e-6,
            "gelu'({v}) = {}, want {dwant}",
            d[i]
        );
    }
    // NaN propagates.
    let mut y = [0.0f32];
    gelu_forward(&[f32::NAN], &mut y).unwrap();
    assert!(y[0].is_nan());
}
