//! Linear layer: x·Wᵀ + b with the PyTorch weight layout `[out, in]`.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gemm, Gpu, gemm};
use scalarize_kernels::{cpu, cuda};

use super::output;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// The device linear layer: one GEMM (plus a bias pass) forward, GEMMs backward.
fn linear_on_gpu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: Arc<Gpu>,
    shape: Vec<usize>,
) -> Result<Tensor> {
    let (in_f, out_f) = (weight.shape()[1], weight.shape()[0]);
    let rows = x.numel() / in_f;
    let mut y = g.alloc::<f32>(rows * out_f)?;
    let xw = Gemm::new(rows, in_f, out_f).trans(false, true);
    gemm(
        &g,
        &xw,
        (gpu::buf(x)?, 0),
        (gpu::buf(weight)?, 0),
        (&mut y, 0),
    )?;
    if let Some(b) = bias {
        let mut yb = g.alloc::<f32>(rows * out_f)?;
        cuda::elementwise::add_bias_rows(&g, rows, out_f, &y, gpu::buf(b)?, &mut yb)?;
        y = yb;
    }
    let (sx, sw) = (x.detach(), weight.detach());
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    Ok(attach_any(
        "linear",
        gpu::tensor(&g, y, shape),
        &inputs,
        Box::new(move |dy, needs| {
            let dy = gpu::cotangent("linear", dy)?;
            let (g, d) = (&dy.gpu, &dy.buf);
            let mut grads: Vec<Option<_>> = (0..needs.len()).map(|_| None).collect();
            if needs[0] {
                // dx = dy·W.
                let mut dx = g.alloc::<f32>(rows * in_f)?;
                gemm(
                    g,
                    &Gemm::new(rows, out_f, in_f),
                    (d, 0),
                    (gpu::buf(&sw)?, 0),
                    (&mut dx, 0),
                )?;
                grads[0] = Some(gpu::grad(g, dx));
            }
            if needs[1] {
                // dW = dyᵀ·x.
                let mut dw = g.alloc::<f32>(out_f * in_f)?;
                let p = Gemm::new(out_f, rows, in_f).trans(true, false);
                gemm(g, &p, (d, 0), (gpu::buf(&sx)?, 0), (&mut dw, 0))?;
                grads[1] = Some(gpu::grad(g, dw));
            }
            if needs.get(2) == Some(&true) {
                let mut db = g.alloc::<f32>(out_f)?;
                cuda::elementwise::bias_grad_rows(g, rows, out_f, d, &mut db)?;
                grads[2] = Some(gpu::grad(g, db));
            }
            Ok(grads)
        }),
    ))
}

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
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        if let Some(g) = gpu::gpu_of("linear", &inputs)? {
            let mut shape = self.shape().to_vec();
            *shape.last_mut().expect("rank >= 1 checked above") = out_f;
            return linear_on_gpu(self, weight, bias, g, shape);
        }
        // One node for x·Wᵀ + b on any leading shape: no reshape or bias nodes, whose
        // backward passes would each copy the whole gradient.
        let mut y = output(rows * out_f);
        let beta = match bias {
            Some(b) => {
                let bv = b.values()?;
                y.chunks_mut(out_f).for_each(|r| r.copy_from_slice(bv));
                1.0
            }
            None => 0.0,
        };
        cpu::matmul(
            rows,
            in_f,
            out_f,
            self.values()?,
            false,
            weight.values()?,
            true,
            &mut y,
            1.0,
            beta,
        )?;
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked above") = out_f;
        let (x, w) = (self.detach(), weight.detach());
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
                        w.values()?,
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
                        x.values()?,
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
