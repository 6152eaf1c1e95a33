//! Spatial upsampling of NCHW maps (dense decoder heads).

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// Kernel signature shared by the four upsample kernels.
type UpsampleKernel = fn(
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    &[f32],
    &mut [f32],
) -> scalarize_kernels::Result<()>;

/// Signature shared by the four device upsample kernels.
type CudaUpsampleKernel = fn(
    &Gpu,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    &GpuBuffer<f32>,
    &mut GpuBuffer<f32>,
) -> scalarize_kernels::Result<()>;

/// The device upsample: `forward` into a fresh `[n, c, oh, ow]` buffer, `backward` (a gather,
/// overwriting dx) on the tape.
fn upsample_on_gpu(
    op: &'static str,
    x: &Tensor,
    g: Arc<Gpu>,
    (n, c, h, w, oh, ow): (usize, usize, usize, usize, usize, usize),
    forward: CudaUpsampleKernel,
    backward: CudaUpsampleKernel,
) -> Result<Tensor> {
    let mut y = g.alloc::<f32>(n * c * oh * ow)?;
    forward(&g, n, c, h, w, oh, ow, gpu::buf(x)?, &mut y)?;
    Ok(attach_any(
        op,
        gpu::tensor(&g, y, vec![n, c, oh, ow]),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let g = &dy.gpu;
            let mut dx = g.alloc::<f32>(n * c * h * w)?;
            backward(g, n, c, h, w, oh, ow, &dy.buf, &mut dx)?;
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

impl Tensor {
    /// Bilinear resize of `[n, c, h, w]` to `[n, c, oh, ow]` (align_corners = false).
    pub fn upsample_bilinear(&self, oh: usize, ow: usize) -> Result<Tensor> {
        self.upsample(
            "upsample_bilinear",
            oh,
            ow,
            (
                cpu::upsample_bilinear2d_forward,
                cpu::upsample_bilinear2d_backward,
            ),
            (
                cuda::upsample::upsample_bilinear2d_forward,
                cuda::upsample::upsample_bilinear2d_backward,
            ),
        )
    }

    /// Nearest-neighbour resize of `[n, c, h, w]` to `[n, c, oh, ow]`.
    pub fn upsample_nearest(&self, oh: usize, ow: usize) -> Result<Tensor> {
        self.upsample(
            "upsample_nearest",
            oh,
            ow,
            (
                cpu::upsample_nearest2d_forward,
                cpu::upsample_nearest2d_backward,
            ),
            (
                cuda::upsample::upsample_nearest2d_forward,
                cuda::upsample::upsample_nearest2d_backward,
            ),
        )
    }

    fn upsample(
        &self,
        op: &'static str,
        oh: usize,
        ow: usize,
        (forward, backward): (UpsampleKernel, UpsampleKernel),
        (cuda_forward, cuda_backward): (CudaUpsampleKernel, CudaUpsampleKernel),
    ) -> Result<Tensor> {
        expect_rank(op, "input", self, 4)?;
        if oh == 0 || ow == 0 {
            return Err(invalid(
                op,
                format!("output size {oh}x{ow}: expected at least 1x1"),
            ));
        }
        let [n, c, h, w] = [
            self.shape()[0],
            self.shape()[1],
            self.shape()[2],
            self.shape()[3],
        ];
        if let Some(g) = gpu::gpu_of(op, &[self])? {
            let dims = (n, c, h, w, oh, ow);
            return upsample_on_gpu(op, self, g, dims, cuda_forward, cuda_backward);
        }
        let mut y = zeros(n * c * oh * ow);
        forward(n, c, h, w, oh, ow, self.values()?, &mut y)?;
        Ok(attach(
            op,
            Tensor::from_parts(y, vec![n, c, oh, ow]),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(n * c * h * w);
                backward(n, c, h, w, oh, ow, dy, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
