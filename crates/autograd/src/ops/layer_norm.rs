//! Layer normalisation over the last axis (ViT pre-norm blocks).

use std::sync::Arc;

use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::{cpu, cuda};

use super::output;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::storage::Storage;
use crate::tensor::Tensor;

impl Tensor {
    /// Normalises `self` `[.., d]` over its last axis, then scales by `gamma` `[d]` and shifts
    /// by `beta` `[d]` (biased variance, as PyTorch).
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        let dim = self.shape().last().copied().unwrap_or(0);
        if self.rank() == 0 || gamma.shape() != [dim] || beta.shape() != [dim] {
            return Err(invalid(
                "layer_norm",
                format!(
                    "input {:?}, gamma {:?}, beta {:?}: expected input [.., d], gamma [d], beta [d]",
                    self.shape(),
                    gamma.shape(),
                    beta.shape()
                ),
            ));
        }
        let rows = self.numel() / dim;
        if let Some(g) = gpu::gpu_of("layer_norm", &[self, gamma, beta])? {
            return self.layer_norm_gpu(g, gamma, beta, (rows, dim), eps);
        }
        let mut y = output(self.numel());
        let mut mean = output(rows);
        let mut invstd = output(rows);
        cpu::layer_norm_forward(
            rows,
            dim,
            self.values()?,
            gamma.values()?,
            beta.values()?,
            eps,
            &mut y,
            &mut mean,
            &mut invstd,
        )?;
        let (x, g) = (self.detach(), gamma.detach());
        Ok(attach(
            "layer_norm",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self, gamma, beta],
            Box::new(move |dy, needs| {
                let mut dx = output(dy.len());
                let mut dgamma = output(dim);
                let mut dbeta = output(dim);
                cpu::layer_norm_backward(
                    rows,
                    dim,
                    x.values()?,
                    dy,
                    g.values()?,
                    &mean,
                    &invstd,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?;
                Ok(vec![
                    needs[0].then_some(dx),
                    needs[1].then_some(dgamma),
                    needs[2].then_some(dbeta),
                ])
            }),
        ))
    }

    /// [`Tensor::layer_norm`] on the device.
    fn layer_norm_gpu(
        &self,
        g: Arc<Gpu>,
        gamma: &Tensor,
        beta: &Tensor,
        (rows, dim): (usize, usize),
        eps: f32,
    ) -> Result<Tensor> {
        let mut y = g.alloc::<f32>(self.numel())?;
        let mut mean = g.alloc::<f32>(rows)?;
        let mut invstd = g.alloc::<f32>(rows)?;
        cuda::layer_norm::layer_norm_forward(
            &g,
            rows,
            dim,
            gpu::buf(self)?,
            gpu::buf(gamma)?,
            gpu::buf(beta)?,
            eps,
            &mut y,
            &mut mean,
            &mut invstd,
        )?;
        let (x, gm) = (self.detach(), gamma.detach());
        Ok(attach_any(
            "layer_norm",
            gpu::tensor(&g, y, self.shape().to_vec()),
            &[self, gamma, beta],
            Box::new(move |dy: &Storage, needs: &[bool]| {
                let dy = gpu::cotangent("layer_norm", dy)?;
                let (g, d) = (&dy.gpu, &dy.buf);
                let mut dx = g.alloc::<f32>(d.len())?;
                let mut dgamma = g.alloc::<f32>(dim)?;
                let mut dbeta = g.alloc::<f32>(dim)?;
                cuda::layer_norm::layer_norm_backward(
                    g,
                    rows,
                    dim,
                    gpu::buf(&x)?,
                    d,
                    gpu::buf(&gm)?,
                    &mean,
                    &invstd,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?;
                Ok(vec![
                    needs[0].then(|| gpu::grad(g, dx)),
                    needs[1].then(|| gpu::grad(g, dgamma)),
                    needs[2].then(|| gpu::grad(g, dbeta)),
                ])
            }),
        ))
    }
}
