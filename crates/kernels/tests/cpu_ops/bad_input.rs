//! Wrong lengths, empty dimensions and invalid indices give errors naming the op, never panics.

use crate::common::assert_err;
use scalarize_kernels::cpu::*;

#[test]
fn gemm_and_conv_reject_bad_shapes() {
    let a = vec![1.0f32; 6];
    let mut c = vec![0.0f32; 4];
    assert_err(
        matmul(2, 3, 2, &a, false, &a[..5], false, &mut c, 1.0, 0.0),
        "matmul",
        "`b` has 5",
    );
    assert_err(
        matmul(0, 3, 2, &a, false, &a, false, &mut c, 1.0, 0.0),
        "matmul",
        "empty",
    );
    assert_err(
        matmul(2, 3, 2, &a, false, &a, false, &mut c[..3], 1.0, 0.0),
        "matmul",
        "[2, 2]",
    );
    assert_err(
        matmul_batched(2, 1, 3, 2, &a, false, &a, false, &mut c, 1.0, 0.0),
        "matmul_batched",
        "`b` has 6",
    );

    let s = Conv2dShape {
        n: 1,
        c_in: 2,
        h: 4,
        w: 4,
        c_out: 3,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let x = vec![0.5f32; 32];
    let w = vec![0.5f32; 54];
    let mut y = vec![0.0f32; 48];
    assert!(conv2d_forward(&s, &x, &w, None, &mut y).is_ok());
    assert_err(
        conv2d_forward(&s, &x[..31], &w, None, &mut y),
        "conv2d_forward",
        "`x` has 31",
    );
    assert_err(
        conv2d_forward(&s, &x, &w[..50], None, &mut y),
        "conv2d_forward",
        "kh=3",
    );
    assert_err(
        conv2d_forward(&s, &x, &w, Some(&[1.0]), &mut y),
        "conv2d_forward",
        "bias",
    );
    let zero = Conv2dShape { c_in: 0, ..s };
    assert_err(
        conv2d_forward(&zero, &[], &[], None, &mut y),
        "conv2d_forward",
        "empty",
    );
    let stride0 = Conv2dShape { stride: 0, ..s };
    assert_err(
        conv2d_forward(&stride0, &x, &w, None, &mut y),
        "conv2d_forward",
        "stride",
    );
    let big = Conv2dShape {
        kh: 7,
        kw: 7,
        pad: 0,
        ..s
    };
    assert_err(
        conv2d_forward(&big, &x, &w, None, &mut y),
        "conv2d_forward",
        "larger than",
    );
    let mut dx = vec![0.0f32; 31];
    assert_err(
        conv2d_backward(&s, &x, &w, &y, Some(&mut dx), None, None),
        "conv2d_backward",
        "`dx`",
    );
    assert!(s.validate().is_ok());
    assert!(big.validate().is_err());
}

#[test]
fn norms_and_pointwise_reject_bad_shapes() {
    let x = vec![0.5f32; 12];
    let mut y = vec![0.0f32; 12];
    let (mut m, mut s) = (vec![0.0f32; 3], vec![0.0f32; 3]);
    let g = vec![1.0f32; 3];
    assert_err(
        batch_norm_forward_train(2, 3, 2, &x, &g[..2], &g, 1e-5, &mut y, &mut m, &mut s),
        "batch_norm_forward_train",
        "gamma",
    );
    assert_err(
        batch_norm_forward_train(2, 3, 0, &x, &g, &g, 1e-5, &mut y, &mut m, &mut s),
        "batch_norm_forward_train",
        "empty",
    );
    let (mut rm, mut rv) = (vec![0.0f32; 3], vec![1.0f32; 3]);
    assert_err(
        batch_norm_update_running(3, 1, &m, &s, 1e-5, 0.1, &mut rm, &mut rv),
        "batch_norm_update_running",
        "more than 1 value",
    );
    let neg = vec![-1.0f32; 3];
    assert_err(
        batch_norm_forward_eval(2, 3, 2, &x, &g, &g, &m, &neg, 1e-5, &mut y),
        "batch_norm_forward_eval",
        "running_var",
    );
    let (mut dg, mut db) = (vec![0.0f32; 3], vec![0.0f32; 3]);
    assert_err(
        batch_norm_backward(2, 3, 2, &x, &x[..11], &g, &m, &s, &mut y, &mut dg, &mut db),
        "batch_norm_backward",
        "`dy` has 11",
    );
    assert_err(
        layer_norm_forward(4, 3, &x, &g, &g, 1e-6, &mut y, &mut m, &mut s),
        "layer_norm_forward",
        "save_mean",
    );
    assert_err(relu_forward(&x, &mut y[..5]), "relu_forward", "`y` has 5");
    assert_err(
        gelu_backward(&x, &x[..3], &mut y),
        "gelu_backward",
        "`dy` has 3",
    );
    assert_err(relu_forward(&[], &mut []), "relu_forward", "empty");
    assert_err(
        softmax_forward(3, 5, &x, &mut y),
        "softmax_forward",
        "rows=3, dim=5",
    );
    assert_err(add(&x, &x[..4], &mut y), "add", "`b` has 4");
    assert_err(axpy_acc(1.0, &x[..4], &mut y), "axpy_acc", "`y` has 12");
    assert_err(
        add_bias_channels(2, 3, 2, &x, &g[..1], &mut y),
        "add_bias_channels",
        "bias",
    );
    assert_err(
        bias_grad_rows(4, 3, &x, &mut db[..2]),
        "bias_grad_rows",
        "dbias",
    );
    assert_err(sum(&[]), "sum", "empty");
    assert_err(mean_axis(2, 0, 3, &[], &mut y), "mean_axis", "empty");
}

#[test]
fn shape_ops_reject_bad_input() {
    let x = vec![0.5f32; 24];
    let mut y = vec![0.0f32; 24];
    assert_err(
        permute(&x, &[2, 3, 4], &[0, 0, 1], &mut y),
        "permute",
        "not a permutation",
    );
    assert_err(
        permute(&x, &[2, 3, 4], &[0, 1], &mut y),
        "permute",
        "not a permutation",
    );
    assert_err(
        permute(&x, &[2, 3, 5], &[0, 2, 1], &mut y),
        "permute",
        "`x` has 24",
    );
    assert_err(
        permute(&x, &[1; 7], &[0, 1, 2, 3, 4, 5, 6], &mut y),
        "permute",
        "rank 7",
    );
    assert_err(transpose2d(5, 5, &x, &mut y), "transpose2d", "rows=5");
    assert_err(
        concat(2, &[&x[..4], &x[..6]], &[2, 2], &mut y),
        "concat",
        "parts[1]",
    );
    assert_err(
        concat(2, &[&x[..4]], &[2, 2], &mut y),
        "concat",
        "1 parts but 2",
    );
    let mut a = vec![0.0f32; 4];
    assert_err(split(2, &x, &[2], &mut [&mut a]), "split", "`x` has 24");
}

#[test]
fn losses_pools_upsample_reject_bad_input() {
    let logits = vec![0.5f32; 6];
    let mut l = vec![0.0f32; 2];
    assert_err(
        cross_entropy_forward(2, 3, &logits, &[0, 3], -100, &mut l),
        "cross_entropy_forward",
        "target 3 of row 1",
    );
    assert_err(
        cross_entropy_forward(2, 3, &logits, &[-2, 0], -100, &mut l),
        "cross_entropy_forward",
        "target -2 of row 0",
    );
    let mut d = vec![0.0f32; 6];
    assert_err(
        cross_entropy_backward(2, 3, &logits, &[0, 7], -100, 1.0, &mut d),
        "cross_entropy_backward",
        "target 7",
    );
    assert_err(
        cross_entropy_forward(2, 3, &logits, &[0], -100, &mut l),
        "cross_entropy_forward",
        "targets",
    );
    assert_err(
        bce_with_logits_forward(&logits, &[1.0], &mut d),
        "bce_with_logits_forward",
        "targets",
    );

    let s = Pool2dShape {
        n: 1,
        c: 1,
        h: 4,
        w: 4,
        kh: 2,
        kw: 2,
        stride: 2,
        pad: 0,
    };
    let x = vec![0.5f32; 16];
    let mut y = vec![0.0f32; 4];
    let mut am = vec![0u32; 4];
    assert!(max_pool2d_forward(&s, &x, &mut y, &mut am).is_ok());
    assert_err(
        avg_pool2d_forward(&s, &x[..15], &mut y),
        "avg_pool2d_forward",
        "`x` has 15",
    );
    let padded = Pool2dShape { pad: 2, ..s };
    assert_err(
        avg_pool2d_forward(&padded, &x, &mut y),
        "avg_pool2d_forward",
        "half the window",
    );
    let mut dx = vec![0.0f32; 16];
    assert_err(
        max_pool2d_backward(&s, &[0, 1, 2, 99], &y, &mut dx),
        "max_pool2d_backward",
        "argmax[3] = 99",
    );
    assert_err(
        global_avg_pool_forward(1, 4, 4, &x, &mut y[..3]),
        "global_avg_pool_forward",
        "`y` has 3",
    );
    assert_err(
        upsample_bilinear2d_forward(1, 1, 4, 4, 0, 8, &x, &mut y),
        "upsample_bilinear2d_forward",
        "empty",
    );
    assert_err(
        upsample_nearest2d_backward(1, 1, 4, 4, 8, 8, &y, &mut dx),
        "upsample_nearest2d_backward",
        "`dy` has 4",
    );
}
