//! The fused weighted multi-task loss L = Σ_t p_t · mean_loss_t over packed head logits,
//! recorded as one op: the kernel reads the logits once and writes dL/dlogits in the same
//! pass; backward only scales that buffer by the incoming cotangent.

use scalarize_kernels::cpu::{
    self, TaskLayout, WeightedBceInput, WeightedCeInput, WeightedLossOutput,
};

use std::sync::Arc;

use scalarize_kernels::cuda::{self, CudaBceInput, CudaCeInput, Gpu, GpuBuffer};

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::no_grad::is_grad_enabled;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// Records the device loss: a rank-0 device tensor whose backward scales the fused kernel's
/// d(logits) by the cotangent on the device.
fn record_on_gpu(
    op: &'static str,
    logits: &Tensor,
    g: &Arc<Gpu>,
    total: f32,
    dlogits: Option<GpuBuffer<f32>>,
) -> Result<Tensor> {
    let out = gpu::tensor(g, g.upload(&[total])?, Vec::new());
    let Some(dl) = dlogits else {
        return Ok(out);
    };
    Ok(attach_any(
        op,
        out,
        &[logits],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let dx = gpu::times_scalar(&dy.gpu, &dl, &dy.buf)?;
            Ok(vec![Some(gpu::grad(&dy.gpu, dx))])
        }),
    ))
}

impl Tensor {
    fn check_packed(&self, op: &'static str, layout: &TaskLayout) -> Result<usize> {
        expect_rank(op, "logits", self, 2)?;
        if self.shape()[1] != layout.width() {
            return Err(invalid(
                op,
                format!(
                    "logits of shape {:?} for a task layout of width {}: expected [n, {}]",
                    self.shape(),
                    layout.width(),
                    layout.width()
                ),
            ));
        }
        Ok(self.shape()[0])
    }

    fn record_weighted(&self, op: &'static str, total: f32, dlogits: Option<Vec<f32>>) -> Tensor {
        let out = Tensor::scalar(total);
        let Some(dl) = dlogits else {
            return out;
        };
        attach(
            op,
            out,
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(dl.len());
                cpu::scale(&dl, dy[0], &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        )
    }

    /// Fused weighted softmax cross-entropy of packed logits `self` `[n, width]` (task t owns
    /// `layout.range(t)`), class targets `[n, T]`, optional mask `[n, T]` and weights p `[T]`.
    /// Returns the tracked weighted total (rank 0) and each task's mean loss and count.
    pub fn weighted_ce_loss(
        &self,
        layout: &TaskLayout,
        targets: &[i64],
        mask: Option<&[u8]>,
        weights: &[f32],
        ignore_index: i64,
    ) -> Result<(Tensor, WeightedLossOutput)> {
        let n = self.check_packed("weighted_ce_loss", layout)?;
        if let Some(g) = gpu::gpu_of("weighted_ce_loss", &[self])? {
            let (dt, dm) = (g.upload(targets)?, mask.map(|m| g.upload(m)).transpose()?);
            let input = CudaCeInput {
                layout,
                n,
                logits: gpu::buf(self)?,
                targets: &dt,
                mask: dm.as_ref(),
                weights,
                ignore_index,
            };
            let mut dl = (is_grad_enabled() && self.is_tracked())
                .then(|| g.alloc::<f32>(self.numel()))
                .transpose()?;
            let out = cuda::weighted_ce_loss(&g, &input, dl.as_mut())?;
            let t = record_on_gpu("weighted_ce_loss", self, &g, out.total, dl)?;
            return Ok((t, out));
        }
        let input = WeightedCeInput {
            layout,
            n,
            logits: self.values()?,
            targets,
            mask,
            weights,
            ignore_index,
        };
        let mut dlogits = (is_grad_enabled() && self.is_tracked()).then(|| zeros(self.numel()));
        let out = cpu::weighted_ce_loss(&input, dlogits.as_deref_mut())?;
        Ok((
            self.record_weighted("weighted_ce_loss", out.total, dlogits),
            out,
        ))
    }

    /// Fused weighted sigmoid BCE of packed logits `self` `[n, width]` against targets
    /// `[n, width]` in [0, 1], optional mask `[n, T]` and weights p `[T]` (each task's loss is
    /// the mean over its valid samples and columns). Returns the tracked total and per-task
    /// losses.
    pub fn weighted_bce_loss(
        &self,
        layout: &TaskLayout,
        targets: &[f32],
        mask: Option<&[u8]>,
        weights: &[f32],
    ) -> Result<(Tensor, WeightedLossOutput)> {
        let n = self.check_packed("weighted_bce_loss", layout)?;
        if let Some(g) = gpu::gpu_of("weighted_bce_loss", &[self])? {
            let (dt, dm) = (g.upload(targets)?, mask.map(|m| g.upload(m)).transpose()?);
            let input = CudaBceInput {
                layout,
                n,
                logits: gpu::buf(self)?,
                targets: &dt,
                mask: dm.as_ref(),
                weights,
            };
            let mut dl = (is_grad_enabled() && self.is_tracked())
                .then(|| g.alloc::<f32>(self.numel()))
                .transpose()?;
            let out = cuda::weighted_bce_loss(&g, &input, dl.as_mut())?;
            let t = record_on_gpu("weighted_bce_loss", self, &g, out.total, dl)?;
            return Ok((t, out));
        }
        let input = WeightedBceInput {
            layout,
            n,
            logits: self.values()?,
            targets,
            mask,
            weights,
        };
        let mut dlogits = (is_grad_enabled() && self.is_tracked()).then(|| zeros(self.numel()));
        let out = cpu::weighted_bce_loss(&input, dlogits.as_deref_mut())?;
        Ok((
            self.record_weighted("weighted_bce_loss", out.total, dlogits),
            out,
        ))
    }
}
