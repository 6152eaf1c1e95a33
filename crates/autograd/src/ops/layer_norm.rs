//! Layer normalisation over the last axis (ViT pre-norm blocks).

use scalarize_kernels::cpu;

use super::output;
use crate::error::{Result, invalid};
use crate::node::attach;
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
}
