//! Weighted sums of task gradients: the direction `sum_t w_t g_t`, accumulated in f64.

use rayon::prelude::*;

use crate::input::TaskGradients;

/// Columns per parallel chunk (the unit of rayon work).
const CHUNK: usize = 1 << 16;
/// Elements per stack accumulator block (8 KiB of f64).
const BLOCK: usize = 1024;

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
                let src = &grads.row(t)[o..o + d.len()];
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
