//! Task losses on head outputs and their weighted sum (the scalarized objective).

use scalarize_autograd::Tensor;

use crate::error::{NnError, Result};
use crate::spec::HeadSpec;

/// Class index ignored by the cross-entropy losses (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Targets of one head for the rows it saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Class index per row (classifier), [`IGNORE_INDEX`] to skip a row.
    Classes(Vec<i64>),
    /// 0/1 (or soft) value per row and attribute, row-major `[rows, A]` (binary head).
    Attributes(Vec<f32>),
    /// Class index per pixel, `[rows, h, w]` (dense head as segmentation).
    DenseClasses(Vec<i64>),
    /// Value per output channel and pixel, `[rows, K, h, w]` (dense head as regression, MSE).
    DenseValues(Vec<f32>),
}

/// The mean loss of `head`'s `output` against `target`: softmax cross-entropy (classifier),
/// sigmoid BCE (binary), per-pixel cross-entropy or mean squared error (dense).
pub fn head_loss(head: &HeadSpec, output: &Tensor, target: &Target) -> Result<Tensor> {
    let bad = || {
        NnError::invalid(
            "head loss",
            format!("target {} does not fit head `{head}`", target_name(target)),
        )
    };
    match (head, target) {
        (HeadSpec::Classifier { .. }, Target::Classes(t)) => {
            Ok(output.cross_entropy(t, IGNORE_INDEX)?)
        }
        (HeadSpec::Binary { .. }, Target::Attributes(t)) => Ok(output.bce_with_logits(t)?),
        (HeadSpec::Dense { .. }, Target::DenseClasses(t)) => {
            let s = output.shape().to_vec();
            if s.len() != 4 {
                return Err(bad());
            }
            let logits = output
                .permute(&[0, 2, 3, 1])?
                .reshape(&[s[0] * s[2] * s[3], s[1]])?;
            Ok(logits.cross_entropy(t, IGNORE_INDEX)?)
        }
        (HeadSpec::Dense { .. }, Target::DenseValues(t)) => {
            let target = Tensor::new(t.clone(), output.shape())
                .map_err(|_| bad())?
                .to_device_like(output)?;
            let d = output.sub(&target)?;
            Ok(d.mul(&d)?.mean()?)
        }
        _ => Err(bad()),
    }
}

fn target_name(t: &Target) -> &'static str {
    match t {
        Target::Classes(_) => "Classes",
        Target::Attributes(_) => "Attributes",
        Target::DenseClasses(_) => "DenseClasses",
        Target::DenseValues(_) => "DenseValues",
    }
}

/// `sum_t weights[t] * losses[t]`, a rank-0 tensor.
pub fn weighted_sum(losses: &[Tensor], weights: &[f32]) -> Result<Tensor> {
    if losses.is_empty() || losses.len() != weights.len() {
        return Err(NnError::invalid(
            "weighted loss",
            format!(
                "{} losses and {} weights, expected the same non-zero number",
                losses.len(),
                weights.len()
            ),
        ));
    }
    let mut total = losses[0].scale(weights[0])?;
    for (l, &w) in losses.iter().zip(weights).skip(1) {
        total = total.add(&l.scale(w)?)?;
    }
    Ok(total)
}
