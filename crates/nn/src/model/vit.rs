//! ViT forward pass (timm `VisionTransformer`: class token, learned position embedding,
//! pre-norm blocks with multi-head self-attention and a GELU MLP, final LayerNorm).

use scalarize_autograd::{ParamStore, Tensor};

use crate::error::{NnError, Result};
use crate::spec::{Family, ModelSpec};

/// LayerNorm epsilon of timm's ViT.
pub const LN_EPS: f32 = 1e-6;

fn p(store: &ParamStore, name: &str) -> Result<Tensor> {
    Ok(store.get(name)?.clone())
}

fn linear(store: &ParamStore, prefix: &str, x: &Tensor) -> Result<Tensor> {
    let w = p(store, &format!("{prefix}.weight"))?;
    let b = p(store, &format!("{prefix}.bias"))?;
    Ok(x.linear(&w, Some(&b))?)
}

fn layer_norm(store: &ParamStore, prefix: &str, x: &Tensor) -> Result<Tensor> {
    let g = p(store, &format!("{prefix}.weight"))?;
    let b = p(store, &format!("{prefix}.bias"))?;
    Ok(x.layer_norm(&g, &b, LN_EPS)?)
}

/// Multi-head self-attention of `x` `[n, t, d]` with `heads` heads (timm `Attention`): the
/// qkv projection, the fused attention core (no split / permute copies), the output projection.
fn attention(store: &ParamStore, prefix: &str, x: &Tensor, heads: usize) -> Result<Tensor> {
    let qkv = linear(store, &format!("{prefix}.qkv"), x)?;
    let o = qkv.self_attention(heads)?;
    linear(store, &format!("{prefix}.proj"), &o)
}

/// Runs the backbone on `x` `[n, c, h, w]`; returns the final-normed tokens `[n, 1 + L, d]`
/// (class token first, then the patches in row-major order).
pub fn vit_forward(store: &ParamStore, spec: &ModelSpec, x: &Tensor) -> Result<Tensor> {
    let Family::Vit { size, patch, depth } = spec.family else {
        return Err(NnError::invalid(
            "vit_forward",
            format!("`{spec}` is not a ViT spec"),
        ));
    };
    let n = x.shape()[0];
    let d = size.dim();
    let w = p(store, "backbone.patch_embed.proj.weight")?;
    let b = p(store, "backbone.patch_embed.proj.bias")?;
    let emb = x.conv2d(&w, Some(&b), patch, 0)?;
    let l = emb.shape()[2] * emb.shape()[3];
    let tokens = emb.reshape(&[n, d, l])?.permute(&[0, 2, 1])?;
    // Broadcast the class token over the batch: zeros [n, 1, d] + cls [1, 1, d].
    let token = p(store, "backbone.cls_token")?;
    // The zeros are made on the token's device (no upload per step).
    let cls = Tensor::zeros_like_device(&[n, 1, d], &token)?.add_bias(&token)?;
    let mut h = Tensor::concat(&[&cls, &tokens], 1)?.add_bias(&p(store, "backbone.pos_embed")?)?;
    for i in 0..depth {
        let pre = format!("backbone.blocks.{i}");
        let a = layer_norm(store, &format!("{pre}.norm1"), &h)?;
        h = h.add(&attention(
            store,
            &format!("{pre}.attn"),
            &a,
            size.num_heads(),
        )?)?;
        let m = layer_norm(store, &format!("{pre}.norm2"), &h)?;
        let m = linear(store, &format!("{pre}.mlp.fc1"), &m)?.gelu()?;
        h = h.add(&linear(store, &format!("{pre}.mlp.fc2"), &m)?)?;
    }
    layer_norm(store, "backbone.norm", &h)
}
