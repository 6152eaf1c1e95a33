//! Matrix products on the CPU, backed by the `gemm` crate.

use super::checks::{buf, numel};
use crate::error::Result;
use gemm::Parallelism;
use rayon::prelude::*;

/// Work (m·k·n) below which a batch of small products is spread over threads one product
/// each, instead of letting every product use all threads.
const SMALL_PRODUCT: usize = 1 << 21;

/// Product `C = alpha·op(A)·op(B) + beta·C` on contiguous row-major operands whose lengths
/// the caller has checked.
#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    par: Parallelism,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // A is [m×k] (row stride k) or stored [k×m] when transposed (row stride 1, column stride m).
    let (a_rs, a_cs) = if trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the lengths were checked by the callers, the strides stay inside the buffers,
    // and `c` does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// One product on the calling thread (for callers that already split work across threads).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_serial(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
) {
    gemm_raw(
        m,
        k,
        n,
        a,
        trans_a,
        b,
        trans_b,
        c,
        alpha,
        beta,
        Parallelism::None,
    );
}

/// C[m×n] = alpha·op(A)·op(B) + beta·C. A is stored [m×k] (or [k×m] when `trans_a`), B is
/// [k×n] (or [n×k] when `trans_b`). With `beta = 0` the old content of C is never read.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
) -> Result<()> {
    const OP: &str = "matmul";
    let ma = numel(OP, &[("m", m), ("k", k)])?;
    let mb = numel(OP, &[("k", k), ("n", n)])?;
    let mc = numel(OP, &[("m", m), ("n", n)])?;
    let sa = if trans_a { [k, m] } else { [m, k] };
    let sb = if trans_b { [n, k] } else { [k, n] };
    buf(OP, "a", a.len(), ma, format_args!("{sa:?}"))?;
    buf(OP, "b", b.len(), mb, format_args!("{sb:?}"))?;
    buf(OP, "c", c.len(), mc, format_args!("[{m}, {n}]"))?;
    gemm_raw(
        m,
        k,
        n,
        a,
        trans_a,
        b,
        trans_b,
        c,
        alpha,
        beta,
        Parallelism::Rayon(0),
    );
    Ok(())
}

/// `batch` independent products C_i = alpha·op(A_i)·op(B_i) + beta·C_i, each operand
/// contiguous (a holds batch·m·k elements, b batch·k·n, c batch·m·n).
#[allow(clippy::too_many_arguments)]
pub fn matmul_batched(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
) -> Result<()> {
    const OP: &str = "matmul_batched";
    let ma = numel(OP, &[("batch", batch), ("m", m), ("k", k)])?;
    let mb = numel(OP, &[("batch", batch), ("k", k), ("n", n)])?;
    let mc = numel(OP, &[("batch", batch), ("m", m), ("n", n)])?;
    let sa = if trans_a {
        [batch, k, m]
    } else {
        [batch, m, k]
    };
    let sb = if trans_b {
        [batch, n, k]
    } else {
        [batch, k, n]
    };
    buf(OP, "a", a.len(), ma, format_args!("{sa:?}"))?;
    buf(OP, "b", b.len(), mb, format_args!("{sb:?}"))?;
    buf(OP, "c", c.len(), mc, format_args!("[{batch}, {m}, {n}]"))?;
    let (sa, sb, sc) = (m * k, k * n, m * n);
    if batch > 1 && m * k * n < SMALL_PRODUCT {
        c.par_chunks_mut(sc).enumerate().for_each(|(i, ci)| {
            gemm_serial(
                m,
                k,
                n,
                &a[i * sa..(i + 1) * sa],
                trans_a,
                &b[i * sb..(i + 1) * sb],
                trans_b,
                ci,
                alpha,
                beta,
            );
        });
    } else {
        for (i, ci) in c.chunks_mut(sc).enumerate() {
            gemm_raw(
                m,
                k,
                n,
                &a[i * sa..(i + 1) * sa],
                trans_a,
                &b[i * sb..(i + 1) * sb],
                trans_b,
                ci,
                alpha,
                beta,
                Parallelism::Rayon(0),
            );
        }
    }
    Ok(())
}
