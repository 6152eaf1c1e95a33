//! The fused weighted multi-task loss L = Σ_t p_t · mean_loss_t over packed head logits,
//! recorded as one op: the kernel reads the logits once and writes dL/dlogits in the same
//! pass; backward only scales that buffer by the incoming cotangent.
//!
//! On a device the targets are checked and counted on the host (where they come from) before
//! their upload, and the total and the per-task losses stay on the device: a training step
//! reads nothing back until the caller asks for a value to log.

use scalarize_kernels::cpu::{self, TaskLayout, WeightedBceInput, WeightedCeInput};

use std::sync::Arc;

use scalarize_kernels::cuda::weighted_loss::{
    DeviceLossOutput, check_bce_targets, check_ce_targets, weighted_bce_loss_device,
    weighted_ce_loss_device,
};
use scalarize_kernels::cuda::{CudaBceInput, CudaCeInput, Gpu, GpuBuffer};

use super::{expect_rank, zeros};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::no_grad::is_grad_enabled;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// The per-task side of a fused weighted loss.
#[derive(Clone, Debug)]
pub struct TaskLosses {
    /// Mean loss of each task over its valid samples (0 for a task with none): an untracked
    /// rank-1 `[T]` tensor on the logits' device (read it back only to log it).
    pub task_loss: Tensor,
    /// Number of valid samples n_t of each task (counted on the host from the targets).
    pub counts: Vec<usize>,
}

/// Records the device loss: the kernel's rank-0 device total, whose backward scales the fused
/// kernel's d(logits) by the cotangent on the device; and the device task losses.
fn record_on_gpu(
    op: &'static str,
    logits: &Tensor,
    g: &Arc<Gpu>,
    out: DeviceLossOutput,
    counts: Vec<usize>,
    dlogits: Option<GpuBuffer<f32>>,
) -> Result<(Tensor, TaskLosses)> {
    let t = counts.len();
    let tasks = TaskLosses {
        task_loss: gpu::tensor(g, out.task_loss, vec![t]),
        counts,
    };
    let total = gpu::tensor(g, out.total, Vec::new());
    let Some(dl) = dlogits else {
        return Ok((total, tasks));
    };
    let total = attach_any(
        op,
        total,
        &[logits],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent(op, dy)?;
            let dx = gpu::times_scalar(&dy.gpu, &dl, &dy.buf)?;
            Ok(vec![Some(gpu::grad(&dy.gpu, dx))])
        }),
    );
    Ok((total, tasks))
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

    fn record_weighted(
        &self,
        op: &'static str,
        out: cpu::WeightedLossOutput,
        dlogits: Option<Vec<f32>>,
    ) -> Result<(Tensor, TaskLosses)> {
        let t = out.task_loss.len();
        let tasks = TaskLosses {
            task_loss: Tensor::new(out.task_loss, &[t])?,
            counts: out.counts,
        };
        let total = Tensor::scalar(out.total);
        let Some(dl) = dlogits else {
            return Ok((total, tasks));
        };
        let total = attach(
            op,
            total,
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(dl.len());
                cpu::scale(&dl, dy[0], &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        );
        Ok((total, tasks))
    }

    /// Fused weighted softmax cross-entropy of packed logits `self` `[n, width]` (task t owns
    /// `layout.range(t)`), class targets `[n, T]`, optional mask `[n, T]` and weights p `[T]`.
    /// Returns the tracked weighted total (rank 0) and each task's mean loss and count, on the
    /// logits' device.
    pub fn weighted_ce_loss(
        &self,
        layout: &TaskLayout,
        targets: &[i64],
        mask: Option<&[u8]>,
        weights: &[f32],
        ignore_index: i64,
    ) -> Result<(Tensor, TaskLosses)> {
        let n = self.check_packed("weighted_ce_loss", layout)?;
        if let Some(g) = gpu::gpu_of("weighted_ce_loss", &[self])? {
            let counts = check_ce_targets(layout, n, targets, mask, ignore_index)?;
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
            let out = weighted_ce_loss_device(&g, &input, dl.as_mut())?;
            return record_on_gpu("weighted_ce_loss", self, &g, out, counts, dl);
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
        self.record_weighted("weighted_ce_loss", out, dlogits)
    }

    /// Fused weighted sigmoid BCE of packed logits `self` `[n, width]` against targets
    /// `[n, width]` in [0, 1], optional mask `[n, T]` and weights p `[T]` (each task's loss is
    /// the mean over its valid samples and columns). Returns the tracked total and per-task
    /// losses, on the logits' device.
    pub fn weighted_bce_loss(
        &self,
        layout: &TaskLayout,
        targets: &[f32],
        mask: Option<&[u8]>,
        weights: &[f32],
    ) -> Result<(Tensor, TaskLosses)> {
        let n = self.check_packed("weighted_bce_loss", layout)?;
        if let Some(g) = gpu::gpu_of("weighted_bce_loss", &[self])? {
            let counts = check_bce_targets(layout, n, targets, mask)?;
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
            let out = weighted_bce_loss_device(&g, &input, dl.as_mut())?;
            return record_on_gpu("weighted_bce_loss", self, &g, out, counts, dl);
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
        self.record_weighted("weighted_bce_loss", out, dlogits)
    }
}
