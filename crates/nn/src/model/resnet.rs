//! ResNet forward pass (torchvision bottleneck v1.5, CIFAR stem) over a [`ParamStore`].

use scalarize_autograd::{BnEpilogue, ParamStore, Tensor};

use crate::error::Result;
use crate::layout::resnet::resnet_blocks;
use crate::spec::ModelSpec;

/// BatchNorm epsilon (PyTorch default).
pub const BN_EPS: f32 = 1e-5;

/// Conv (no bias) then BN, then ReLU if asked (fused into the BN kernel).
#[allow(clippy::too_many_arguments)]
fn conv_bn(
    store: &mut ParamStore,
    conv: &str,
    bn: &str,
    x: &Tensor,
    stride: usize,
    pad: usize,
    train: bool,
    momentum: f32,
    relu: bool,
) -> Result<Tensor> {
    let epilogue = if relu {
        BnEpilogue::Relu
    } else {
        BnEpilogue::None
    };
    conv_bn_with(
        store,
        (conv, bn),
        x,
        (stride, pad),
        (train, momentum),
        epilogue,
    )
}

/// Conv (no bias) then BN with `epilogue`.
fn conv_bn_with(
    store: &mut ParamStore,
    (conv, bn): (&str, &str),
    x: &Tensor,
    (stride, pad): (usize, usize),
    (train, momentum): (bool, f32),
    epilogue: BnEpilogue<'_>,
) -> Result<Tensor> {
    let w = store.get(&format!("{conv}.weight"))?.clone();
    let y = x.conv2d(&w, None, stride, pad)?;
    Ok(store.batch_norm_with(bn, &y, train, momentum, BN_EPS, epilogue)?)
}

/// Runs the backbone on `x` `[n, c, h, w]`; returns the last feature map `[n, 32*base, h/8, w/8]`.
/// In training mode BN uses batch statistics and updates the running ones.
pub fn resnet_forward(
    store: &mut ParamStore,
    spec: &ModelSpec,
    x: &Tensor,
    train: bool,
    momentum: f32,
) -> Result<Tensor> {
    let m = momentum;
    let mut h = conv_bn(
        store,
        "backbone.conv1",
        "backbone.bn1",
        x,
        1,
        1,
        train,
        m,
        true,
    )?;
    for b in resnet_blocks(spec) {
        let p = format!("backbone.layer{}.{}", b.stage, b.index);
        let o = conv_bn(
            store,
            &format!("{p}.conv1"),
            &format!("{p}.bn1"),
            &h,
            1,
            0,
            train,
            m,
            true,
        )?;
        let o = conv_bn(
            store,
            &format!("{p}.conv2"),
            &format!("{p}.bn2"),
            &o,
            b.stride,
            1,
            train,
            m,
            true,
        )?;
        let shortcut = if b.downsample {
            conv_bn(
                store,
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                &h,
                b.stride,
                0,
                train,
                m,
                false,
            )?
        } else {
            h
        };
        // relu(bn3(conv3(o)) + shortcut) in one kernel.
        h = conv_bn_with(
            store,
            (&format!("{p}.conv3"), &format!("{p}.bn3")),
            &o,
            (1, 0),
            (train, m),
            BnEpilogue::AddRelu(&shortcut),
        )?;
    }
    Ok(h)
}
