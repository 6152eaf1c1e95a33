//! 2-D convolution, NCHW, square stride and padding.

use scalarize_kernels::cpu::{self, Conv2dShape};

use super::output;
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

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
        Ok(match bias {
            Some(b) => attach("conv2d", out, &[self, weight, b], backward),
            None => attach("conv2d", out, &[self, weight], backward),
        })
    }
}
