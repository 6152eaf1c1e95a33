//! Fused self-attention core: packed qkv `[n, t, 3·d]` to merged heads `[n, t, d]`.

use std::sync::Arc;

use scalarize_kernels::cpu::{self, AttentionShape};
use scalarize_kernels::cuda::{self, Gpu};

use super::output;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// The device attention core; the probabilities `[n, heads, t, t]` stay in the closure for
/// the backward.
fn attention_on_gpu(x: &Tensor, g: Arc<Gpu>, s: AttentionShape, scale: f32) -> Result<Tensor> {
    let mut probs = g.alloc::<f32>(s.probs_len())?;
    let mut y = g.alloc::<f32>(s.out_len())?;
    cuda::attention::attention_forward(&g, s, scale, gpu::buf(x)?, &mut probs, &mut y)?;
    let saved = x.detach();
    Ok(attach_any(
        "self_attention",
        gpu::tensor(&g, y, vec![s.n, s.t, s.dim()]),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("self_attention", dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(s.qkv_len())?;
            let x = gpu::buf(&saved)?;
            cuda::attention::attention_backward(g, s, scale, x, &probs, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

impl Tensor {
    /// Multi-head self-attention of the packed projection `self` `[n, t, 3·d]` laid out
    /// `[n, t, 3, heads, d/heads]` (timm's qkv linear): per head softmax(q·kᵀ/√hd)·v, heads
    /// merged back to `[n, t, d]`. Equals the composed reshape / permute / split / scale /
    /// bmm_t / softmax / bmm / permute chain without its copies.
    pub fn self_attention(&self, heads: usize) -> Result<Tensor> {
        let ok = self.rank() == 3 && heads > 0 && self.shape()[2].is_multiple_of(3 * heads);
        if !ok {
            return Err(invalid(
                "self_attention",
                format!(
                    "input {:?} with {heads} heads: expected [n, t, 3·d] with d divisible by the heads",
                    self.shape()
                ),
            ));
        }
        let (n, t, d3) = (self.shape()[0], self.shape()[1], self.shape()[2]);
        let hd = d3 / 3 / heads;
        let s = AttentionShape { n, t, heads, hd };
        let scale = (hd as f32).powf(-0.5);
        if let Some(g) = gpu::gpu_of("self_attention", &[self])? {
            return attention_on_gpu(self, g, s, scale);
        }
        let mut probs = output(s.probs_len());
        let mut y = output(s.out_len());
        cpu::attention_forward(s, scale, self.values()?, &mut probs, &mut y)?;
        let x = self.detach();
        Ok(attach(
            "self_attention",
            Tensor::from_parts(y, vec![n, t, d3 / 3]),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = output(s.qkv_len());
                cpu::attention_backward(s, scale, x.values()?, &probs, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
