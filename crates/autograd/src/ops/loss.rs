//! Losses on logits: softmax cross-entropy (with ignore_index) and sigmoid BCE.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// Σ `losses` / `count` as a one-element device buffer (fixed-order f64 sum, no read-back).
fn mean_over(g: &Gpu, losses: &GpuBuffer<f32>, count: usize) -> Result<GpuBuffer<f32>> {
    let mut total = g.alloc::<f32>(1)?;
    cuda::reduce::sum_axis(g, 1, losses.len(), 1, losses, &mut total)?;
    let mut mean = g.alloc::<f32>(1)?;
    cuda::elementwise::scale(g, &total, 1.0 / count as f32, &mut mean)?;
    Ok(mean)
}

/// The device cross-entropy: the targets checked and counted on the host and uploaded once,
/// per-row losses by the kernel, their mean over the valid rows left on the device (nothing is
/// read back); backward = the kernel's d(logits) for a unit loss times the cotangent.
fn cross_entropy_on_gpu(
    x: &Tensor,
    g: Arc<Gpu>,
    (rows, classes): (usize, usize),
    targets: &[i64],
    ignore_index: i64,
) -> Result<Tensor> {
    let dt = cuda::cross_entropy::CeTargets::upload(&g, classes, targets, ignore_index)?;
    let mut losses = g.alloc::<f32>(rows)?;
    let logits = gpu::buf(x)?;
    let valid =
        cuda::cross_entropy::cross_entropy_forward(&g, rows, classes, logits, &dt, &mut losses)?;
    let loss = if valid == 0 {
        g.zeros::<f32>(1)?
    } else {
        mean_over(&g, &losses, valid)?
    };
    let saved = x.detach();
    Ok(attach_any(
        "cross_entropy",
        gpu::tensor(&g, loss, Vec::new()),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("cross_entropy", dy)?;
            let g = &dy.gpu;
            if valid == 0 {
                return Ok(vec![Some(gpu::grad(g, g.zeros::<f32>(rows * classes)?))]);
            }
            let mut dl = g.alloc::<f32>(rows * classes)?;
            cuda::cross_entropy::cross_entropy_backward(
                g,
                rows,
                classes,
                gpu::buf(&saved)?,
                &dt,
                1.0 / valid as f32,
                &mut dl,
            )?;
            Ok(vec![Some(gpu::grad(
                g,
                gpu::times_scalar(g, &dl, &dy.buf)?,
            ))])
        }),
    ))
}

/// The device BCE with logits: elementwise losses, their mean on the device; backward = the
/// kernel's d(logits) for a unit loss times the cotangent.
fn bce_on_gpu(x: &Tensor, g: Arc<Gpu>, targets: &[f32]) -> Result<Tensor> {
    let n = x.numel();
    let dt = g.upload(targets)?;
    let mut losses = g.alloc::<f32>(n)?;
    cuda::cross_entropy::bce_with_logits_forward(&g, gpu::buf(x)?, &dt, &mut losses)?;
    let mut loss = g.alloc::<f32>(1)?;
    cuda::reduce::mean_axis(&g, 1, n, 1, &losses, &mut loss)?;
    let saved = x.detach();
    Ok(attach_any(
        "bce_with_logits",
        gpu::tensor(&g, loss, Vec::new()),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("bce_with_logits", dy)?;
            let g = &dy.gpu;
            let mut dl = g.alloc::<f32>(n)?;
            let logits = gpu::buf(&saved)?;
            cuda::cross_entropy::bce_with_logits_backward(g, logits, &dt, 1.0 / n as f32, &mut dl)?;
            Ok(vec![Some(gpu::grad(
                g,
                gpu::times_scalar(g, &dl, &dy.buf)?,
            ))])
        }),
    ))
}

impl Tensor {
    /// Mean softmax cross-entropy of `self` `[rows, classes]` against class indices, over the
    /// rows whose target is not `ignore_index`; a rank-0 loss. With no valid row the loss is 0
    /// and so is its gradient (PyTorch would give NaN).
    pub fn cross_entropy(&self, targets: &[i64], ignore_index: i64) -> Result<Tensor> {
        expect_rank("cross_entropy", "logits", self, 2)?;
        let (rows, classes) = (self.shape()[0], self.shape()[1]);
        if targets.len() != rows {
            return Err(invalid(
                "cross_entropy",
                format!(
                    "{} targets for logits of shape {:?}, expected {rows}",
                    targets.len(),
                    self.shape()
                ),
            ));
        }
        if let Some(g) = gpu::gpu_of("cross_entropy", &[self])? {
            return cross_entropy_on_gpu(self, g, (rows, classes), targets, ignore_index);
        }
        let mut losses = zeros(rows);
        let valid = cpu::cross_entropy_forward(
            rows,
            classes,
            self.values()?,
            targets,
            ignore_index,
            &mut losses,
        )?;
        let loss = if valid == 0 {
            0.0
        } else {
            cpu::sum(&losses)? / valid as f32
        };
        let logits = self.detach();
        let targets = targets.to_vec();
        Ok(attach(
            "cross_entropy",
            Tensor::scalar(loss),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(rows * classes);
                if valid > 0 {
                    cpu::cross_entropy_backward(
                        rows,
                        classes,
                        logits.values()?,
                        &targets,
                        ignore_index,
                        dy[0] / valid as f32,
                        &mut dx,
                    )?;
                }
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Mean sigmoid binary cross-entropy of logits `self` against `targets` in [0, 1] (same
    /// element count), over all elements; a rank-0 loss.
    pub fn bce_with_logits(&self, targets: &[f32]) -> Result<Tensor> {
        if targets.len() != self.numel() {
            return Err(invalid(
                "bce_with_logits",
                format!(
                    "{} targets for logits of shape {:?}, expected {}",
                    targets.len(),
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        if let Some(g) = gpu::gpu_of("bce_with_logits", &[self])? {
            return bce_on_gpu(self, g, targets);
        }
        let mut losses = zeros(self.numel());
        cpu::bce_with_logits_forward(self.values()?, targets, &mut losses)?;
        let n = self.numel();
        let loss = cpu::mean(&losses)?;
        let logits = self.detach();
        let targets = targets.to_vec();
        Ok(attach(
            "bce_with_logits",
            Tensor::scalar(loss),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(n);
                cpu::bce_with_logits_backward(
                    logits.values()?,
                    &targets,
                    dy[0] / n as f32,
                    &mut dx,
                )?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
