//! Reductions: sum and mean over everything or over one axis.

use scalarize_kernels::cpu;

use super::{expect_axis, split_at_axis, zeros};
use crate::error::Result;
use crate::node::attach;
use crate::tensor::Tensor;

/// Spreads `dy` `[outer, inner]` back over `[outer, len, inner]`, times `factor`
/// (pure data movement; the backward of a reduction over the middle axis).
fn broadcast_middle(outer: usize, len: usize, inner: usize, dy: &[f32], factor: f32) -> Vec<f32> {
    let mut dx = zeros(outer * len * inner);
    for o in 0..outer {
        let src = &dy[o * inner..(o + 1) * inner];
        for l in 0..len {
            let dst = &mut dx[(o * len + l) * inner..(o * len + l + 1) * inner];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s * factor;
            }
        }
    }
    dx
}

impl Tensor {
    /// Sum of all elements, a rank-0 tensor.
    pub fn sum(&self) -> Result<Tensor> {
        let s = cpu::sum(self.values())?;
        let n = self.numel();
        Ok(attach(
            "sum",
            Tensor::scalar(s),
            &[self],
            Box::new(move |dy, _| Ok(vec![Some(vec![dy[0]; n])])),
        ))
    }

    /// Mean of all elements, a rank-0 tensor.
    pub fn mean(&self) -> Result<Tensor> {
        let m = cpu::mean(self.values())?;
        let n = self.numel();
        Ok(attach(
            "mean",
            Tensor::scalar(m),
            &[self],
            Box::new(move |dy, _| Ok(vec![Some(vec![dy[0] / n as f32; n])])),
        ))
    }

    /// Sum over `axis`, which is removed from the shape.
    pub fn sum_axis(&self, axis: usize) -> Result<Tensor> {
        self.reduce_axis("sum_axis", axis, false)
    }

    /// Mean over `axis`, which is removed from the shape.
    pub fn mean_axis(&self, axis: usize) -> Result<Tensor> {
        self.reduce_axis("mean_axis", axis, true)
    }

    fn reduce_axis(&self, op: &'static str, axis: usize, mean: bool) -> Result<Tensor> {
        expect_axis(op, self, axis)?;
        let (outer, len, inner) = split_at_axis(self.shape(), axis);
        let mut y = zeros(outer * inner);
        if mean {
            cpu::mean_axis(outer, len, inner, self.values(), &mut y)?;
        } else {
            cpu::sum_axis(outer, len, inner, self.values(), &mut y)?;
        }
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        let factor = if mean { 1.0 / len as f32 } else { 1.0 };
        Ok(attach(
            op,
            Tensor::from_parts(y, shape),
            &[self],
            Box::new(move |dy, _| Ok(vec![Some(broadcast_middle(outer, len, inner, dy, factor))])),
        ))
    }
}
