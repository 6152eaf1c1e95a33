//! Elementwise add / sub / mul / scale and broadcast bias additions.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::{expect_same_shape, output};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// A binary elementwise device kernel `f(gpu, a, b, y)`.
type Binary = fn(
    &Gpu,
    &GpuBuffer<f32>,
    &GpuBuffer<f32>,
    &mut GpuBuffer<f32>,
) -> scalarize_kernels::Result<()>;

/// `f(a, b)` on the device, recorded with the add / sub / mul backward.
fn binary_on_gpu(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    g: Arc<Gpu>,
    f: Binary,
) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(a.numel())?;
    f(&g, gpu::buf(a)?, gpu::buf(b)?, &mut y)?;
    let (sa, sb) = (a.detach(), b.detach());
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, a.shape().to_vec()),
        &[a, b],
        Box::new(move |dy, needs| {
            let dy = gpu::cotangent(op, dy)?;
            let (g, d) = (&dy.gpu, &dy.buf);
            let mut out = vec![None, None];
            for (k, need) in needs.iter().enumerate() {
                if !need {
                    continue;
                }
                let grad = match (op, k) {
                    ("sub", 1) => {
                        let mut n = g.alloc::<f32>(d.len())?;
                        cuda::elementwise::scale(g, d, -1.0, &mut n)?;
                        n
                    }
                    ("mul", _) => {
                        let other = if k == 0 { &sb } else { &sa };
                        let mut n = g.alloc::<f32>(d.len())?;
                        cuda::elementwise::mul(g, d, gpu::buf(other)?, &mut n)?;
                        n
                    }
                    _ => gpu::copy(g, d)?,
                };
                out[k] = Some(gpu::grad(g, grad));
            }
            Ok(out)
        }),
    ))
}

/// `x` plus a broadcast `bias` on the device (`add`), recorded with dx = dy and
/// dbias = `grad`(dy).
fn bias_on_gpu(
    op: &'static str,
    x: &Tensor,
    bias: &Tensor,
    g: Arc<Gpu>,
    add: impl Fn(
        &Gpu,
        &GpuBuffer<f32>,
        &GpuBuffer<f32>,
        &mut GpuBuffer<f32>,
    ) -> scalarize_kernels::Result<()>,
    grad: impl Fn(&Gpu, &GpuBuffer<f32>, &mut GpuBuffer<f32>) -> scalarize_kernels::Result<()>
    + Send
    + Sync
    + 'static,
) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(x.numel())?;
    add(&g, gpu::buf(x)?, gpu::buf(bias)?, &mut y)?;
    let bias_len = bias.numel();
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, x.shape().to_vec()),
        &[x, bias],
        Box::new(move |dy, needs| {
            let dy = gpu::cotangent(op, dy)?;
            let (g, d) = (&dy.gpu, &dy.buf);
            let dx = if needs[0] {
                Some(gpu::grad(g, gpu::copy(g, d)?))
            } else {
                None
            };
            let db = if needs[1] {
                let mut db = g.alloc::<f32>(bias_len)?;
                grad(g, d, &mut db)?;
                Some(gpu::grad(g, db))
            } else {
                None
            };
            Ok(vec![dx, db])
        }),
    ))
}

impl Tensor {
    /// `self + other` (same shapes).
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("add", self, other)?;
        if let Some(g) = gpu::gpu_of("add", &[self, other])? {
            return binary_on_gpu("add", self, other, g, cuda::elementwise::add);
        }
        let mut y = output(self.numel());
        cpu::add(self.values()?, other.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add",
            out,
            &[self, other],
            Box::new(|dy, needs| Ok(needs.iter().map(|&n| n.then(|| dy.to_vec())).collect())),
        ))
    }

    /// `self - other` (same shapes).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("sub", self, other)?;
        if let Some(g) = gpu::gpu_of("sub", &[self, other])? {
            return binary_on_gpu("sub", self, other, g, cuda::elementwise::sub);
        }
        let mut y = output(self.numel());
        cpu::sub(self.values()?, other.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "sub",
            out,
            &[self, other],
            Box::new(|dy, needs| {
                let da = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(dy.len());
                    cpu::scale(dy, -1.0, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![da, db])
            }),
        ))
    }

    /// Elementwise product `self ⊙ other` (same shapes).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("mul", self, other)?;
        if let Some(g) = gpu::gpu_of("mul", &[self, other])? {
            return binary_on_gpu("mul", self, other, g, cuda::elementwise::mul);
        }
        let mut y = output(self.numel());
        cpu::mul(self.values()?, other.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        let (a, b) = (self.detach(), other.detach());
        Ok(attach(
            "mul",
            out,
            &[self, other],
            Box::new(move |dy, needs| {
                let mut grads = vec![None, None];
                if needs[0] {
                    let mut g = output(dy.len());
                    cpu::mul(dy, b.values()?, &mut g)?;
                    grads[0] = Some(g);
                }
                if needs[1] {
                    let mut g = output(dy.len());
                    cpu::mul(dy, a.values()?, &mut g)?;
                    grads[1] = Some(g);
                }
                Ok(grads)
            }),
        ))
    }

    /// `s · self`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        if let Some(g) = gpu::gpu_of("scale", &[self])? {
            let mut y = g.alloc::<f32>(self.numel())?;
            cuda::elementwise::scale(&g, gpu::buf(self)?, s, &mut y)?;
            return Ok(attach_any(
                "scale",
                gpu::tensor(&g, y, self.shape().to_vec()),
                &[self],
                Box::new(move |dy, _| {
                    let dy = gpu::cotangent("scale", dy)?;
                    let mut dx = dy.gpu.alloc::<f32>(dy.buf.len())?;
                    cuda::elementwise::scale(&dy.gpu, &dy.buf, s, &mut dx)?;
                    Ok(vec![Some(gpu::grad(&dy.gpu, dx))])
                }),
            ));
        }
        let mut y = output(self.numel());
        cpu::scale(self.values()?, s, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "scale",
            out,
            &[self],
            Box::new(move |dy, _| {
                let mut g = output(dy.len());
                cpu::scale(dy, s, &mut g)?;
                Ok(vec![Some(g)])
            }),
        ))
    }

    /// Adds `bias` broadcast over the leading axes: `bias`'s shape, with leading 1s dropped,
    /// must equal the trailing dimensions of `self` (a per-feature bias `[D]` on `[.., D]`, or
    /// a position embedding `[1, T, D]` on `[B, T, D]`).
    pub fn add_bias(&self, bias: &Tensor) -> Result<Tensor> {
        let b_shape: &[usize] = {
            let s = bias.shape();
            let first = s.iter().position(|&d| d != 1).unwrap_or(s.len());
            &s[first..]
        };
        let fits = b_shape.len() <= self.rank() && self.shape().ends_with(b_shape);
        if !fits {
            return Err(invalid(
                "add_bias",
                format!(
                    "bias shape {:?} must match the trailing dimensions of input shape {:?}",
                    bias.shape(),
                    self.shape()
                ),
            ));
        }
        let dim = bias.numel();
        let rows = self.numel() / dim;
        if let Some(g) = gpu::gpu_of("add_bias", &[self, bias])? {
            return bias_on_gpu(
                "add_bias",
                self,
                bias,
                g,
                move |g, x, b, y| cuda::elementwise::add_bias_rows(g, rows, dim, x, b, y),
                move |g, dy, db| cuda::elementwise::bias_grad_rows(g, rows, dim, dy, db),
            );
        }
        let mut y = output(self.numel());
        cpu::add_bias_rows(rows, dim, self.values()?, bias.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add_bias",
            out,
            &[self, bias],
            Box::new(move |dy, needs| {
                let dx = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(dim);
                    cpu::bias_grad_rows(rows, dim, dy, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![dx, db])
            }),
        ))
    }

    /// Adds a per-channel `bias` `[C]` to `self` `[N, C, ...]` (NCHW layout).
    pub fn add_channel_bias(&self, bias: &Tensor) -> Result<Tensor> {
        if self.rank() < 2 || bias.numel() != self.shape()[1] || bias.rank() != 1 {
            return Err(invalid(
                "add_channel_bias",
                format!(
                    "input shape {:?} and bias shape {:?}: expected input [N, C, ...] and bias [C]",
                    self.shape(),
                    bias.shape()
                ),
            ));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let hw = self.numel() / (n * c);
        if let Some(g) = gpu::gpu_of("add_channel_bias", &[self, bias])? {
            return bias_on_gpu(
                "add_channel_bias",
                self,
                bias,
                g,
                move |g, x, b, y| cuda::elementwise::add_bias_channels(g, n, c, hw, x, b, y),
                move |g, dy, db| cuda::elementwise::bias_grad_channels(g, n, c, hw, dy, db),
            );
        }
        let mut y = output(self.numel());
        cpu::add_bias_channels(n, c, hw, self.values()?, bias.values()?, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add_channel_bias",
            out,
            &[self, bias],
            Box::new(move |dy, needs| {
                let dx = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(c);
                    cpu::bias_grad_channels(n, c, hw, dy, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![dx, db])
            }),
        ))
    }
}
