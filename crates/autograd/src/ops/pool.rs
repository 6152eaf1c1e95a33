//! Pooling over NCHW maps: average, max and global average.

use scalarize_kernels::cpu::{self, Pool2dShape};

use super::{expect_rank, zeros};
use crate::error::Result;
use crate::node::attach;
use crate::tensor::Tensor;

impl Tensor {
    fn pool_shape(
        &self,
        op: &'static str,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Pool2dShape> {
        expect_rank(op, "input", self, 4)?;
        let s = self.shape();
        let ps = Pool2dShape {
            n: s[0],
            c: s[1],
            h: s[2],
            w: s[3],
            kh: k,
            kw: k,
            stride,
            pad,
        };
        ps.validate()?;
        Ok(ps)
    }

    /// Average pooling with a `k`×`k` window (padding counted in the average, as PyTorch's
    /// default `count_include_pad = true`).
    pub fn avg_pool2d(&self, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
        let s = self.pool_shape("avg_pool2d", k, stride, pad)?;
        let mut y = zeros(s.n * s.c * s.out_h() * s.out_w());
        cpu::avg_pool2d_forward(&s, self.values()?, &mut y)?;
        let numel = self.numel();
        Ok(attach(
            "avg_pool2d",
            Tensor::from_parts(y, vec![s.n, s.c, s.out_h(), s.out_w()]),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(numel);
                cpu::avg_pool2d_backward(&s, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Max pooling with a `k`×`k` window.
    pub fn max_pool2d(&self, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
        let s = self.pool_shape("max_pool2d", k, stride, pad)?;
        let out_n = s.n * s.c * s.out_h() * s.out_w();
        let mut y = zeros(out_n);
        let mut argmax = vec![0u32; out_n];
        cpu::max_pool2d_forward(&s, self.values()?, &mut y, &mut argmax)?;
        let numel = self.numel();
        Ok(attach(
            "max_pool2d",
            Tensor::from_parts(y, vec![s.n, s.c, s.out_h(), s.out_w()]),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(numel);
                cpu::max_pool2d_backward(&s, &argmax, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Mean over the spatial axes: `[n, c, h, w]` to `[n, c]`.
    pub fn global_avg_pool(&self) -> Result<Tensor> {
        expect_rank("global_avg_pool", "input", self, 4)?;
        let s = self.shape();
        let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
        let mut y = zeros(n * c);
        cpu::global_avg_pool_forward(n, c, hw, self.values()?, &mut y)?;
        Ok(attach(
            "global_avg_pool",
            Tensor::from_parts(y, vec![n, c]),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(n * c * hw);
                cpu::global_avg_pool_backward(n, c, hw, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
