//! Weighted sums of task gradients: the direction `sum_t w_t g_t`, accumulated in f64.

use rayon::prelude::*;

use crate::input::TaskGradients;

/// Columns per parallel chunk: a f64 accumulator of this size stays in L1/L2.
const CHUNK: usize = 1 << 14;

/// `sum_t weights[t] * g_t` over all P elements.
pub fn combine(grads: &TaskGradients, weights: &[f64]) -> Vec<f32> {
    debug_assert_eq!(weights.len(), grads.tasks());
    let p = grads.params();
    let mut out = vec![0f32; p];
    combine_range(grads, weights, 0, &mut out);
    out
}

/// `sum_t weights[l][t] * g_t` with a separate weight vector per segment `l`.
pub fn combine_segments(grads: &TaskGradients, weights: &[Vec<f64>]) -> Vec<f32> {
    debug_assert_eq!(weights.len(), grads.segment_ends().len());
    let p = grads.params();
    let mut out = vec![0f32; p];
    let mut start = 0;
    for (l, &end) in grads.segment_ends().iter().enumerate() {
        combine_range(grads, &weights[l], start, &mut out[start..end]);
        start = end;
    }
    out
}

/// Writes `sum_t w_t g_t[start..start + out.len()]` into `out`.
fn combine_range(grads: &TaskGradients, w: &[f64], start: usize, out: &mut [f32]) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let off = start + c * CHUNK;
        let mut acc = vec![0f64; dst.len()];
        for (t, &wt) in w.iter().enumerate() {
            if wt == 0.0 {
                continue;
            }
            let src = &grads.row(t)[off..off + dst.len()];
            for (a, &g) in acc.iter_mut().zip(src) {
                *a += wt * g as f64;
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    });
}
