//! Weighted sums of task gradients: the direction `sum_t w_t g_t`, accumulated in f64.

use rayon::prelude::*;

use crate::error::{MtoError, Result};
use crate::input::TaskGradients;

/// Columns per parallel chunk (the unit of rayon work).
const CHUNK: usize = 1 << 16;
/// Elements per stack accumulator block (8 KiB of f64).
const BLOCK: usize = 1024;

/// Checks that `w` has one weight per task.
fn check_weights(op: &'static str, w: &[f64], tasks: usize) -> Result<()> {
    if w.len() != tasks {
        return Err(MtoError::invalid(
            op,
            format!("{} weights for gradients of {tasks} tasks", w.len()),
        ));
    }
    Ok(())
}

/// `sum_t weights[t] * g_t` over all P elements. Fails for shape-only gradients (their values
/// live elsewhere) and for a weight count other than T.
pub fn combine(grads: &TaskGradients, weights: &[f64]) -> Result<Vec<f32>> {
    check_weights("combine", weights, grads.tasks())?;
    let data = grads.data()?;
    let p = grads.params();
    let mut out = vec![0f32; p];
    combine_range(data, p, weights, 0, &mut out);
    Ok(out)
}

/// `sum_t weights[l][t] * g_t` with a separate weight vector per segment `l`. Fails for
/// shape-only gradients and for weights of another shape than L x T.
pub fn combine_segments(grads: &TaskGradients, weights: &[Vec<f64>]) -> Result<Vec<f32>> {
    let ends = grads.segment_ends();
    if weights.len() != ends.len() {
        return Err(MtoError::invalid(
            "combine_segments",
            format!(
                "{} weight vectors for gradients of {} segments",
                weights.len(),
                ends.len()
            ),
        ));
    }
    for w in weights {
        check_weights("combine_segments", w, grads.tasks())?;
    }
    let data = grads.data()?;
    let p = grads.params();
    let mut out = vec![0f32; p];
    let mut start = 0;
    for (l, &end) in ends.iter().enumerate() {
        combine_range(data, p, &weights[l], start, &mut out[start..end]);
        start = end;
    }
    Ok(out)
}

/// Writes `sum_t w_t g_t[start..start + out.len()]` into `out` (`data` is T x P row-major).
fn combine_range(data: &[f32], p: usize, w: &[f64], start: usize, out: &mut [f32]) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let off = start + c * CHUNK;
        // Small blocks keep the f64 accumulator on the stack and in L1.
        let mut acc = [0f64; BLOCK];
        for (b, d) in dst.chunks_mut(BLOCK).enumerate() {
            let o = off + b * BLOCK;
            let acc = &mut acc[..d.len()];
            acc.fill(0.0);
            for (t, &wt) in w.iter().enumerate() {
                if wt == 0.0 {
                    continue;
                }
                let src = &data[t * p + o..t * p + o + d.len()];
                for (a, &g) in acc.iter_mut().zip(src) {
                    *a += wt * g as f64;
                }
            }
            for (x, a) in d.iter_mut().zip(acc.iter()) {
                *x = *a as f32;
            }
        }
    });
}
