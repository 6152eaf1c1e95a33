//! The one call site of the Gram kernel: every dot product between task gradients in this
//! crate goes through [`task_gram`], so a CUDA path can replace it in one place.

pub use scalarize_kernels::cpu::{GramPart, SegmentedGram};

use crate::error::{MtoError, Result};
use crate::input::TaskGradients;

/// Per-segment and whole-vector Gram matrices (f64) of the task gradients.
///
/// Fails if a gradient holds a NaN or an infinity (seen on the Gram diagonal), since no method
/// can give a meaningful direction from it, and for shape-only gradients (compute their Gram
/// where they live, e.g. with the kernels crate's `cuda::grad_gram`).
pub fn task_gram(grads: &TaskGradients) -> Result<SegmentedGram> {
    let gram = scalarize_kernels::cpu::grad_gram(
        grads.data()?,
        grads.tasks(),
        grads.params(),
        grads.segment_ends(),
    )?;
    let t = gram.t;
    if let Some(i) = (0..t).find(|&i| !gram.total[i * t + i].is_finite()) {
        return Err(MtoError::invalid(
            "task_gram",
            format!("gradient of task {i} holds a NaN or an infinity"),
        ));
    }
    Ok(gram)
}
