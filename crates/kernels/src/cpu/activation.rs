//! Pointwise activations: ReLU and exact (erf) GELU, forward and backward.

use super::checks::{PAR_MIN, same_len};
use super::has_avx512;
use super::weighted_loss::exp_f32;
use crate::error::Result;
use rayon::prelude::*;

/// Elements per rayon task of a pointwise loop.
const CHUNK: usize = 1 << 14;

/// Runs `f(out_chunk, offset)` over `out`, in parallel chunks when large.
fn pointwise(out: &mut [f32], f: impl Fn(&mut [f32], usize) + Sync + Send) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(c, i * CHUNK));
    } else {
        f(out, 0);
    }
}

/// y = max(x, 0).
pub fn relu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("relu_forward", &[("x", x.len()), ("y", y.len())])?;
    pointwise(y, |yc, o| {
        for (d, &v) in yc.iter_mut().zip(&x[o..]) {
            *d = if v > 0.0 { v } else { 0.0 };
        }
    });
    Ok(())
}

/// dx = dy where x > 0, else 0.
pub fn relu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    same_len(
        "relu_backward",
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    pointwise(dx, |dc, o| {
        for ((d, &v), &g) in dc.iter_mut().zip(&x[o..]).zip(&dy[o..]) {
            *d = if v > 0.0 { g } else { 0.0 };
        }
    });
    Ok(())
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/sqrt(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Φ(x) and φ(x), the standard normal CDF and density, written to vectorise: erfc by
/// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, f32 level) times exp(−x²/2) from
/// `exp_f32`. A scalar libm `erff` per element made GELU cost more than the matmuls around it.
#[inline(always)]
fn norm_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = exp_f32(-z * z);
    // Φ(−|x|) = erfc(|x|/√2)/2.
    let tail = 0.5 * poly * e;
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, INV_SQRT_2PI * e)
}

/// y = x·Φ(x) over one chunk (inlined into the SSE2 and the AVX-512 entry points).
#[inline(always)]
fn gelu_chunk(x: &[f32], y: &mut [f32]) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = v * norm_cdf_pdf(v).0;
    }
}

/// dx = dy·(Φ(x) + x·φ(x)) over one chunk.
#[inline(always)]
fn gelu_grad_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let (cdf, pdf) = norm_cdf_pdf(v);
        *d = g * (cdf + v * pdf);
    }
}

/// The chunk loops compiled for AVX-512: the crate's baseline target is SSE2, which left GELU
/// (an exp and a division per element) at 4 lanes and ~8% of a ViT step. Rust never contracts
/// mul+add into FMA, so both versions give the same bits.
#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu(x: &[f32], y: &mut [f32]) {
        super::gelu_chunk(x, y)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        super::gelu_grad_chunk(x, dy, dx)
    }
}

/// GELU, erf form: y = 0.5·x·(1 + erf(x/√2)) = x·Φ(x) (erf to f32 accuracy, not tanh).
pub fn gelu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("gelu_forward", &[("x", x.len()), ("y", y.len())])?;
    let fast = has_avx512();
    pointwise(y, |yc, o| {
        let xc = &x[o..o + yc.len()];
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU supports AVX-512F (checked by has_avx512).
            return unsafe { wide::gelu(xc, yc) };
        }
        let _ = fast;
        gelu_chunk(xc, yc)
    });
    Ok(())
}

/// dx = dy·(Φ(x) + x·φ(x)) for exact GELU.
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    same_len(
        "gelu_backward",
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    let fast = has_avx512();
    pointwise(dx, |dc, o| {
        let (xc, gc) = (&x[o..o + dc.len()], &dy[o..o + dc.len()]);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU supports AVX-512F (checked by has_avx512).
            return unsafe { wide::gelu_grad(xc, gc, dc) };
        }
        let _ = fast;
        gelu_grad_chunk(xc, gc, dc)
    });
    Ok(())
}
