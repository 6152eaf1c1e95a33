//! The interface every method implements.

use crate::error::{MtoError, Result};
use crate::input::{AggregateInput, Aggregation, Requirement};

/// A scalarization or MTO method: turns one step's losses (and gradients) into task weights
/// and a combined update direction.
pub trait Aggregator: Send {
    /// Short method name, e.g. `"pcgrad"`.
    fn name(&self) -> &'static str;

    /// What the trainer must provide in [`AggregateInput`].
    fn requirement(&self) -> Requirement;

    /// Combines one step's input. Randomised methods draw from their own seeded generator.
    fn aggregate(&mut self, input: &AggregateInput) -> Result<Aggregation>;

    /// Whether the method needs the gradients' values, not just their Gram matrices (e.g.
    /// GradDrop's elementwise signs). When false, shape-only gradients
    /// ([`crate::TaskGradients::shape_only`]) with their Gram give the same weights as the
    /// values, and the caller combines the gradients where they live.
    fn needs_gradient_values(&self) -> bool {
        false
    }

    /// Current values of the method's learnable parameters (empty for most methods).
    fn params(&self) -> &[f64] {
        &[]
    }

    /// Gradients of the method's own objective with respect to [`Aggregator::params`], as of
    /// the last `aggregate` call (empty for most methods). The trainer's optimizer uses them.
    fn param_grads(&self) -> &[f64] {
        &[]
    }

    /// Replaces the learnable parameters (after an optimizer step).
    fn set_params(&mut self, values: &[f64]) -> Result<()> {
        if values.is_empty() {
            Ok(())
        } else {
            Err(MtoError::invalid(
                self.name(),
                format!("has no learnable parameters, got {} values", values.len()),
            ))
        }
    }
}

/// Checks a replacement parameter vector: right length, finite values.
pub(crate) fn check_params(method: &'static str, values: &[f64], expected: usize) -> Result<()> {
    if values.len() != expected {
        return Err(MtoError::invalid(
            method,
            format!("got {} parameter values, expected {expected}", values.len()),
        ));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MtoError::invalid(
            method,
            format!("parameter {i} is {v}, expected a finite value"),
        ));
    }
    Ok(())
}

/// An [`Aggregation`] with `weights` and, when gradient values were given, their combination.
pub(crate) fn weighted(input: &AggregateInput, weights: Vec<f64>) -> Result<Aggregation> {
    Ok(Aggregation {
        direction: input.direction(&weights)?,
        weights,
        segment_weights: None,
    })
}
