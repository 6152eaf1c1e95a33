//! ViT layout in timm's `VisionTransformer` names (class token, learned position embedding,
//! pre-norm blocks, final norm), with timm's default initialisation.

use super::{Init, ParamInfo, ParamKind};
use crate::spec::{Family, ModelSpec};

/// timm's `trunc_normal_(std=.02)`: the cut is at absolute +-2 (so in effect none).
pub const TRUNC_02: Init = Init::TruncNormal {
    std: 0.02,
    lo: -2.0,
    hi: 2.0,
};

fn linear(out: &mut Vec<ParamInfo>, name: &str, o: usize, i: usize) {
    out.push(ParamInfo::new(
        format!("{name}.weight"),
        vec![o, i],
        ParamKind::Weight,
        TRUNC_02,
    ));
    out.push(ParamInfo::new(
        format!("{name}.bias"),
        vec![o],
        ParamKind::Bias,
        Init::Const(0.0),
    ));
}

fn layer_norm(out: &mut Vec<ParamInfo>, name: &str, d: usize) {
    out.push(ParamInfo::new(
        format!("{name}.weight"),
        vec![d],
        ParamKind::Norm,
        Init::Const(1.0),
    ));
    out.push(ParamInfo::new(
        format!("{name}.bias"),
        vec![d],
        ParamKind::Norm,
        Init::Const(0.0),
    ));
}

/// Number of patch tokens of a ViT spec (excluding the class token).
pub fn vit_num_patches(spec: &ModelSpec) -> usize {
    match spec.family {
        Family::Vit { patch, .. } => (spec.resolution / patch).pow(2),
        Family::ResNet { .. } => 0,
    }
}

/// The backbone tensors of a ViT spec (empty for a ResNet spec).
pub fn vit_params(spec: &ModelSpec) -> Vec<ParamInfo> {
    let Family::Vit { size, patch, depth } = spec.family else {
        return Vec::new();
    };
    let d = size.dim();
    let tokens = vit_num_patches(spec) + 1;
    let mut out = Vec::new();
    // timm: cls_token ~ N(0, 1e-6), pos_embed ~ trunc_normal(.02).
    out.push(ParamInfo::new(
        "backbone.cls_token".into(),
        vec![1, 1, d],
        ParamKind::Embedding,
        Init::Normal { std: 1e-6 },
    ));
    out.push(ParamInfo::new(
        "backbone.pos_embed".into(),
        vec![1, tokens, d],
        ParamKind::Embedding,
        TRUNC_02,
    ));
    // timm leaves the patch-embedding conv at PyTorch's default Conv2d init.
    let fan_in = spec.in_channels * patch * patch;
    let bound = 1.0 / (fan_in as f32).sqrt();
    out.push(ParamInfo::new(
        "backbone.patch_embed.proj.weight".into(),
        vec![d, spec.in_channels, patch, patch],
        ParamKind::Weight,
        Init::Uniform { bound },
    ));
    out.push(ParamInfo::new(
        "backbone.patch_embed.proj.bias".into(),
        vec![d],
        ParamKind::Bias,
        Init::Uniform { bound },
    ));
    for i in 0..depth {
        let p = format!("backbone.blocks.{i}");
        layer_norm(&mut out, &format!("{p}.norm1"), d);
        linear(&mut out, &format!("{p}.attn.qkv"), 3 * d, d);
        linear(&mut out, &format!("{p}.attn.proj"), d, d);
        layer_norm(&mut out, &format!("{p}.norm2"), d);
        linear(&mut out, &format!("{p}.mlp.fc1"), 4 * d, d);
        linear(&mut out, &format!("{p}.mlp.fc2"), d, 4 * d);
    }
    layer_norm(&mut out, "backbone.norm", d);
    out
}
