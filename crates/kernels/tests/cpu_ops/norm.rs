use crate::common::*;
use scalarize_kernels::cpu::{
    batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train,
    batch_norm_update_running, layer_norm_backward, layer_norm_forward,
};

const EPS: f64 = 1e-5;

/// f64 training-mode batch norm of x [n, c, hw]: (y, mean, biased var).
fn naive_bn(
    n: usize,
    c: usize,
    hw: usize,
    x: &[f64],
    g: &[f64],
    b: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let cnt = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        for i in 0..n {
            for p in 0..hw {
                mean[ch] += x[(i * c + ch) * hw + p] / cnt;
            }
        }
        for i in 0..n {
            for p in 0..hw {
                var[ch] += (x[(i * c + ch) * hw + p] - mean[ch]).powi(2) / cnt;
            }
        }
    }
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                let o = (i * c + ch) * hw + p;
                y[o] = (x[o] - mean[ch]) / (var[ch] + EPS).sqrt() * g[ch] + b[ch];
            }
        }
    }
    (y, mean, var)
}

/// Analytic f64 batch-norm backward (dx only).
fn analytic_bn_dx(n: usize, c: usize, hw: usize, x: &[f64], g: &[f64], dy: &[f64]) -> Vec<f64> {
    let (_, mean, var) = naive_bn(n, c, hw, x, g, &vec![0.0; c]);
    let cnt = (n * hw) as f64;
    let mut dx = vec![0.0; x.len()];
    for ch in 0..c {
        let is = 1.0 / (var[ch] + EPS).sqrt();
        let (mut s1, mut s2) = (0.0, 0.0);
        for i in 0..n {
            for p in 0..hw {
                let o = (i * c + ch) * hw + p;
                s1 += dy[o];
                s2 += dy[o] * (x[o] - mean[ch]) * is;
            }
        }
        for i in 0..n {
            for p in 0..hw {
                let o = (i * c + ch) * hw + p;
                let xh = (x[o] - mean[ch]) * is;
                dx[o] = g[ch] * is / cnt * (cnt * dy[o] - s1 - xh * s2);
            }
        }
    }
    dx
}

#[test]
fn batch_norm_train_forward_backward() {
    let mut r = rng(20);
    for &(n, c, hw) in &[(1, 2, 7), (2, 3, 5), (3, 1, 1), (4, 5, 9)] {
        let x = randv(&mut r, n * c * hw);
        let g = randv(&mut r, c);
        let b = randv(&mut r, c);
        let mut y = vec![f32::NAN; x.len()];
        let (mut sm, mut si) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_forward_train(n, c, hw, &x, &g, &b, EPS as f32, &mut y, &mut sm, &mut si)
            .unwrap();
        let (x64, g64, b64) = (f64s(&x), f64s(&g), f64s(&b));
        let (want, mean, var) = naive_bn(n, c, hw, &x64, &g64, &b64);
        let tag = format!("bn n={n} c={c} hw={hw}");
        assert_close(&format!("{tag} y"), &y, &want, 1e-5);
        assert_close(&format!("{tag} mean"), &sm, &mean, 1e-6);
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        assert_close(&format!("{tag} invstd"), &si, &invstd, 1e-5);

        let dy = randv(&mut r, x.len());
        let gy = f64s(&dy);
        let (mut dx, mut dg, mut db) = (vec![f32::NAN; x.len()], vec![0.0; c], vec![0.0; c]);
        batch_norm_backward(n, c, hw, &x, &dy, &g, &sm, &si, &mut dx, &mut dg, &mut db).unwrap();
        let fx = fd_grad(|v| naive_bn(n, c, hw, v, &g64, &b64).0, &x64, &gy);
        let fg = fd_grad(|v| naive_bn(n, c, hw, &x64, v, &b64).0, &g64, &gy);
        let fb = fd_grad(|v| naive_bn(n, c, hw, &x64, &g64, v).0, &b64, &gy);
        // A single value per channel normalises to 0: its dx is 0 up to eps effects.
        assert_close(&format!("{tag} dx"), &dx, &fx, 1e-4);
        assert_close(&format!("{tag} dgamma"), &dg, &fg, 1e-4);
        assert_close(&format!("{tag} dbeta"), &db, &fb, 1e-5);
    }
}

#[test]
fn batch_norm_large_parallel_path() {
    // Large enough for the rayon paths; checked against the analytic reference.
    let mut r = rng(21);
    let (n, c, hw) = (3, 16, 1024);
    let x = randv(&mut r, n * c * hw);
    let g = randv(&mut r, c);
    let b = randv(&mut r, c);
    let mut y = vec![0.0; x.len()];
    let (mut sm, mut si) = (vec![0.0; c], vec![0.0; c]);
    batch_norm_forward_train(n, c, hw, &x, &g, &b, EPS as f32, &mut y, &mut sm, &mut si).unwrap();
    let (x64, g64) = (f64s(&x), f64s(&g));
    let (want, _, _) = naive_bn(n, c, hw, &x64, &g64, &f64s(&b));
    assert_close("bn large y", &y, &want, 1e-5);
    let dy = randv(&mut r, x.len());
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    batch_norm_backward(n, c, hw, &x, &dy, &g, &sm, &si, &mut dx, &mut dg, &mut db).unwrap();
    assert_close(
        "bn large dx",
        &dx,
        &analytic_bn_dx(n, c, hw, &x64, &g64, &f64s(&dy)),
        1e-5,
    );
}

#[test]
fn batch_norm_running_stats_and_eval() {
    let mut r = rng(22);
    let (n, c, hw) = (3, 4, 5);
    let x = randv(&mut r, n * c * hw);
    let g = randv(&mut r, c);
    let b = randv(&mut r, c);
    let mut y = vec![0.0; x.len()];
    let (mut sm, mut si) = (vec![0.0; c], vec![0.0; c]);
    batch_norm_forward_train(n, c, hw, &x, &g, &b, EPS as f32, &mut y, &mut sm, &mut si).unwrap();
    let rm0 = randv(&mut r, c);
    let rv0: Vec<f32> = randv(&mut r, c).iter().map(|v| v.abs() + 0.5).collect();
    let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
    batch_norm_update_running(c, n * hw, &sm, &si, EPS as f32, 0.1, &mut rm, &mut rv).unwrap();
    // Reference: unbiased variance straight from x.
    let x64 = f64s(&x);
    let cnt = (n * hw) as f64;
    let (mut wm, mut wv) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..hw).map(move |p| (i * c + ch) * hw + p))
            .map(|o| x64[o])
            .collect();
        let m = vals.iter().sum::<f64>() / cnt;
        let uv = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (cnt - 1.0);
        wm[ch] = 0.9 * rm0[ch] as f64 + 0.1 * m;
        wv[ch] = 0.9 * rv0[ch] as f64 + 0.1 * uv;
    }
    assert_close("running_mean", &rm, &wm, 1e-5);
    assert_close("running_var", &rv, &wv, 1e-4);

    let mut ye = vec![f32::NAN; x.len()];
    batch_norm_forward_eval(n, c, hw, &x, &g, &b, &rm, &rv, EPS as f32, &mut ye).unwrap();
    let want: Vec<f64> = (0..x.len())
        .map(|o| {
            let ch = (o / hw) % c;
            (x64[o] - rm[ch] as f64) / (rv[ch] as f64 + EPS).sqrt() * g[ch] as f64 + b[ch] as f64
        })
        .collect();
    assert_close("bn eval", &ye, &want, 1e-5);
}

/// f64 layer norm of x [rows, dim].
fn naive_ln(rows: usize, dim: usize, x: &[f64], g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let m = xr.iter().sum::<f64>() / dim as f64;
        let v = xr.iter().map(|a| (a - m).powi(2)).sum::<f64>() / dim as f64;
        for j in 0..dim {
            y[r * dim + j] = (xr[j] - m) / (v + eps).sqrt() * g[j] + b[j];
        }
    }
    y
}

#[test]
fn layer_norm_forward_backward() {
    let mut r = rng(23);
    let eps = 1e-6;
    for &(rows, dim) in &[(1, 7), (3, 5), (5, 1), (4, 16)] {
        let x = randv(&mut r, rows * dim);
        let g = randv(&mut r, dim);
        let b = randv(&mut r, dim);
        let mut y = vec![f32::NAN; x.len()];
        let (mut sm, mut si) = (vec![0.0; rows], vec![0.0; rows]);
        layer_norm_forward(rows, dim, &x, &g, &b, eps as f32, &mut y, &mut sm, &mut si).unwrap();
        let (x64, g64, b64) = (f64s(&x), f64s(&g), f64s(&b));
        let tag = format!("ln rows={rows} dim={dim}");
        assert_close(
            &format!("{tag} y"),
            &y,
            &naive_ln(rows, dim, &x64, &g64, &b64, eps),
            1e-5,
        );
        let dy = randv(&mut r, x.len());
        let gy = f64s(&dy);
        let (mut dx, mut dg, mut db) = (vec![f32::NAN; x.len()], vec![0.0; dim], vec![0.0; dim]);
        layer_norm_backward(rows, dim, &x, &dy, &g, &sm, &si, &mut dx, &mut dg, &mut db).unwrap();
        if dim > 1 {
            // With dim = 1 the output is constant beta and dx is 0/eps-noise: skip dx there.
            let fx = fd_grad(|v| naive_ln(rows, dim, v, &g64, &b64, eps), &x64, &gy);
            assert_close(&format!("{tag} dx"), &dx, &fx, 1e-4);
        }
        let fg = fd_grad(|v| naive_ln(rows, dim, &x64, v, &b64, eps), &g64, &gy);
        let fb = fd_grad(|v| naive_ln(rows, dim, &x64, &g64, v, eps), &b64, &gy);
        assert_close(&format!("{tag} dgamma"), &dg, &fg, 1e-4);
        assert_close(&format!("{tag} dbeta"), &db, &fb, 1e-5);
    }
}

#[test]
fn layer_norm_large_parallel_path() {
    // ViT-like rows (parallel path); gradient checked by the directional derivative of the
    // f64 reference along a random direction (one finite difference instead of thousands).
    let mut r = rng(24);
    let (rows, dim, eps) = (65, 768, 1e-6);
    let x = randv(&mut r, rows * dim);
    let g = randv(&mut r, dim);
    let b = randv(&mut r, dim);
    let mut y = vec![0.0; x.len()];
    let (mut sm, mut si) = (vec![0.0; rows], vec![0.0; rows]);
    layer_norm_forward(rows, dim, &x, &g, &b, eps as f32, &mut y, &mut sm, &mut si).unwrap();
    let (x64, g64, b64) = (f64s(&x), f64s(&g), f64s(&b));
    assert_close(
        "ln large y",
        &y,
        &naive_ln(rows, dim, &x64, &g64, &b64, eps),
        1e-5,
    );
    let dy = randv(&mut r, x.len());
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; dim], vec![0.0; dim]);
    layer_norm_backward(rows, dim, &x, &dy, &g, &sm, &si, &mut dx, &mut dg, &mut db).unwrap();
    let dir = randv(&mut r, x.len());
    let h = 1e-5;
    let shift = |s: f64| -> f64 {
        let xs: Vec<f64> = x64
            .iter()
            .zip(&dir)
            .map(|(a, d)| a + s * *d as f64)
            .collect();
        naive_ln(rows, dim, &xs, &g64, &b64, eps)
            .iter()
            .zip(&dy)
            .map(|(a, b)| a * *b as f64)
            .sum()
    };
    let fd = (shift(h) - shift(-h)) / (2.0 * h);
    let an = dot(&dx, &dir);
    assert!(
        (fd - an).abs() < 1e-4 * (1.0 + fd.abs()),
        "ln large dx: fd {fd} vs {an}"
    );
    // dbeta = column sums of dy.
    let want: Vec<f64> = (0..dim)
        .map(|j| (0..rows).map(|r| dy[r * dim + j] as f64).sum())
        .collect();
    assert_close("ln large dbeta", &db, &want, 1e-5);
}

#[test]
fn fused_batch_norm_relu_matches_unfused_pair() {
    use scalarize_kernels::cpu::{
        batch_norm_relu_backward, batch_norm_relu_forward_eval, batch_norm_relu_forward_train,
        relu_backward, relu_forward,
    };
    let mut r = rng(25);
    // Small (serial paths) and large (parallel paths).
    for &(n, c, hw) in &[(1, 3, 7), (2, 4, 5), (3, 16, 1024)] {
        let x = randv(&mut r, n * c * hw);
        let g = randv(&mut r, c);
        let b = randv(&mut r, c);
        let dy = randv(&mut r, x.len());
        let eps = EPS as f32;
        // Unfused: bn, relu; relu backward, bn backward.
        let (mut z, mut y1) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut m1, mut i1) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_forward_train(n, c, hw, &x, &g, &b, eps, &mut z, &mut m1, &mut i1).unwrap();
        relu_forward(&z, &mut y1).unwrap();
        let mut dz = vec![0.0; x.len()];
        relu_backward(&z, &dy, &mut dz).unwrap();
        let (mut dx1, mut dg1, mut db1) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        batch_norm_backward(
            n, c, hw, &x, &dz, &g, &m1, &i1, &mut dx1, &mut dg1, &mut db1,
        )
        .unwrap();
        // Fused.
        let mut y2 = vec![f32::NAN; x.len()];
        let (mut m2, mut i2) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_relu_forward_train(n, c, hw, &x, &g, &b, eps, &mut y2, &mut m2, &mut i2)
            .unwrap();
        assert_eq!(y1, y2, "fused forward n={n} c={c} hw={hw}");
        assert_eq!((m1, i1), (m2.clone(), i2.clone()));
        assert!(y2.contains(&0.0) && y2.iter().any(|&v| v > 0.0));
        let (mut dx2, mut dg2, mut db2) = (vec![f32::NAN; x.len()], vec![0.0; c], vec![0.0; c]);
        batch_norm_relu_backward(
            n,
            c,
            hw,
            &x,
            &dy,
            (&g, &b),
            &m2,
            &i2,
            &mut dx2,
            &mut dg2,
            &mut db2,
        )
        .unwrap();
        assert_close("fused dx", &dx2, &f64s(&dx1), 1e-6);
        assert_close("fused dgamma", &dg2, &f64s(&dg1), 1e-6);
        assert_close("fused dbeta", &db2, &f64s(&db1), 1e-6);
        // Eval mode.
        let rm = randv(&mut r, c);
        let rv: Vec<f32> = randv(&mut r, c).iter().map(|v| v.abs() + 0.1).collect();
        let (mut ze, mut ye1, mut ye2) = (
            vec![0.0; x.len()],
            vec![0.0; x.len()],
            vec![f32::NAN; x.len()],
        );
        batch_norm_forward_eval(n, c, hw, &x, &g, &b, &rm, &rv, eps, &mut ze).unwrap();
        relu_forward(&ze, &mut ye1).unwrap();
        batch_norm_relu_forward_eval(n, c, hw, &x, &g, &b, &rm, &rv, eps, &mut ye2).unwrap();
        assert_eq!(ye1, ye2, "fused eval");
    }
    // Bad input names the fused op.
    let mut dx = vec![0.0; 6];
    let (mut dg, mut db) = (vec![0.0; 2], vec![0.0; 2]);
    crate::common::assert_err(
        batch_norm_relu_backward(
            1,
            2,
            3,
            &[0.5; 6],
            &[0.5; 6],
            (&[1.0; 2], &[0.0; 1]),
            &[0.0; 2],
            &[1.0; 2],
            &mut dx,
            &mut dg,
            &mut db,
        ),
        "batch_norm_relu_backward",
        "`beta` has 1",
    );
}

#[test]
fn fused_batch_norm_add_relu_matches_unfused_ops() {
    use scalarize_kernels::cpu::{
        add, batch_norm_add_relu_backward, batch_norm_add_relu_forward_train, relu_backward,
        relu_forward,
    };
    let mut r = rng(26);
    for &(n, c, hw) in &[(1, 3, 7), (2, 4, 17), (3, 16, 1024), (5, 32, 16)] {
        let x = randv(&mut r, n * c * hw);
        let res = randv(&mut r, x.len());
        let g = randv(&mut r, c);
        let b = randv(&mut r, c);
        let dy = randv(&mut r, x.len());
        let eps = EPS as f32;
        // Unfused: bn, add, relu; relu backward, then the add passes the gradient to both.
        let len = x.len();
        let (mut z, mut s, mut y1) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        let (mut m1, mut i1) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_forward_train(n, c, hw, &x, &g, &b, eps, &mut z, &mut m1, &mut i1).unwrap();
        add(&z, &res, &mut s).unwrap();
        relu_forward(&s, &mut y1).unwrap();
        let mut ds = vec![0.0; len];
        relu_backward(&s, &dy, &mut ds).unwrap();
        let (mut dx1, mut dg1, mut db1) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
        batch_norm_backward(
            n, c, hw, &x, &ds, &g, &m1, &i1, &mut dx1, &mut dg1, &mut db1,
        )
        .unwrap();
        // Fused, outputs poisoned so that an unwritten element shows.
        let mut y2 = vec![f32::NAN; len];
        let (mut m2, mut i2) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        batch_norm_add_relu_forward_train(
            n, c, hw, &x, &res, &g, &b, eps, &mut y2, &mut m2, &mut i2,
        )
        .unwrap();
        assert_close("add-relu forward", &y2, &f64s(&y1), 1e-6);
        assert_close("add-relu mean", &m2, &f64s(&m1), 1e-6);
        assert_close("add-relu invstd", &i2, &f64s(&i1), 1e-6);
        assert!(y2.contains(&0.0) && y2.iter().any(|&v| v > 0.0));
        let (mut dx2, mut dr2) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        let (mut dg2, mut db2) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        batch_norm_add_relu_backward(
            n, c, hw, &x, &y2, &dy, &g, &m2, &i2, &mut dx2, &mut dr2, &mut dg2, &mut db2,
        )
        .unwrap();
        assert_close("add-relu dresidual", &dr2, &f64s(&ds), 0.0);
        assert_close("add-relu dx", &dx2, &f64s(&dx1), 1e-5);
        assert_close("add-relu dgamma", &dg2, &f64s(&dg1), 1e-5);
        assert_close("add-relu dbeta", &db2, &f64s(&db1), 1e-5);
    }
    let mut y = vec![0.0; 6];
    let (mut m, mut s) = (vec![0.0; 2], vec![0.0; 2]);
    crate::common::assert_err(
        batch_norm_add_relu_forward_train(
            1, 2, 3, &[0.5; 6], &[0.5; 4], &[1.0; 2], &[0.0; 2], 1e-5, &mut y, &mut m, &mut s,
        ),
        "batch_norm_add_relu_forward_train",
        "`residual` has 4",
    );
}

#[test]
fn batch_norm_statistics_survive_a_large_mean() {
    // Values 1000 + small noise: a one-pass E[x²] − E[x]² in f32 would lose the variance.
    let mut r = rng(27);
    let (n, c, hw) = (4, 3, 50);
    let x: Vec<f32> = randv(&mut r, n * c * hw)
        .iter()
        .map(|v| 1000.0 + 0.01 * v)
        .collect();
    let (g, b) = (vec![1.0f32; c], vec![0.0f32; c]);
    let (mut y, mut m, mut s) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    batch_norm_forward_train(n, c, hw, &x, &g, &b, EPS as f32, &mut y, &mut m, &mut s).unwrap();
    let (want, mean, var) = naive_bn(n, c, hw, &f64s(&x), &[1.0; 3], &[0.0; 3]);
    for ch in 0..c {
        let is = 1.0 / (var[ch] + EPS).sqrt();
        assert!(
            (s[ch] as f64 - is).abs() < 1e-4 * is,
            "invstd {} vs {is}",
            s[ch]
        );
        assert!((m[ch] as f64 - mean[ch]).abs() < 1e-4);
    }
    // Normalised outputs: x·scale + shift cancels ~1.7e5 against ~1.7e5 in f32 (ulp 0.016).
    assert_close("large-mean y", &y, &want, 2e-2);
}
