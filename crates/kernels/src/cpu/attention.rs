//! Fused multi-head self-attention core on a packed qkv projection, forward and backward.
//!
//! The input is the qkv linear's output `[n, t, 3, heads, hd]` (timm layout, viewed as
//! `[n, t, 3·d]`), the output the merged heads `[n, t, d]` (d = heads·hd). Each (image, head)
//! pair is one task that reads its q, k, v straight from the packed rows through strided GEMMs
//! and writes its own columns of the output, so the split / permute / scale / merge copies of
//! the composed version (and their backward copies) disappear. Results do not depend on the
//! thread count: every output element is written by exactly one task, in a fixed order.

use super::checks::{Numel, buf, numel};
use super::softmax::row_max;
use super::weighted_loss::exp_f32;
use crate::error::{KernelError, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Shape of a self-attention core: batch `n`, tokens `t`, `heads` heads of size `hd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Batch size.
    pub n: usize,
    /// Tokens per image.
    pub t: usize,
    /// Number of heads.
    pub heads: usize,
    /// Size of one head.
    pub hd: usize,
}

impl AttentionShape {
    /// Model width d = heads·hd.
    pub fn dim(&self) -> usize {
        self.heads * self.hd
    }

    /// Elements of the packed qkv input, n·t·3·d.
    pub fn qkv_len(&self) -> usize {
        self.n * self.t * 3 * self.dim()
    }

    /// Elements of the merged output, n·t·d.
    pub fn out_len(&self) -> usize {
        self.n * self.t * self.dim()
    }

    /// Elements of the saved attention probabilities, n·heads·t·t.
    pub fn probs_len(&self) -> usize {
        self.n * self.heads * self.t * self.t
    }
}

/// Checks the shape (no zero dimension, no overflow of the qkv or probs sizes, counting with
/// `count`), the `packed` buffers `[n, t, 3, heads, hd]` (qkv, and dqkv backward), `probs`
/// `[n, heads, t, t]` and the `merged` one `[n, t, d]` (out, or dout backward); shared with the
/// CUDA twin.
pub(crate) fn check_attention(
    op: &'static str,
    count: Numel,
    s: &AttentionShape,
    packed: &[(&str, usize)],
    probs_len: usize,
    (merged, merged_len): (&str, usize),
) -> Result<()> {
    let (n, t, heads, hd) = (s.n, s.t, s.heads, s.hd);
    count(
        op,
        &[("n", n), ("t", t), ("3", 3), ("heads", heads), ("hd", hd)],
    )?;
    count(op, &[("n", n), ("heads", heads), ("t", t), ("t", t)])?;
    let shape = format_args!("[n={n}, t={t}, 3, heads={heads}, hd={hd}]");
    for &(name, len) in packed {
        buf(op, name, len, s.qkv_len(), shape)?;
    }
    let pshape = format_args!("[n={n}, heads={heads}, t={t}, t={t}]");
    buf(op, "probs", probs_len, s.probs_len(), pshape)?;
    let d = s.dim();
    buf(
        op,
        merged,
        merged_len,
        s.out_len(),
        format_args!("[n={n}, t={t}, d={d}]"),
    )
}

/// A raw pointer that tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every use writes a set of elements that no other task touches (one (image, head)
// pair's columns), and the buffer outlives the parallel loop.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole Send + Sync wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Strided product dst = alpha·lhs·rhs (+ dst when `acc`), on the calling thread. Each
/// operand is (pointer, row stride, column stride); sizes m×k times k×n.
///
/// # Safety
/// Every addressed element must lie inside its buffer, and dst must not overlap lhs or rhs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided(
    (m, k, n): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    alpha: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            false,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Forward: per image b and head h, P = softmax(scale·q·kᵀ) (saved in `probs`
/// `[n, heads, t, t]`) and out[b, :, h·hd..(h+1)·hd] = P·v, reading q, k, v from `qkv`
/// `[n, t, 3, heads, hd]`. `out` `[n, t, heads·hd]` and `probs` are overwritten.
pub fn attention_forward(
    s: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "attention_forward";
    let bufs = [("qkv", qkv.len())];
    check_attention(OP, numel, &s, &bufs, probs.len(), ("out", out.len()))?;
    let (t, hd, d) = (s.t, s.hd, s.dim());
    let out_ptr = SharedMut(out.as_mut_ptr());
    probs
        .par_chunks_mut(t * t)
        .enumerate()
        .for_each(|(task, p)| {
            let (b, h) = (task / s.heads, task % s.heads);
            let base = b * t * 3 * d + h * hd;
            let (q, k, v) = (&qkv[base..], &qkv[base + d..], &qkv[base + 2 * d..]);
            let row = 3 * d;
            // SAFETY: q, k, v rows b·t..(b+1)·t at stride 3d stay inside qkv (its length was
            // checked); p is this task's own t×t block; the output block (rows of image b,
            // columns h·hd..) belongs to this task alone.
            unsafe {
                gemm_strided(
                    (t, hd, t),
                    (p.as_mut_ptr(), t, 1),
                    (q.as_ptr(), row, 1),
                    (k.as_ptr(), 1, row),
                    scale,
                );
            }
            for pr in p.chunks_mut(t) {
                let m = row_max(pr);
                let mut sum = 0.0f32;
                for v in pr.iter_mut() {
                    *v = exp_f32(*v - m);
                    sum += *v;
                }
                let inv = 1.0 / sum;
                pr.iter_mut().for_each(|v| *v *= inv);
            }
            // SAFETY: see above.
            unsafe {
                let o = out_ptr.get().add(b * t * d + h * hd);
                gemm_strided(
                    (t, t, hd),
                    (o, d, 1),
                    (p.as_ptr(), t, 1),
                    (v.as_ptr(), row, 1),
                    1.0,
                );
            }
        });
    Ok(())
}

thread_local! {
    /// Per-thread t×t scratch for dP in the backward (reused across tasks and calls).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Backward of [`attention_forward`]: from `dout` `[n, t, d]`, the saved `probs` and the
/// forward input `qkv`, writes dqkv `[n, t, 3, heads, hd]` (overwritten).
pub fn attention_backward(
    s: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
) -> Result<()> {
    const OP: &str = "attention_backward";
    let bufs = [("qkv", qkv.len()), ("dqkv", dqkv.len())];
    check_attention(OP, numel, &s, &bufs, probs.len(), ("dout", dout.len()))?;
    let (t, hd, d) = (s.t, s.hd, s.dim());
    if !scale.is_finite() {
        return Err(KernelError::new(OP, format!("scale {scale} is not finite")));
    }
    let dq_ptr = SharedMut(dqkv.as_mut_ptr());
    (0..s.n * s.heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / s.heads, task % s.heads);
        let base = b * t * 3 * d + h * hd;
        let row = 3 * d;
        let (q, k, v) = (&qkv[base..], &qkv[base + d..], &qkv[base + 2 * d..]);
        let p = &probs[task * t * t..(task + 1) * t * t];
        let go = &dout[b * t * d + h * hd..];
        SCRATCH.with(|cell| {
            let mut dp = cell.borrow_mut();
            dp.resize(t * t, 0.0);
            // SAFETY: all reads stay inside qkv / dout / probs (lengths checked above); the
            // writes go to this task's own columns of dqkv (image b, head h, slots q/k/v).
            unsafe {
                let dst = dq_ptr.get().add(base);
                // dP = dO·vᵀ.
                gemm_strided(
                    (t, hd, t),
                    (dp.as_mut_ptr(), t, 1),
                    (go.as_ptr(), d, 1),
                    (v.as_ptr(), 1, row),
                    1.0,
                );
                // dV = Pᵀ·dO.
                gemm_strided(
                    (t, t, hd),
                    (dst.add(2 * d), row, 1),
                    (p.as_ptr(), 1, t),
                    (go.as_ptr(), d, 1),
                    1.0,
                );
            }
            // dS = scale·P ⊙ (dP − Σ_j dP⊙P) (softmax backward, then the q·kᵀ scale).
            for (dr, pr) in dp.chunks_mut(t).zip(p.chunks(t)) {
                let dot: f32 = dr.iter().zip(pr).map(|(&g, &y)| g * y).sum();
                for (g, &y) in dr.iter_mut().zip(pr) {
                    *g = scale * y * (*g - dot);
                }
            }
            // SAFETY: as above.
            unsafe {
                let dst = dq_ptr.get().add(base);
                // dQ = dS·K.
                gemm_strided(
                    (t, t, hd),
                    (dst, row, 1),
                    (dp.as_ptr(), t, 1),
                    (k.as_ptr(), row, 1),
                    1.0,
                );
                // dK = dSᵀ·Q.
                gemm_strided(
                    (t, t, hd),
                    (dst.add(d), row, 1),
                    (dp.as_ptr(), 1, t),
                    (q.as_ptr(), row, 1),
                    1.0,
                );
            }
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Naive f64 reference of the forward: (probs, out).
    fn reference(s: AttentionShape, scale: f32, qkv: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (t, hd, d) = (s.t, s.hd, s.dim());
        let at = |b: usize, i: usize, slot: usize, h: usize, c: usize| {
            qkv[((b * t + i) * 3 + slot) * d + h * hd + c] as f64
        };
        let mut probs = vec![0.0; s.probs_len()];
        let mut out = vec![0.0; s.out_len()];
        for b in 0..s.n {
            for h in 0..s.heads {
                for i in 0..t {
                    let logits: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd)
                                .map(|c| at(b, i, 0, h, c) * at(b, j, 1, h, c))
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                    for j in 0..t {
                        let pij = (logits[j] - m).exp() / z;
                        probs[((b * s.heads + h) * t + i) * t + j] = pij;
                        for c in 0..hd {
                            out[(b * t + i) * d + h * hd + c] += pij * at(b, j, 2, h, c);
                        }
                    }
                }
            }
        }
        (probs, out)
    }

    #[test]
    fn forward_matches_naive_reference() {
        let s = AttentionShape {
            n: 2,
            t: 5,
            heads: 3,
            hd: 4,
        };
        let qkv = rand(s.qkv_len(), 3);
        let mut probs = vec![0.0; s.probs_len()];
        let mut out = vec![0.0; s.out_len()];
        attention_forward(s, 0.5, &qkv, &mut probs, &mut out).unwrap();
        let (rp, ro) = reference(s, 0.5, &qkv);
        for (a, b) in probs.iter().zip(&rp).chain(out.iter().zip(&ro)) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let s = AttentionShape {
            n: 2,
            t: 3,
            heads: 2,
            hd: 2,
        };
        let scale = 0.7;
        let qkv = rand(s.qkv_len(), 5);
        let cot = rand(s.out_len(), 9);
        let loss = |x: &[f32]| -> f64 {
            let (_, o) = reference(s, scale, x);
            o.iter().zip(&cot).map(|(a, &c)| a * c as f64).sum()
        };
        let mut probs = vec![0.0; s.probs_len()];
        let mut out = vec![0.0; s.out_len()];
        attention_forward(s, scale, &qkv, &mut probs, &mut out).unwrap();
        let mut dqkv = vec![f32::NAN; s.qkv_len()];
        attention_backward(s, scale, &qkv, &probs, &cot, &mut dqkv).unwrap();
        let h = 1e-3f32;
        for i in 0..qkv.len() {
            let (mut up, mut dn) = (qkv.clone(), qkv.clone());
            up[i] += h;
            dn[i] -= h;
            let fd = (loss(&up) - loss(&dn)) / (2.0 * h as f64);
            assert!(
                (dqkv[i] as f64 - fd).abs() < 1e-3,
                "element {i}: {} vs {fd}",
                dqkv[i]
            );
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = AttentionShape {
            n: 1,
            t: 2,
            heads: 1,
            hd: 2,
        };
        let mut probs = vec![0.0; s.probs_len()];
        let mut out = vec![0.0; s.out_len()];
        let err = attention_forward(s, 1.0, &[0.0; 3], &mut probs, &mut out).unwrap_err();
        assert!(err.to_string().contains("qkv"), "{err}");
    }
}
