//! Softmax along the last axis (attention weights, probabilities).

use std::sync::Arc;

use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::{cpu, cuda};

use super::zeros;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// The device softmax over rows of `dim`; backward reads the saved output.
fn softmax_on_gpu(x: &Tensor, g: Arc<Gpu>, rows: usize, dim: usize) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(x.numel())?;
    cuda::softmax::softmax_forward(&g, rows, dim, gpu::buf(x)?, &mut y)?;
    let out = gpu::tensor(&g, y, x.shape().to_vec());
    // Saved untracked: the node must not own its own output (no Arc cycle).
    let saved = out.detach();
    Ok(attach_any(
        "softmax",
        out,
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("softmax", dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(dy.buf.len())?;
            cuda::softmax::softmax_backward(g, rows, dim, gpu::buf(&saved)?, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

impl Tensor {
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(invalid(
                "softmax",
                "rank-0 tensor: expected at least one axis",
            ));
        }
        let dim = self.shape()[self.rank() - 1];
        let rows = self.numel() / dim;
        if let Some(g) = gpu::gpu_of("softmax", &[self])? {
            return softmax_on_gpu(self, g, rows, dim);
        }
        let mut y = zeros(self.numel());
        cpu::softmax_forward(rows, dim, self.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        // Saved untracked: the node must not own its own output (no Arc cycle).
        let saved = out.detach();
        Ok(attach(
            "softmax",
            out,
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(dy.len());
                cpu::softmax_backward(rows, dim, saved.values()?, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
