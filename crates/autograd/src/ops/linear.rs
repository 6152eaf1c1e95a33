//! Linear layer: x·Wᵀ + b with the PyTorch weight layout `[out, in]`.

use scalarize_kernels::cpu;

use super::output;
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

impl Tensor {
    /// `self`·`weight`ᵀ + `bias` for `self` `[.., in]`, `weight` `[out, in]`, `bias` `[out]`;
    /// the output is `[.., out]`. Recorded as one node.
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
        let (in_f, out_f) = (weight.shape()[1], weight.shape()[0]);
        let rows = self.numel() / in_f;
        // One node for x·Wᵀ + b on any leading shape: no reshape or bias nodes, whose
        // backward passes would each copy the whole gradient.
        let mut y = output(rows * out_f);
        let beta = match bias {
            Some(b) => {
                y.chunks_mut(out_f)
                    .for_each(|r| r.copy_from_slice(b.values()));
                1.0
            }
            None => 0.0,
        };
        cpu::matmul(
            rows,
            in_f,
            out_f,
            self.values(),
            false,
            weight.values(),
            true,
            &mut y,
            1.0,
            beta,
        )?;
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked above") = out_f;
        let (x, w) = (self.detach(), weight.detach());
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(attach(
            "linear",
            Tensor::from_parts(y, shape),
            &inputs,
            Box::new(move |dy, needs| {
                let mut grads = vec![None; needs.len()];
                if needs[0] {
                    // dx = dy·W.
                    let mut dx = output(rows * in_f);
                    cpu::matmul(
                        rows,
                        out_f,
                        in_f,
                        dy,
                        false,
                        w.values(),
                        false,
                        &mut dx,
                        1.0,
                        0.0,
                    )?;
                    grads[0] = Some(dx);
                }
                if needs[1] {
                    // dW = dyᵀ·x.
                    let mut dw = output(out_f * in_f);
                    cpu::matmul(
                        out_f,
                        rows,
                        in_f,
                        dy,
                        true,
                        x.values(),
                        false,
                        &mut dw,
                        1.0,
                        0.0,
                    )?;
                    grads[1] = Some(dw);
                }
                if needs.get(2) == Some(&true) {
                    let mut db = output(out_f);
                    cpu::bias_grad_rows(rows, out_f, dy, &mut db)?;
                    grads[2] = Some(db);
                }
                Ok(grads)
            }),
        ))
    }
}
