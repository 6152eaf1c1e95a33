//! Linear layer: x·Wᵀ + b with the PyTorch weight layout `[out, in]`.

use crate::error::{Result, invalid};
use crate::tensor::Tensor;

impl Tensor {
    /// `self`·`weight`ᵀ + `bias` for `self` `[.., in]`, `weight` `[out, in]`, `bias` `[out]`;
    /// the output is `[.., out]`. Recorded as matmul (+ bias) nodes.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let fits = self.rank() >= 1
            && weight.rank() == 2
            && self.shape()[self.rank() - 1] == weight.shape()[1]
            && bias.is_none_or(|b| b.shape() == [weight.shape()[0]]);
        if !fits {
            return Err(invalid(
                "linear",
                format!(
                    "input {:?}, weight {:?}, bias {:?}: expected input [.., in], weight [out, in], bias [out]",
                    self.shape(),
                    weight.shape(),
                    bias.map(|b| b.shape().to_vec())
                ),
            ));
        }
        let in_f = weight.shape()[1];
        let rows = self.numel() / in_f;
        let x2 = if self.rank() == 2 {
            self.clone()
        } else {
            self.reshape(&[rows, in_f])?
        };
        let mut y = x2.matmul_t(weight, false, true)?;
        if let Some(b) = bias {
            y = y.add_bias(b)?;
        }
        if self.rank() == 2 {
            return Ok(y);
        }
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked above") = weight.shape()[0];
        y.reshape(&shape)
    }
}
