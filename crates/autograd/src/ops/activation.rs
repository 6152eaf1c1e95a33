//! Pointwise activations: ReLU and exact (erf) GELU.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::output;
use crate::error::Result;
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// A device kernel `f(gpu, x, y_or_dy, out)`-style pointwise forward/backward pair.
type Fwd = fn(&Gpu, &GpuBuffer<f32>, &mut GpuBuffer<f32>) -> scalarize_kernels::Result<()>;
type Bwd = fn(
    &Gpu,
    &GpuBuffer<f32>,
    &GpuBuffer<f32>,
    &mut GpuBuffer<f32>,
) -> scalarize_kernels::Result<()>;

/// Runs a pointwise activation on the device and records its backward (which reads x).
fn on_gpu(op: &'static str, x: &Tensor, g: Arc<Gpu>, fwd: Fwd, bwd: Bwd) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(x.numel())?;
    fwd(&g, gpu::buf(x)?, &mut y)?;
    let saved = x.detach();
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, x.shape().to_vec()),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let mut dx = dy.gpu.alloc::<f32>(dy.buf.len())?;
            bwd(&dy.gpu, gpu::buf(&saved)?, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(&dy.gpu, dx))])
        }),
    ))
}

impl Tensor {
    /// max(x, 0).
    pub fn relu(&self) -> Result<Tensor> {
        if let Some(g) = gpu::gpu_of("relu", &[self])? {
            return on_gpu(
                "relu",
                self,
                g,
                cuda::activation::relu_forward,
                cuda::activation::relu_backward,
            );
        }
        let mut y = output(self.numel());
        cpu::relu_forward(self.values()?, &mut y)?;
        let x = self.detach();
        Ok(attach(
            "relu",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = output(dy.len());
                cpu::relu_backward(x.values()?, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// GELU, erf form: 0.5·x·(1 + erf(x/√2)).
    pub fn gelu(&self) -> Result<Tensor> {
        if let Some(g) = gpu::gpu_of("gelu", &[self])? {
            return on_gpu(
                "gelu",
                self,
                g,
                cuda::activation::gelu_forward,
                cuda::activation::gelu_backward,
            );
        }
        let mut y = output(self.numel());
        cpu::gelu_forward(self.values()?, &mut y)?;
        let x = self.detach();
        Ok(attach(
            "gelu",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = output(dy.len());
                cpu::gelu_backward(x.values()?, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
