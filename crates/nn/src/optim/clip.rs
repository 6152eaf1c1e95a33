//! Global gradient-norm clipping (`torch.nn.utils.clip_grad_norm_`, L2 norm).

use crate::error::{NnError, Result};

/// The L2 norm of all gradients together, accumulated in f64.
pub fn global_grad_norm<G: AsRef<[f32]>>(grads: &[G]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.as_ref().iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// The factor `min(1, max_norm / (norm + 1e-6))` that clips a total gradient norm `norm`;
/// an error for a non-positive `max_norm` or a non-finite norm. Shared by the host
/// [`clip_grad_norm`] and the device step, which computes the norm on the GPU.
pub fn clip_coef(norm: f64, max_norm: f32) -> Result<f32> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(NnError::invalid(
            "clip_grad_norm",
            format!("max_norm must be a positive number, got {max_norm}"),
        ));
    }
    if !norm.is_finite() {
        return Err(NnError::invalid(
            "clip_grad_norm",
            format!("the total gradient norm is {norm} (non-finite gradients)"),
        ));
    }
    Ok((max_norm as f64 / (norm + 1e-6)).min(1.0) as f32)
}

/// Scales all gradients by `min(1, max_norm / (norm + 1e-6))` as PyTorch does and returns the
/// norm before clipping. A non-finite norm is an error (nothing is scaled), so a diverging run
/// is reported instead of silently turning every parameter into NaN.
pub fn clip_grad_norm<G: AsMut<[f32]> + AsRef<[f32]>>(
    grads: &mut [G],
    max_norm: f32,
) -> Result<f32> {
    let norm = global_grad_norm(grads);
    let coef = clip_coef(norm, max_norm)?;
    if coef < 1.0 {
        for g in grads.iter_mut() {
            for x in g.as_mut() {
                *x *= coef;
            }
        }
    }
    Ok(norm as f32)
}
