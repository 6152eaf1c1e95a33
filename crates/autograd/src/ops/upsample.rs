//! Spatial upsampling of NCHW maps (dense decoder heads).

use scalarize_kernels::cpu;

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::node::attach;
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

impl Tensor {
    /// Bilinear resize of `[n, c, h, w]` to `[n, c, oh, ow]` (align_corners = false).
    pub fn upsample_bilinear(&self, oh: usize, ow: usize) -> Result<Tensor> {
        self.upsample(
            "upsample_bilinear",
            oh,
            ow,
            cpu::upsample_bilinear2d_forward,
            cpu::upsample_bilinear2d_backward,
        )
    }

    /// Nearest-neighbour resize of `[n, c, h, w]` to `[n, c, oh, ow]`.
    pub fn upsample_nearest(&self, oh: usize, ow: usize) -> Result<Tensor> {
        self.upsample(
            "upsample_nearest",
            oh,
            ow,
            cpu::upsample_nearest2d_forward,
            cpu::upsample_nearest2d_backward,
        )
    }

    fn upsample(
        &self,
        op: &'static str,
        oh: usize,
        ow: usize,
        forward: UpsampleKernel,
        backward: UpsampleKernel,
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
