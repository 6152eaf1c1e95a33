//! Bad input gives an error naming the op, the shapes and what was expected, never a panic.

use scalarize_autograd::{AutogradError, BatchNormMode, Tensor};

fn t(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new((0..n).map(|i| i as f32 * 0.1).collect(), shape).unwrap()
}

fn msg<T: std::fmt::Debug>(r: Result<T, AutogradError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn construction() {
    assert!(msg(Tensor::new(vec![1.0; 5], &[2, 3])).contains("expected 6"));
    assert!(msg(Tensor::zeros(&[2, 0, 3])).contains("empty"));
    assert!(msg(t(&[2, 3]).item()).contains("item"));
    assert_eq!(Tensor::scalar(2.5).item().unwrap(), 2.5);
}

#[test]
fn shape_mismatches_name_op_and_shapes() {
    let m = msg(t(&[2, 3]).matmul(&t(&[4, 5])));
    assert!(
        m.contains("matmul") && m.contains("[2, 3]") && m.contains("[4, 5]"),
        "{m}"
    );
    assert!(msg(t(&[2, 3, 4]).matmul(&t(&[4, 5]))).contains("rank-2"));
    assert!(msg(t(&[2, 2, 3]).bmm(&t(&[3, 3, 4]))).contains("bmm"));
    let m = msg(t(&[2, 3]).add(&t(&[3, 2])));
    assert!(m.contains("add") && m.contains("[2, 3]"), "{m}");
    assert!(msg(t(&[2, 3]).add_bias(&t(&[2]))).contains("add_bias"));
    assert!(msg(t(&[2, 3, 4, 4]).add_channel_bias(&t(&[4]))).contains("add_channel_bias"));
    assert!(msg(t(&[2, 3]).reshape(&[4, 2])).contains("reshape"));
    assert!(msg(t(&[2, 3]).permute(&[0, 0])).contains("permute"));
    assert!(msg(t(&[2, 3]).transpose(0, 2)).contains("transpose"));
    assert!(msg(t(&[2, 3]).linear(&t(&[4, 2]), None)).contains("linear"));
    assert!(msg(t(&[2, 3]).sum_axis(2)).contains("axis 2"));
}

#[test]
fn conv_pool_norm_errors() {
    let m = msg(t(&[2, 3, 5]).conv2d(&t(&[4, 3, 3, 3]), None, 1, 0));
    assert!(m.contains("conv2d") && m.contains("[2, 3, 5]"), "{m}");
    assert!(msg(t(&[1, 2, 5, 5]).conv2d(&t(&[4, 3, 3, 3]), None, 1, 0)).contains("c_in"));
    // Kernel larger than the padded input: the kernel's own check, wrapped.
    assert!(msg(t(&[1, 1, 2, 2]).conv2d(&t(&[1, 1, 5, 5]), None, 1, 0)).contains("conv2d"));
    assert!(
        t(&[1, 1, 4, 4])
            .conv2d(&t(&[1, 1, 3, 3]), None, 0, 0)
            .is_err(),
        "stride 0"
    );
    assert!(msg(t(&[2, 3]).max_pool2d(2, 2, 0)).contains("max_pool2d"));
    assert!(msg(t(&[2, 3]).global_avg_pool()).contains("global_avg_pool"));
    let m =
        msg(t(&[2, 3, 2, 2]).batch_norm(&t(&[2]), &t(&[3]), BatchNormMode::TrainNoRunning, 1e-5));
    assert!(m.contains("batch_norm"), "{m}");
    let rm = [0.0f32; 2];
    let rv = [1.0f32; 2];
    let eval = BatchNormMode::Eval {
        running_mean: &rm,
        running_var: &rv,
    };
    assert!(
        t(&[2, 3, 2, 2])
            .batch_norm(&t(&[3]), &t(&[3]), eval, 1e-5)
            .is_err()
    );
    assert!(msg(t(&[2, 4]).layer_norm(&t(&[3]), &t(&[4]), 1e-6)).contains("layer_norm"));
    assert!(msg(t(&[2, 3]).upsample_bilinear(4, 4)).contains("upsample_bilinear"));
}

#[test]
fn concat_narrow_split_errors() {
    assert!(msg(Tensor::concat(&[], 0)).contains("concat"));
    assert!(msg(Tensor::concat(&[&t(&[2, 3]), &t(&[2, 4])], 0)).contains("part 1"));
    assert!(msg(t(&[4, 3]).narrow(0, 3, 2)).contains("narrow"));
    assert!(msg(t(&[4, 3]).narrow(0, 1, 0)).contains("non-empty"));
    assert!(msg(t(&[4, 3]).split(0, &[1, 2])).contains("split"));
    assert!(msg(t(&[4, 3]).select_rows(&[1, 4])).contains("index 4"));
    assert!(msg(t(&[4, 3]).select_rows(&[])).contains("select_rows"));
}

#[test]
fn loss_errors() {
    let logits = t(&[3, 4]);
    let m = msg(logits.cross_entropy(&[0, 4, 1], -100));
    assert!(m.contains("cross_entropy") && m.contains('4'), "{m}");
    assert!(msg(logits.cross_entropy(&[0, 1], -100)).contains("expected 3"));
    assert!(msg(logits.cross_entropy(&[0, -1, 1], -100)).contains("-1"));
    assert!(msg(logits.bce_with_logits(&[0.0; 5])).contains("bce_with_logits"));
    // All rows ignored: zero loss, zero gradient (documented), not an error.
    let leaf = logits.requires_grad();
    let l = leaf.cross_entropy(&[-100, -100, -100], -100).unwrap();
    assert_eq!(l.item().unwrap(), 0.0);
    let g = l.backward().unwrap();
    assert!(g.get(&leaf).unwrap().to_vec().iter().all(|&v| v == 0.0));
}

#[test]
fn overflowing_sizes_are_errors_not_panics() {
    assert!(Tensor::zeros(&[usize::MAX, 3]).is_err());
    assert!(t(&[2, 3]).reshape(&[usize::MAX, 2]).is_err());
    assert!(t(&[4, 3]).narrow(0, usize::MAX, 2).is_err());
    assert!(t(&[4, 3]).split(0, &[usize::MAX, 5]).is_err());
}
