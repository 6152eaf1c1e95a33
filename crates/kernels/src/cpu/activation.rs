//! Pointwise activations: ReLU and exact (erf) GELU, forward and backward.

use super::checks::{PAR_MIN, same_len};
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

/// Exact GELU: y = 0.5·x·(1 + erf(x/√2)).
pub fn gelu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    same_len("gelu_forward", &[("x", x.len()), ("y", y.len())])?;
    pointwise(y, |yc, o| {
        for (d, &v) in yc.iter_mut().zip(&x[o..]) {
            *d = 0.5 * v * (1.0 + libm::erff(v * FRAC_1_SQRT_2));
        }
    });
    Ok(())
}

/// dx = dy·(Φ(x) + x·φ(x)) for exact GELU.
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    same_len(
        "gelu_backward",
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    pointwise(dx, |dc, o| {
        for ((d, &v), &g) in dc.iter_mut().zip(&x[o..]).zip(&dy[o..]) {
            let cdf = 0.5 * (1.0 + libm::erff(v * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
            *d = g * (cdf + v * pdf);
        }
    });
    Ok(())
}
