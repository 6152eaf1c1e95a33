//! CUDA ReLU and GELU, forward and backward (kernels/activation.cu): the twins of
//! [`crate::cpu::activation`], same names, argument order and checks, buffers on the device.
//! GELU is the exact erf form, like the CPU (erfcf on the device).

use super::buffer::GpuBuffer;
use super::elementwise::{flat_cfg, i64_arg, same_len};
use super::gpu::Gpu;
use super::sources::ACTIVATION;
use crate::error::Result;

/// y = f(x) by the kernel `kernel`.
fn forward(
    gpu: &Gpu,
    op: &'static str,
    kernel: &str,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let n = same_len(op, &[("x", x.len()), ("y", y.len())])?;
    gpu.launch(
        &ACTIVATION,
        kernel,
        flat_cfg(n),
        &[x.arg(), y.arg_mut(), i64_arg(n)],
    )
}

/// dx = f'(x)·dy by the kernel `kernel`.
fn backward(
    gpu: &Gpu,
    op: &'static str,
    kernel: &str,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    let n = same_len(op, &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
    gpu.launch(
        &ACTIVATION,
        kernel,
        flat_cfg(n),
        &[x.arg(), dy.arg(), dx.arg_mut(), i64_arg(n)],
    )
}

/// y = max(x, 0).
pub fn relu_forward(gpu: &Gpu, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
    forward(gpu, "cuda::relu_forward", "act_relu_forward", x, y)
}

/// dx = dy where x > 0, else 0.
pub fn relu_backward(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    backward(gpu, "cuda::relu_backward", "act_relu_backward", x, dy, dx)
}

/// GELU, erf form: y = 0.5·x·(1 + erf(x/√2)) = x·Φ(x) (not tanh).
pub fn gelu_forward(gpu: &Gpu, x: &GpuBuffer<f32>, y: &mut GpuBuffer<f32>) -> Result<()> {
    forward(gpu, "cuda::gelu_forward", "act_gelu_forward", x, y)
}

/// dx = dy·(Φ(x) + x·φ(x)) for exact GELU.
pub fn gelu_backward(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: &mut GpuBuffer<f32>,
) -> Result<()> {
    backward(gpu, "cuda::gelu_backward", "act_gelu_backward", x, dy, dx)
}
