//! Axis permutation (rank ≤ 6) and 2-D transpose, as ViT attention needs them.

use super::checks::{Numel, PAR_MIN, buf, numel};
use crate::error::{KernelError, Result};
use rayon::prelude::*;

/// Highest rank `permute` accepts.
pub const MAX_RANK: usize = 6;

/// y = x with axes permuted: y has shape [shape[perm[0]], shape[perm[1]], ...].
pub fn permute(x: &[f32], shape: &[usize], perm: &[usize], y: &mut [f32]) -> Result<()> {
    const OP: &str = "permute";
    let rank = shape.len();
    let (total, out_shape) = check_permute(OP, numel, shape, perm, x.len(), y.len())?;
    // Row-major strides of x, listed in output-axis order.
    let mut in_strides = [0usize; MAX_RANK];
    let mut st = 1;
    for a in (0..rank).rev() {
        in_strides[a] = st;
        st *= shape[a];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_shape[rank - 1];
    let last_stride = strides[rank - 1];
    let body = |(row, yr): (usize, &mut [f32])| {
        // Offset in x of the first element of output row `row`.
        let mut rem = row;
        let mut off = 0;
        for a in (0..rank - 1).rev() {
            off += (rem % out_shape[a]) * strides[a];
            rem /= out_shape[a];
        }
        if last_stride == 1 {
            yr.copy_from_slice(&x[off..off + last]);
        } else {
            for (j, d) in yr.iter_mut().enumerate() {
                *d = x[off + j * last_stride];
            }
        }
    };
    if total >= PAR_MIN {
        y.par_chunks_mut(last).enumerate().for_each(body);
    } else {
        y.chunks_mut(last).enumerate().for_each(body);
    }
    Ok(())
}

/// The permutation that undoes `perm` (entries outside `0..perm.len()` are ignored).
pub fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        if let Some(slot) = inv.get_mut(p) {
            *slot = i;
        }
    }
    inv
}

/// Checks `perm` against `shape` and buffers x and y of its size, counting with `count` (shared
/// with the CUDA twin); returns the element count and the output shape.
pub(crate) fn check_permute(
    op: &'static str,
    count: Numel,
    shape: &[usize],
    perm: &[usize],
    x_len: usize,
    y_len: usize,
) -> Result<(usize, Vec<usize>)> {
    let rank = shape.len();
    if rank == 0 || rank > MAX_RANK {
        return Err(KernelError::new(
            op,
            format!("rank {rank} of shape {shape:?} is not in 1..={MAX_RANK}"),
        ));
    }
    let mut seen = [false; MAX_RANK];
    let valid = perm.len() == rank
        && perm.iter().all(|&p| {
            let fresh = p < rank && !seen[p];
            if fresh {
                seen[p] = true;
            }
            fresh
        });
    if !valid {
        return Err(KernelError::new(
            op,
            format!("perm {perm:?} is not a permutation of the {rank} axes of shape {shape:?}"),
        ));
    }
    let named: Vec<(&str, usize)> = shape.iter().map(|&d| ("axis", d)).collect();
    let total = count(op, &named)?;
    buf(op, "x", x_len, total, format_args!("{shape:?}"))?;
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    buf(op, "y", y_len, total, format_args!("{out_shape:?}"))?;
    Ok((total, out_shape))
}

/// Checks buffers x [rows, cols] and y [cols, rows], counting with `count` (shared with the
/// CUDA twin); returns the element count.
pub(crate) fn check_transpose2d(
    op: &'static str,
    count: Numel,
    rows: usize,
    cols: usize,
    x_len: usize,
    y_len: usize,
) -> Result<usize> {
    let total = count(op, &[("rows", rows), ("cols", cols)])?;
    buf(
        op,
        "x",
        x_len,
        total,
        format_args!("[rows={rows}, cols={cols}]"),
    )?;
    buf(
        op,
        "y",
        y_len,
        total,
        format_args!("[cols={cols}, rows={rows}]"),
    )?;
    Ok(total)
}

/// y [cols, rows] = transpose of x [rows, cols], in cache-sized tiles.
pub fn transpose2d(rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    const OP: &str = "transpose2d";
    let total = check_transpose2d(OP, numel, rows, cols, x.len(), y.len())?;
    const T: usize = 32;
    // Each task owns T rows of y (T columns of x).
    let body = |(tb, yb): (usize, &mut [f32])| {
        let c0 = tb * T;
        let nc = yb.len() / rows;
        for r0 in (0..rows).step_by(T) {
            let r1 = (r0 + T).min(rows);
            for c in 0..nc {
                let yrow = &mut yb[c * rows..(c + 1) * rows];
                for r in r0..r1 {
                    yrow[r] = x[r * cols + c0 + c];
                }
            }
        }
    };
    if total >= PAR_MIN {
        y.par_chunks_mut(T * rows).enumerate().for_each(body);
    } else {
        y.chunks_mut(T * rows).enumerate().for_each(body);
    }
    Ok(())
}
