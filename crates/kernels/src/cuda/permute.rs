//! CUDA axis permutation (rank ≤ 6) and 2-D transpose (kernels/permute.cu): the twins of
//! [`crate::cpu::permute`]. `inverse_perm` is host index math, shared with the CPU.

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::{MAX_BLOCKS, grid_cfg, i64_arg, numel, rows_cfg, threads_per_row};
use super::gpu::Gpu;
use super::sources::PERMUTE;
use crate::cpu::permute::{check_permute, check_transpose2d};
use crate::error::Result;

pub use crate::cpu::permute::{MAX_RANK, inverse_perm};

/// Outer-axis slots of `pm_rows` and batch-axis slots of `pm_tiled`.
const ROW_SLOTS: usize = 5;
const BATCH_SLOTS: usize = 4;

/// Output axes after dropping size-1 axes and merging runs that stay adjacent in the input:
/// (size, input stride) per axis, outermost first; the output is row-major over the sizes.
fn simplify(shape: &[usize], perm: &[usize]) -> Vec<(usize, usize)> {
    let mut in_strides = [0usize; MAX_RANK];
    let mut st = 1;
    for a in (0..shape.len()).rev() {
        in_strides[a] = st;
        st *= shape[a];
    }
    let mut axes: Vec<(usize, usize)> = Vec::with_capacity(perm.len());
    for &p in perm {
        let (d, s) = (shape[p], in_strides[p]);
        if d == 1 {
            continue;
        }
        match axes.last_mut() {
            // The previous axis steps over exactly one run of this one: one axis.
            Some(last) if last.1 == s * d => *last = (last.0 * d, s),
            _ => axes.push((d, s)),
        }
    }
    axes
}

/// y = x with axes permuted: y has shape [shape[perm[0]], shape[perm[1]], ...].
pub fn permute(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    shape: &[usize],
    perm: &[usize],
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::permute";
    let (total, _) = check_permute(OP, numel, shape, perm, x.len(), y.len())?;

    let axes = simplify(shape, perm);
    let r = axes.len();
    if r <= 1 {
        // Nothing moves (all other axes have size 1): the same order of elements.
        return gpu.copy(x, 0, y, 0, total);
    }
    let (len, last_stride) = axes[r - 1];
    if last_stride == 1 {
        // Output rows are contiguous runs of x: pm_rows.
        let rows = total / len;
        let mut dims = [i64_arg(1); ROW_SLOTS];
        let mut strides = [i64_arg(0); ROW_SLOTS];
        // The r - 1 outer axes fill the last slots (innermost last).
        for (k, &(d, s)) in axes[..r - 1].iter().enumerate() {
            dims[ROW_SLOTS - (r - 1) + k] = i64_arg(d);
            strides[ROW_SLOTS - (r - 1) + k] = i64_arg(s);
        }
        let mut args = vec![
            x.arg(),
            y.arg_mut(),
            i64_arg(rows),
            i64_arg(len),
            Arg::i32(threads_per_row(len) as i32),
            Arg::i32((r - 1) as i32),
        ];
        args.extend(dims);
        args.extend(strides);
        return gpu.launch(&PERMUTE, "pm_rows", rows_cfg(rows, len), &args);
    }
    // A batched transpose: A = the input's contiguous axis (stride 1 after simplification),
    // B = the output's last axis.
    let ka = axes
        .iter()
        .position(|&(_, s)| s == 1)
        .expect("the input's innermost non-unit axis has stride 1");
    let mut out_strides = vec![0usize; r];
    let mut st = 1;
    for k in (0..r).rev() {
        out_strides[k] = st;
        st *= axes[k].0;
    }
    let batch: Vec<usize> = (0..r - 1).filter(|&k| k != ka).collect();
    let mut bd = [i64_arg(1); BATCH_SLOTS];
    let mut bx = [i64_arg(0); BATCH_SLOTS];
    let mut by = [i64_arg(0); BATCH_SLOTS];
    for (slot, &k) in (BATCH_SLOTS - batch.len()..).zip(&batch) {
        bd[slot] = i64_arg(axes[k].0);
        bx[slot] = i64_arg(axes[k].1);
        by[slot] = i64_arg(out_strides[k]);
    }
    let nbatch: usize = batch.iter().map(|&k| axes[k].0).product();
    tiled(
        gpu,
        x,
        y,
        (axes[ka].0, out_strides[ka]),
        (len, last_stride),
        nbatch,
        [bd, bx, by],
    )
}

/// Launches `pm_tiled`: axis A (contiguous in x) of `a` = (size, stride in y), axis B
/// (contiguous in y) of `b` = (size, stride in x), and the batch slots.
fn tiled(
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
    a: (usize, usize),
    b: (usize, usize),
    nbatch: usize,
    slots: [[Arg<'static>; BATCH_SLOTS]; 3],
) -> Result<()> {
    let tiles = a.0.div_ceil(32) * b.0.div_ceil(32) * nbatch;
    let cfg = grid_cfg(tiles, MAX_BLOCKS, (32, 8, 1));
    let mut args = vec![
        x.arg(),
        y.arg_mut(),
        i64_arg(a.0),
        i64_arg(b.0),
        i64_arg(b.1),
        i64_arg(a.1),
        i64_arg(nbatch),
    ];
    for s in slots {
        args.extend(s);
    }
    gpu.launch(&PERMUTE, "pm_tiled", cfg, &args)
}

/// y [cols, rows] = transpose of x [rows, cols], through 32 x 33 shared-memory tiles.
pub fn transpose2d(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    x: &GpuBuffer<f32>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::transpose2d";
    let total = check_transpose2d(OP, numel, rows, cols, x.len(), y.len())?;
    if rows == 1 || cols == 1 {
        // A vector: the transpose has the same order of elements.
        return gpu.copy(x, 0, y, 0, total);
    }
    // A = the columns of x (stride `rows` in y), B = the rows of x (stride `cols` in x).
    tiled(
        gpu,
        x,
        y,
        (cols, rows),
        (rows, cols),
        1,
        [
            [i64_arg(1); BATCH_SLOTS],
            [i64_arg(0); BATCH_SLOTS],
            [i64_arg(0); BATCH_SLOTS],
        ],
    )
}
