//! ResNet layout: torchvision ResNet v1.5 bottlenecks (stride on the 3x3 conv) with the CIFAR
//! stem (3x3 conv, stride 1, no max-pool).

use super::{Init, InitOptions, ParamInfo, ParamKind};
use crate::spec::{Family, ModelSpec, resnet_base_width};

/// Channel expansion of a bottleneck's last 1x1 conv.
pub const EXPANSION: usize = 4;

pub(crate) fn conv(out: &mut Vec<ParamInfo>, name: &str, c_out: usize, c_in: usize, k: usize) {
    out.push(ParamInfo::new(
        format!("{name}.weight"),
        vec![c_out, c_in, k, k],
        ParamKind::Weight,
        Init::KaimingNormalFanOut {
            fan_out: c_out * k * k,
        },
    ));
}

fn bn(out: &mut Vec<ParamInfo>, name: &str, c: usize, gamma: f32) {
    let mut push = |suffix: &str, kind, init| {
        out.push(ParamInfo::new(
            format!("{name}.{suffix}"),
            vec![c],
            kind,
            init,
        ))
    };
    push("weight", ParamKind::Norm, Init::Const(gamma));
    push("bias", ParamKind::Norm, Init::Const(0.0));
    push("running_mean", ParamKind::RunningMean, Init::Const(0.0));
    push("running_var", ParamKind::RunningVar, Init::Const(1.0));
}

/// One bottleneck block's shape: input channels, inner width, stride, whether it downsamples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    /// Stage index 1..=4.
    pub stage: usize,
    /// Block index within the stage.
    pub index: usize,
    /// Input channels.
    pub in_ch: usize,
    /// Inner width (`planes`); the output has `planes * 4` channels.
    pub planes: usize,
    /// Stride of the 3x3 conv (and of the downsample 1x1 conv).
    pub stride: usize,
    /// True when the shortcut is a 1x1 conv + BN.
    pub downsample: bool,
}

/// Every bottleneck of a ResNet spec, in order (empty for a ViT spec).
pub fn resnet_blocks(spec: &ModelSpec) -> Vec<BlockShape> {
    let (Family::ResNet { width, .. }, Some(blocks)) = (&spec.family, spec.resnet_blocks()) else {
        return Vec::new();
    };
    let base = resnet_base_width(*width);
    let mut in_ch = base;
    let mut out = Vec::new();
    for (s, &n) in blocks.iter().enumerate() {
        let planes = base << s;
        for j in 0..n {
            let stride = if j == 0 && s > 0 { 2 } else { 1 };
            let downsample = j == 0 && (stride != 1 || in_ch != planes * EXPANSION);
            out.push(BlockShape {
                stage: s + 1,
                index: j,
                in_ch,
                planes,
                stride,
                downsample,
            });
            in_ch = planes * EXPANSION;
        }
    }
    out
}

/// The backbone tensors of a ResNet spec (empty for a ViT spec).
pub fn resnet_params(spec: &ModelSpec, opts: InitOptions) -> Vec<ParamInfo> {
    let Family::ResNet { width, .. } = spec.family else {
        return Vec::new();
    };
    let base = resnet_base_width(width);
    let mut out = Vec::new();
    conv(&mut out, "backbone.conv1", base, spec.in_channels, 3);
    bn(&mut out, "backbone.bn1", base, 1.0);
    let last_gamma = if opts.zero_init_residual { 0.0 } else { 1.0 };
    for b in resnet_blocks(spec) {
        let p = format!("backbone.layer{}.{}", b.stage, b.index);
        conv(&mut out, &format!("{p}.conv1"), b.planes, b.in_ch, 1);
        bn(&mut out, &format!("{p}.bn1"), b.planes, 1.0);
        conv(&mut out, &format!("{p}.conv2"), b.planes, b.planes, 3);
        bn(&mut out, &format!("{p}.bn2"), b.planes, 1.0);
        conv(
            &mut out,
            &format!("{p}.conv3"),
            b.planes * EXPANSION,
            b.planes,
            1,
        );
        bn(
            &mut out,
            &format!("{p}.bn3"),
            b.planes * EXPANSION,
            last_gamma,
        );
        if b.downsample {
            conv(
                &mut out,
                &format!("{p}.downsample.0"),
                b.planes * EXPANSION,
                b.in_ch,
                1,
            );
            bn(
                &mut out,
                &format!("{p}.downsample.1"),
                b.planes * EXPANSION,
                1.0,
            );
        }
    }
    out
}
