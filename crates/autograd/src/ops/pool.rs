//! Pooling over NCHW maps: average, max and global average.

use std::sync::Arc;

use scalarize_kernels::cpu::{self, Pool2dShape};
use scalarize_kernels::cuda::{self, Gpu};

use super::{expect_rank, zeros};
use crate::error::Result;
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// Device average pooling; backward spreads dy over each window.
fn avg_pool2d_on_gpu(x: &Tensor, g: Arc<Gpu>, s: Pool2dShape) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(s.n * s.c * s.out_h() * s.out_w())?;
    cuda::pool::avg_pool2d_forward(&g, &s, gpu::buf(x)?, &mut y)?;
    let numel = x.numel();
    Ok(attach_any(
        "avg_pool2d",
        gpu::tensor(&g, y, vec![s.n, s.c, s.out_h(), s.out_w()]),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("avg_pool2d", dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(numel)?;
            cuda::pool::avg_pool2d_backward(g, &s, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

/// Device max pooling; the argmax stays on the device inside the backward closure.
fn max_pool2d_on_gpu(x: &Tensor, g: Arc<Gpu>, s: Pool2dShape) -> Result<Tensor> {
    let out_n = s.n * s.c * s.out_h() * s.out_w();
    let mut y = g.alloc::<f32>(out_n)?;
    let mut argmax = g.alloc::<u32>(out_n)?;
    cuda::pool::max_pool2d_forward(&g, &s, gpu::buf(x)?, &mut y, &mut argmax)?;
    let numel = x.numel();
    Ok(attach_any(
        "max_pool2d",
        gpu::tensor(&g, y, vec![s.n, s.c, s.out_h(), s.out_w()]),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("max_pool2d", dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(numel)?;
            cuda::pool::max_pool2d_backward(g, &s, &argmax, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

/// Device global average pooling over `[n, c, hw]`; backward spreads dy / hw.
fn global_avg_pool_on_gpu(
    x: &Tensor,
    g: Arc<Gpu>,
    (n, c, hw): (usize, usize, usize),
) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(n * c)?;
    cuda::pool::global_avg_pool_forward(&g, n, c, hw, gpu::buf(x)?, &mut y)?;
    Ok(attach_any(
        "global_avg_pool",
        gpu::tensor(&g, y, vec![n, c]),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("global_avg_pool", dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(n * c * hw)?;
            cuda::pool::global_avg_pool_backward(g, n, c, hw, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

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
        if let Some(g) = gpu::gpu_of("avg_pool2d", &[self])? {
            return avg_pool2d_on_gpu(self, g, s);
        }
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
        if let Some(g) = gpu::gpu_of("max_pool2d", &[self])? {
            return max_pool2d_on_gpu(self, g, s);
        }
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
        if let Some(g) = gpu::gpu_of("global_avg_pool", &[self])? {
            return global_avg_pool_on_gpu(self, g, (n, c, hw));
        }
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
