//! 2-D convolution, NCHW, square stride and padding.

use std::sync::Arc;

use scalarize_kernels::cpu::{self, Conv2dShape};
use scalarize_kernels::cuda::{self, Gpu};

use super::output;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// The device convolution: im2col + GEMM forward (bias included), the kernels' backward for
/// whichever of dx, dw and dbias the tape needs.
fn conv2d_on_gpu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: Arc<Gpu>,
    s: Conv2dShape,
) -> Result<Tensor> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = g.alloc::<f32>(s.n * s.c_out * oh * ow)?;
    cuda::conv::conv2d_forward(
        &g,
        &s,
        gpu::buf(x)?,
        gpu::buf(weight)?,
        bias.map(gpu::buf).transpose()?,
        &mut y,
    )?;
    let (sx, sw) = (x.detach(), weight.detach());
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    Ok(attach_any(
        "conv2d",
        gpu::tensor(&g, y, vec![s.n, s.c_out, oh, ow]),
        &inputs,
        Box::new(move |dy, needs| {
            let dy = gpu::cotangent("conv2d", dy)?;
            let g = &dy.gpu;
            let mut dx = needs[0].then(|| g.alloc::<f32>(sx.numel())).transpose()?;
            let mut dw = needs[1].then(|| g.alloc::<f32>(sw.numel())).transpose()?;
            let mut db = (needs.get(2) == Some(&true))
                .then(|| g.alloc::<f32>(s.c_out))
                .transpose()?;
            cuda::conv::conv2d_backward(
                g,
                &s,
                gpu::buf(&sx)?,
                gpu::buf(&sw)?,
                &dy.buf,
                dx.as_mut(),
                dw.as_mut(),
                db.as_mut(),
            )?;
            let mut grads = vec![dx.map(|b| gpu::grad(g, b)), dw.map(|b| gpu::grad(g, b))];
            if needs.len() == 3 {
                grads.push(db.map(|b| gpu::grad(g, b)));
            }
            Ok(grads)
        }),
    ))
}

impl Tensor {
    /// Convolution of `self` `[n, c_in, h, w]` with `weight` `[c_out, c_in, kh, kw]` and an
    /// optional `bias` `[c_out]`; output `[n, c_out, oh, ow]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        let fits = self.rank() == 4
            && weight.rank() == 4
            && self.shape()[1] == weight.shape()[1]
            && bias.is_none_or(|b| b.shape() == [weight.shape()[0]]);
        if !fits {
            return Err(invalid(
                "conv2d",
                format!(
                    "input {:?}, weight {:?}, bias {:?}: expected input [n, c_in, h, w], weight [c_out, c_in, kh, kw], bias [c_out]",
                    self.shape(),
                    weight.shape(),
                    bias.map(|b| b.shape().to_vec())
                ),
            ));
        }
        let (xs, ws) = (self.shape(), weight.shape());
        let s = Conv2dShape {
            n: xs[0],
            c_in: xs[1],
            h: xs[2],
            w: xs[3],
            c_out: ws[0],
            kh: ws[2],
            kw: ws[3],
            stride,
            pad,
        };
        s.validate()?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        if let Some(g) = gpu::gpu_of("conv2d", &inputs)? {
            return conv2d_on_gpu(self, weight, bias, g, s);
        }
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = output(s.n * s.c_out * oh * ow);
        cpu::conv2d_forward(
            &s,
            self.values()?,
            weight.values()?,
            bias.map(|b| b.values()).transpose()?,
            &mut y,
        )?;
        let out = Tensor::from_parts(y, vec![s.n, s.c_out, oh, ow]);
        let (x, w) = (self.detach(), weight.detach());
        let backward = Box::new(move |dy: &[f32], needs: &[bool]| {
            let mut dx = needs[0].then(|| output(x.numel()));
            let mut dw = needs[1].then(|| output(w.numel()));
            let mut db = needs
                .get(2)
                .copied()
                .unwrap_or(false)
                .then(|| output(s.c_out));
            cpu::conv2d_backward(
                &s,
                x.values()?,
                w.values()?,
                dy,
                dx.as_deref_mut(),
                dw.as_deref_mut(),
                db.as_deref_mut(),
            )?;
            let mut grads = vec![dx, dw];
            if needs.len() == 3 {
                grads.push(db);
            }
            Ok(grads)
        });
        Ok(attach("conv2d", out, &inputs, backward))
    }
}
