//! CUDA twin of [`crate::cpu::grad_gram`]: per-segment Gram matrices of T gradient rows held
//! in device memory. Deterministic (no atomics; fixed-order reductions in f64).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::gpu::{Gpu, cuda_err};
use super::sources::GRAD_GRAM;
use crate::cpu::SegmentedGram;
use crate::cpu::grad_gram::check_segments;
use crate::error::{KernelError, Result, check_len};

/// Largest T the kernel handles (its tile holds 64 rows).
pub const MAX_T: usize = 64;
/// Work items aimed for: enough blocks to fill any GPU, few enough partials to stay small.
const TARGET_ITEMS: usize = 4096;
/// Smallest work item, in columns.
const MIN_ITEM: usize = 4096;

/// Splits each segment into work items of at most `item` columns:
/// returns (starts, ends, first item of each segment + total).
pub(crate) fn work_items(p: usize, segment_ends: &[usize]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let item = MIN_ITEM.max(p.div_ceil(TARGET_ITEMS).next_multiple_of(64));
    let (mut starts, mut ends, mut seg_items) = (Vec::new(), Vec::new(), vec![0i64]);
    let mut s0 = 0usize;
    for &s1 in segment_ends {
        let mut c = s0;
        while c < s1 {
            let e = (c + item).min(s1);
            starts.push(c as i64);
            ends.push(e as i64);
            c = e;
        }
        seg_items.push(starts.len() as i64);
        s0 = s1;
    }
    (starts, ends, seg_items)
}

/// Per-segment and whole-vector Gram matrices of the rows of `g` (T x P row-major, on `gpu`).
/// Same contract as [`crate::cpu::grad_gram`]; T must be at most [`MAX_T`].
pub fn grad_gram(
    gpu: &Gpu,
    g: &CudaSlice<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
) -> Result<SegmentedGram> {
    const OP: &str = "cuda::grad_gram";
    if t == 0 || p == 0 {
        return Err(KernelError::new(
            OP,
            format!("empty input: t = {t}, p = {p}, expected both >= 1"),
        ));
    }
    if t > MAX_T {
        return Err(KernelError::new(
            OP,
            format!("t = {t} tasks, the CUDA kernel handles at most {MAX_T}"),
        ));
    }
    let len = t
        .checked_mul(p)
        .ok_or_else(|| KernelError::new(OP, format!("t * p overflows: t = {t}, p = {p}")))?;
    check_len(OP, "g", g.len(), len)?;
    check_segments(OP, p, segment_ends)?;
    let l_count = segment_ends.len();
    let (starts, ends, seg_items) = work_items(p, segment_ends);
    let items = starts.len();
    let too_many = |what: &str| KernelError::new(OP, format!("too many {what} for one launch"));
    let grid_items = u32::try_from(items).map_err(|_| too_many("work items"))?;
    let grid_segs = u32::try_from(l_count).map_err(|_| too_many("segments"))?;

    let s = gpu.stream();
    let err = cuda_err(OP);
    let d_starts = s.clone_htod(&starts).map_err(&err)?;
    let d_ends = s.clone_htod(&ends).map_err(&err)?;
    let d_seg_items = s.clone_htod(&seg_items).map_err(&err)?;
    // SAFETY: gg_partial writes every upper-triangle entry of every item, the only entries
    // gg_reduce reads; gg_reduce writes all of `out`.
    let mut partial = unsafe { s.alloc::<f64>(items * t * t) }.map_err(&err)?;
    let mut out = unsafe { s.alloc::<f64>(l_count * t * t) }.map_err(&err)?;
    let (p64, t32) = (p as i64, t as i32);

    let f = gpu.function(&GRAD_GRAM, "gg_partial")?;
    let mut b = s.launch_builder(&f);
    b.arg(g)
        .arg(&p64)
        .arg(&t32)
        .arg(&d_starts)
        .arg(&d_ends)
        .arg(&mut partial);
    let cfg = LaunchConfig {
        grid_dim: (grid_items, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument list matches the kernel signature; lengths checked above.
    unsafe { b.launch(cfg) }.map_err(&err)?;

    let f = gpu.function(&GRAD_GRAM, "gg_reduce")?;
    let mut b = s.launch_builder(&f);
    b.arg(&partial).arg(&d_seg_items).arg(&t32).arg(&mut out);
    let cfg = LaunchConfig {
        grid_dim: (grid_segs, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above.
    unsafe { b.launch(cfg) }.map_err(&err)?;

    let host = s.clone_dtoh(&out).map_err(&err)?;
    let segments: Vec<Vec<f64>> = host.chunks_exact(t * t).map(|c| c.to_vec()).collect();
    let mut total = vec![0.0f64; t * t];
    for m in &segments {
        for (a, b) in total.iter_mut().zip(m) {
            *a += b;
        }
    }
    Ok(SegmentedGram { t, segments, total })
}
