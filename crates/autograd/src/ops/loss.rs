//! Losses on logits: softmax cross-entropy (with ignore_index) and sigmoid BCE.

use scalarize_kernels::cpu;

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

impl Tensor {
    /// Mean softmax cross-entropy of `self` `[rows, classes]` against class indices, over the
    /// rows whose target is not `ignore_index`; a rank-0 loss. With no valid row the loss is 0
    /// and so is its gradient (PyTorch would give NaN).
    pub fn cross_entropy(&self, targets: &[i64], ignore_index: i64) -> Result<Tensor> {
        expect_rank("cross_entropy", "logits", self, 2)?;
        let (rows, classes) = (self.shape()[0], self.shape()[1]);
        if targets.len() != rows {
            return Err(invalid(
                "cross_entropy",
                format!(
                    "{} targets for logits of shape {:?}, expected {rows}",
                    targets.len(),
                    self.shape()
                ),
            ));
        }
        let mut losses = zeros(rows);
        let valid = cpu::cross_entropy_forward(
            rows,
            classes,
            self.values()?,
            targets,
            ignore_index,
            &mut losses,
        )?;
        let loss = if valid == 0 {
            0.0
        } else {
            cpu::sum(&losses)? / valid as f32
        };
        let logits = self.detach();
        let targets = targets.to_vec();
        Ok(attach(
            "cross_entropy",
            Tensor::scalar(loss),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(rows * classes);
                if valid > 0 {
                    cpu::cross_entropy_backward(
                        rows,
                        classes,
                        logits.values()?,
                        &targets,
                        ignore_index,
                        dy[0] / valid as f32,
                        &mut dx,
                    )?;
                }
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Mean sigmoid binary cross-entropy of logits `self` against `targets` in [0, 1] (same
    /// element count), over all elements; a rank-0 loss.
    pub fn bce_with_logits(&self, targets: &[f32]) -> Result<Tensor> {
        if targets.len() != self.numel() {
            return Err(invalid(
                "bce_with_logits",
                format!(
                    "{} targets for logits of shape {:?}, expected {}",
                    targets.len(),
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        let mut losses = zeros(self.numel());
        cpu::bce_with_logits_forward(self.values()?, targets, &mut losses)?;
        let n = self.numel();
        let loss = cpu::mean(&losses)?;
        let logits = self.detach();
        let targets = targets.to_vec();
        Ok(attach(
            "bce_with_logits",
            Tensor::scalar(loss),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(n);
                cpu::bce_with_logits_backward(
                    logits.values()?,
                    &targets,
                    dy[0] / n as f32,
                    &mut dx,
                )?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
