//! Pointwise activations: ReLU and exact (erf) GELU.

use scalarize_kernels::cpu;

use super::output;
use crate::error::Result;
use crate::node::attach;
use crate::tensor::Tensor;

impl Tensor {
    /// max(x, 0).
    pub fn relu(&self) -> Result<Tensor> {
        let mut y = output(self.numel());
        cpu::relu_forward(self.values(), &mut y)?;
        let x = self.detach();
        Ok(attach(
            "relu",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = output(dy.len());
                cpu::relu_backward(x.values(), dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// GELU, erf form: 0.5·x·(1 + erf(x/√2)).
    pub fn gelu(&self) -> Result<Tensor> {
        let mut y = output(self.numel());
        cpu::gelu_forward(self.values(), &mut y)?;
        let x = self.detach();
        Ok(attach(
            "gelu",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = output(dy.len());
                cpu::gelu_backward(x.values(), dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
