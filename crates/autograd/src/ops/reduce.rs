//! Reductions: sum and mean over everything or over one axis.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::{expect_axis, split_at_axis, zeros};
use crate::error::Result;
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// Sum (factor 1) or mean (factor 1/n) of all elements on the device, a rank-0 device tensor;
/// backward spreads the cotangent times the factor over every element.
fn total_on_gpu(op: &'static str, x: &Tensor, g: Arc<Gpu>, mean: bool) -> Result<Tensor> {
    let n = x.numel();
    let mut y = g.alloc::<f32>(1)?;
    if mean {
        cuda::reduce::mean_axis(&g, 1, n, 1, gpu::buf(x)?, &mut y)?;
    } else {
        cuda::reduce::sum_axis(&g, 1, n, 1, gpu::buf(x)?, &mut y)?;
    }
    let factor = if mean { 1.0 / n as f32 } else { 1.0 };
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, Vec::new()),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let g = &dy.gpu;
            // Broadcast: zeros plus the one-element cotangent as a row bias, then the factor.
            let zero = g.zeros::<f32>(n)?;
            let mut dx = g.alloc::<f32>(n)?;
            cuda::elementwise::add_bias_rows(g, n, 1, &zero, &dy.buf, &mut dx)?;
            if factor != 1.0 {
                let mut scaled = g.alloc::<f32>(n)?;
                cuda::elementwise::scale(g, &dx, factor, &mut scaled)?;
                dx = scaled;
            }
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

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

/// `sum_axis` / `mean_axis` on the device; the backward broadcasts the (scaled) cotangent
/// back over the reduced axis.
fn reduce_axis_on_gpu(
    op: &'static str,
    x: &Tensor,
    g: Arc<Gpu>,
    (outer, len, inner): (usize, usize, usize),
    axis: usize,
    mean: bool,
) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(outer * inner)?;
    if mean {
        cuda::reduce::mean_axis(&g, outer, len, inner, gpu::buf(x)?, &mut y)?;
    } else {
        cuda::reduce::sum_axis(&g, outer, len, inner, gpu::buf(x)?, &mut y)?;
    }
    let mut shape = x.shape().to_vec();
    shape.remove(axis);
    let factor = if mean { 1.0 / len as f32 } else { 1.0 };
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, shape),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let g = &dy.gpu;
            let m = outer * inner;
            // Scaling the small cotangent first gives the same products as the CPU's
            // broadcast-then-scale.
            let scaled;
            let d = if factor != 1.0 {
                let mut s = g.alloc::<f32>(m)?;
                cuda::elementwise::scale(g, &dy.buf, factor, &mut s)?;
                scaled = s;
                &scaled
            } else {
                &dy.buf
            };
            Ok(vec![Some(gpu::grad(
                g,
                broadcast_middle_on_gpu(g, outer, len, inner, d)?,
            ))])
        }),
    ))
}

/// Spreads `d` [outer, inner] over [outer, len, inner] on the device: a per-row bias over zeros
/// when inner = 1; otherwise `len` copies of `d` as row biases over zeros ([len, outer·inner]),
/// then the first two axes swapped when outer > 1.
fn broadcast_middle_on_gpu(
    g: &Gpu,
    outer: usize,
    len: usize,
    inner: usize,
    d: &GpuBuffer<f32>,
) -> Result<GpuBuffer<f32>> {
    let (m, n) = (outer * inner, outer * len * inner);
    let zero = g.zeros::<f32>(n)?;
    let mut rep = g.alloc::<f32>(n)?;
    if inner == 1 {
        // A reduction over the last axis: d[o] is the per-"channel" bias of row o.
        cuda::elementwise::add_bias_channels(g, 1, outer, len, &zero, d, &mut rep)?;
        return Ok(rep);
    }
    cuda::elementwise::add_bias_rows(g, len, m, &zero, d, &mut rep)?;
    if outer == 1 || len == 1 {
        // [len, outer, inner] and [outer, len, inner] hold the elements in the same order.
        return Ok(rep);
    }
    let mut dx = g.alloc::<f32>(n)?;
    cuda::permute::permute(g, &rep, &[len, outer, inner], &[1, 0, 2], &mut dx)?;
    Ok(dx)
}

impl Tensor {
    /// Sum of all elements, a rank-0 tensor.
    pub fn sum(&self) -> Result<Tensor> {
        if let Some(g) = gpu::gpu_of("sum", &[self])? {
            return total_on_gpu("sum", self, g, false);
        }
        let s = cpu::sum(self.values()?)?;
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
        if let Some(g) = gpu::gpu_of("mean", &[self])? {
            return total_on_gpu("mean", self, g, true);
        }
        let m = cpu::mean(self.values()?)?;
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
        if let Some(g) = gpu::gpu_of(op, &[self])? {
            return reduce_axis_on_gpu(op, self, g, (outer, len, inner), axis, mean);
        }
        let mut y = zeros(outer * inner);
        if mean {
            cpu::mean_axis(outer, len, inner, self.values()?, &mut y)?;
        } else {
            cpu::sum_axis(outer, len, inner, self.values()?, &mut y)?;
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
