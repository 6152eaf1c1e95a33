//! Softmax along the last axis (attention weights, probabilities).

use scalarize_kernels::cpu;

use super::zeros;
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

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
