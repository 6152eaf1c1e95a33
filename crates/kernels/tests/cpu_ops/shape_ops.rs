use crate::common::*;
use scalarize_kernels::cpu::{
    add, add_bias_channels, add_bias_rows, axpy_acc, bias_grad_channels, bias_grad_rows, concat,
    inverse_perm, mean, mean_axis, mul, permute, scale, split, sub, sum, sum_axis, transpose2d,
};

#[test]
fn elementwise_ops() {
    let mut r = rng(70);
    for len in [1usize, 17, 40_000] {
        let a = randv(&mut r, len);
        let b = randv(&mut r, len);
        let (a64, b64) = (f64s(&a), f64s(&b));
        let mut y = vec![f32::NAN; len];
        add(&a, &b, &mut y).unwrap();
        assert_close(
            "add",
            &y,
            &a64.iter().zip(&b64).map(|(u, v)| u + v).collect::<Vec<_>>(),
            1e-7,
        );
        sub(&a, &b, &mut y).unwrap();
        assert_close(
            "sub",
            &y,
            &a64.iter().zip(&b64).map(|(u, v)| u - v).collect::<Vec<_>>(),
            1e-7,
        );
        mul(&a, &b, &mut y).unwrap();
        assert_close(
            "mul",
            &y,
            &a64.iter().zip(&b64).map(|(u, v)| u * v).collect::<Vec<_>>(),
            1e-7,
        );
        scale(&a, -1.5, &mut y).unwrap();
        assert_close(
            "scale",
            &y,
            &a64.iter().map(|u| -1.5 * u).collect::<Vec<_>>(),
            1e-7,
        );
        let mut acc = b.clone();
        axpy_acc(0.25, &a, &mut acc).unwrap();
        let want: Vec<f64> = a64.iter().zip(&b64).map(|(u, v)| v + 0.25 * u).collect();
        assert_close("axpy_acc", &acc, &want, 1e-7);
    }
}

#[test]
fn broadcast_biases_and_their_gradients() {
    let mut r = rng(71);
    for &(n, c, hw) in &[(1, 3, 5), (2, 4, 1), (3, 16, 1024)] {
        let x = randv(&mut r, n * c * hw);
        let bias = randv(&mut r, c);
        let mut y = vec![f32::NAN; x.len()];
        add_bias_channels(n, c, hw, &x, &bias, &mut y).unwrap();
        let want: Vec<f64> = (0..x.len())
            .map(|i| x[i] as f64 + bias[(i / hw) % c] as f64)
            .collect();
        assert_close("add_bias_channels", &y, &want, 1e-7);
        let mut db = vec![f32::NAN; c];
        bias_grad_channels(n, c, hw, &x, &mut db).unwrap();
        let mut want = vec![0.0f64; c];
        for (i, &v) in x.iter().enumerate() {
            want[(i / hw) % c] += v as f64;
        }
        assert_close("bias_grad_channels", &db, &want, 1e-6);
    }
    for &(rows, dim) in &[(1, 7), (5, 3), (64, 1000)] {
        let x = randv(&mut r, rows * dim);
        let bias = randv(&mut r, dim);
        let mut y = vec![f32::NAN; x.len()];
        add_bias_rows(rows, dim, &x, &bias, &mut y).unwrap();
        let want: Vec<f64> = (0..x.len())
            .map(|i| x[i] as f64 + bias[i % dim] as f64)
            .collect();
        assert_close("add_bias_rows", &y, &want, 1e-7);
        let mut db = vec![f32::NAN; dim];
        bias_grad_rows(rows, dim, &x, &mut db).unwrap();
        let want: Vec<f64> = (0..dim)
            .map(|j| (0..rows).map(|r| x[r * dim + j] as f64).sum())
            .collect();
        assert_close("bias_grad_rows", &db, &want, 1e-6);
    }
}

#[test]
fn reductions() {
    let mut r = rng(72);
    let x = randv(&mut r, 1001);
    let s: f64 = f64s(&x).iter().sum();
    assert!((sum(&x).unwrap() as f64 - s).abs() < 1e-5);
    assert!((mean(&x).unwrap() as f64 - s / 1001.0).abs() < 1e-7);
    // Large constant values: f64 accumulation keeps the exact answer.
    let big = vec![0.1f32; 10_000_000];
    assert!((sum(&big).unwrap() - 1_000_000.0).abs() < 1.0);
    for &(outer, len, inner) in &[(1, 5, 1), (3, 4, 7), (2, 1, 3)] {
        let x = randv(&mut r, outer * len * inner);
        let mut y = vec![f32::NAN; outer * inner];
        sum_axis(outer, len, inner, &x, &mut y).unwrap();
        let mut want = vec![0.0f64; outer * inner];
        for o in 0..outer {
            for l in 0..len {
                for i in 0..inner {
                    want[o * inner + i] += x[(o * len + l) * inner + i] as f64;
                }
            }
        }
        assert_close("sum_axis", &y, &want, 1e-6);
        mean_axis(outer, len, inner, &x, &mut y).unwrap();
        let want: Vec<f64> = want.iter().map(|v| v / len as f64).collect();
        assert_close("mean_axis", &y, &want, 1e-6);
    }
}

/// Reference permutation through explicit multi-indices.
fn naive_permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let total: usize = shape.iter().product();
    let mut y = vec![0.0; total];
    for (flat_in, &v) in x.iter().enumerate() {
        // Multi-index of the input element.
        let mut idx = vec![0; shape.len()];
        let mut rem = flat_in;
        for a in (0..shape.len()).rev() {
            idx[a] = rem % shape[a];
            rem /= shape[a];
        }
        let mut flat_out = 0;
        for (a, &p) in perm.iter().enumerate() {
            flat_out = flat_out * out_shape[a] + idx[p];
        }
        y[flat_out] = v as f64;
    }
    y
}

#[test]
fn permute_transpose_inverse() {
    let mut r = rng(73);
    let cases: &[(&[usize], &[usize])] = &[
        (&[5], &[0]),
        (&[3, 4], &[1, 0]),
        // ViT attention: [B, T, 3, H, D] -> [3, B, H, T, D].
        (&[2, 5, 3, 2, 4], &[2, 0, 3, 1, 4]),
        (&[2, 3, 4, 5], &[0, 2, 1, 3]),
        (&[2, 3, 1, 2, 3, 2], &[5, 4, 3, 2, 1, 0]),
        // Large: parallel path, [B, H, T, D] -> [B, T, H, D].
        (&[4, 6, 65, 32], &[0, 2, 1, 3]),
    ];
    for &(shape, perm) in cases {
        let total: usize = shape.iter().product();
        let x = randv(&mut r, total);
        let mut y = vec![f32::NAN; total];
        permute(&x, shape, perm, &mut y).unwrap();
        assert_close(
            &format!("permute {shape:?} {perm:?}"),
            &y,
            &naive_permute(&x, shape, perm),
            0.0,
        );
        // Undo with the inverse permutation.
        let inv = inverse_perm(perm);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let mut back = vec![f32::NAN; total];
        permute(&y, &out_shape, &inv, &mut back).unwrap();
        assert_eq!(back, x, "inverse of {perm:?}");
    }
    for &(rows, cols) in &[(1, 1), (3, 7), (37, 45), (200, 301)] {
        let x = randv(&mut r, rows * cols);
        let mut y = vec![f32::NAN; x.len()];
        transpose2d(rows, cols, &x, &mut y).unwrap();
        assert_close(
            &format!("transpose2d {rows}x{cols}"),
            &y,
            &naive_permute(&x, &[rows, cols], &[1, 0]),
            0.0,
        );
    }
}

#[test]
fn concat_and_split_roundtrip() {
    let mut r = rng(74);
    let outer = 3;
    let inners = [2usize, 1, 4];
    let parts: Vec<Vec<f32>> = inners.iter().map(|&i| randv(&mut r, outer * i)).collect();
    let refs: Vec<&[f32]> = parts.iter().map(|p| p.as_slice()).collect();
    let mut y = vec![f32::NAN; outer * 7];
    concat(outer, &refs, &inners, &mut y).unwrap();
    // Row o of y is part0 row o, part1 row o, part2 row o.
    for o in 0..outer {
        let mut want = Vec::new();
        for (p, &i) in parts.iter().zip(&inners) {
            want.extend_from_slice(&p[o * i..(o + 1) * i]);
        }
        assert_eq!(&y[o * 7..(o + 1) * 7], want.as_slice());
    }
    let mut outs: Vec<Vec<f32>> = inners.iter().map(|&i| vec![f32::NAN; outer * i]).collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    split(outer, &y, &inners, &mut views).unwrap();
    assert_eq!(outs, parts);
}
