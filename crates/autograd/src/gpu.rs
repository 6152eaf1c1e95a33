//! Helpers the ops use to run on a CUDA device (or the emulator): where the inputs live,
//! their device buffers, device outputs and device gradients.

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use crate::error::{AutogradError, Result};
use crate::storage::{CudaStorage, Storage};
use crate::tensor::Tensor;

/// The device handle of the op's inputs when they all live on one GPU, `None` when they all
/// live on the host; an error naming the op when they are on different devices.
pub(crate) fn gpu_of(op: &'static str, inputs: &[&Tensor]) -> Result<Option<Arc<Gpu>>> {
    let mut gpu: Option<&Arc<Gpu>> = None;
    let mut host = false;
    for t in inputs {
        match t.cuda() {
            Some(c) => match gpu {
                Some(g) if !Arc::ptr_eq(g, &c.gpu) => return Err(mixed(op, inputs)),
                _ => gpu = Some(&c.gpu),
            },
            None => host = true,
        }
    }
    match (gpu, host) {
        (Some(_), true) => Err(mixed(op, inputs)),
        (g, _) => Ok(g.cloned()),
    }
}

fn mixed(op: &'static str, inputs: &[&Tensor]) -> AutogradError {
    let devices: Vec<String> = inputs.iter().map(|t| t.device().to_string()).collect();
    AutogradError::Device(format!(
        "{op}: inputs on different devices ({}); move them to one device first",
        devices.join(", ")
    ))
}

/// The device buffer of a tensor the caller knows is on a GPU.
pub(crate) fn buf(t: &Tensor) -> Result<&GpuBuffer<f32>> {
    t.cuda()
        .map(|c| &c.buf)
        .ok_or_else(|| AutogradError::Device(format!("expected a CUDA tensor, got {}", t.device())))
}

/// A device tensor of `shape` holding `buf`.
pub(crate) fn tensor(gpu: &Arc<Gpu>, buf: GpuBuffer<f32>, shape: Vec<usize>) -> Tensor {
    Tensor::from_cuda(gpu.clone(), buf, shape)
}

/// The device cotangent a backward closure received.
pub(crate) fn cotangent<'a>(op: &'static str, dy: &'a Storage) -> Result<&'a CudaStorage> {
    match dy {
        Storage::Cuda(c) => Ok(c),
        Storage::Cpu(_) => Err(AutogradError::Backward(format!(
            "internal: `{op}` ran on a GPU but its cotangent is on the host"
        ))),
    }
}

/// A device gradient for the tape.
pub(crate) fn grad(gpu: &Arc<Gpu>, buf: GpuBuffer<f32>) -> Storage {
    Storage::Cuda(CudaStorage {
        gpu: gpu.clone(),
        buf,
    })
}

/// `x`·`s` for the one-element device buffer `s` (a loss's cotangent), without reading `s`
/// back: an [len, 1]·[1, 1] GEMM, whose single product per element is one rounding, as the
/// host's `x * s`.
pub(crate) fn times_scalar(
    g: &Gpu,
    x: &GpuBuffer<f32>,
    s: &GpuBuffer<f32>,
) -> Result<GpuBuffer<f32>> {
    let mut y = g.alloc::<f32>(x.len())?;
    scalarize_kernels::cuda::gemm(
        g,
        &scalarize_kernels::cuda::Gemm::new(x.len(), 1, 1),
        (x, 0),
        (s, 0),
        (&mut y, 0),
    )?;
    Ok(y)
}

/// A device copy of a device buffer.
pub(crate) fn copy(gpu: &Gpu, src: &GpuBuffer<f32>) -> Result<GpuBuffer<f32>> {
    let mut out = gpu.alloc::<f32>(src.len())?;
    gpu.copy(src, 0, &mut out, 0, src.len())?;
    Ok(out)
}
