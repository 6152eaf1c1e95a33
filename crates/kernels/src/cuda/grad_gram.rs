//! CUDA twin of [`crate::cpu::grad_gram`]: per-segment Gram matrices of T gradient rows held
//! in device memory. Deterministic (no atomics; fixed-order reductions in f64).

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
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

/// Op name in errors.
const OP: &str = "cuda::grad_gram";

/// Checks shapes: T in 1..=MAX_T, P >= 1, `g` holds T x P, valid segment ends.
fn validate(g_len: usize, t: usize, p: usize, segment_ends: &[usize]) -> Result<()> {
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
    check_len(OP, "g", g_len, len)?;
    check_segments(OP, p, segment_ends)?;
    Ok(())
}

/// Per-segment and whole-vector Gram matrices of the rows of `g` (T x P row-major, on `gpu`).
/// Same contract as [`crate::cpu::grad_gram`]; T must be at most [`MAX_T`]. Synchronises to
/// read the L x T x T result back.
pub fn grad_gram(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
) -> Result<SegmentedGram> {
    validate(g.len(), t, p, segment_ends)?;
    // grad_gram_device overwrites every element of `out`.
    let mut out = gpu.alloc::<f64>(segment_ends.len() * t * t)?;
    grad_gram_device(gpu, g, t, p, segment_ends, &mut out)?;
    let host = gpu.download(&out)?;
    let segments: Vec<Vec<f64>> = host.chunks_exact(t * t).map(|c| c.to_vec()).collect();
    let mut total = vec![0.0f64; t * t];
    for m in &segments {
        for (a, b) in total.iter_mut().zip(m) {
            *a += b;
        }
    }
    Ok(SegmentedGram { t, segments, total })
}

/// Like [`grad_gram`] but leaves the result on the device: `out` (L x T x T f64, every element
/// overwritten) receives each segment's full symmetric Gram matrix. Does not synchronise.
pub fn grad_gram_device(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    out: &mut GpuBuffer<f64>,
) -> Result<()> {
    validate(g.len(), t, p, segment_ends)?;
    let l_count = segment_ends.len();
    check_len(OP, "out", out.len(), l_count * t * t)?;
    let (starts, ends, seg_items) = work_items(p, segment_ends);
    let items = starts.len();
    let too_many = |what: &str| KernelError::new(OP, format!("too many {what} for one launch"));
    let grid_items = u32::try_from(items).map_err(|_| too_many("work items"))?;
    let grid_segs = u32::try_from(l_count).map_err(|_| too_many("segments"))?;

    let d_starts = gpu.upload(&starts)?;
    let d_ends = gpu.upload(&ends)?;
    let d_seg_items = gpu.upload(&seg_items)?;
    // gg_partial writes every upper-triangle entry of every item, the only entries gg_reduce
    // reads.
    let mut partial = gpu.alloc::<f64>(items * t * t)?;
    let (p64, t32) = (p as i64, t as i32);
    gpu.launch(
        &GRAD_GRAM,
        "gg_partial",
        LaunchConfig {
            grid_dim: (grid_items, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            g.arg(),
            Arg::i64(p64),
            Arg::i32(t32),
            d_starts.arg(),
            d_ends.arg(),
            partial.arg_mut(),
        ],
    )?;
    gpu.launch(
        &GRAD_GRAM,
        "gg_reduce",
        LaunchConfig {
            grid_dim: (grid_segs, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            partial.arg(),
            d_seg_items.arg(),
            Arg::i32(t32),
            out.arg_mut(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_items_tile_each_segment_in_order() {
        for (p, ends) in [
            (1usize, vec![1usize]),
            (64, vec![1, 2, 64]),
            (
                25_000_000,
                (1..=160).map(|l| l * 156_250).collect::<Vec<_>>(),
            ),
            (1_000_000_000, vec![64, 128, 2_000_128, 1_000_000_000]),
        ] {
            let (starts, stops, seg_items) = work_items(p, &ends);
            assert_eq!(seg_items.len(), ends.len() + 1);
            assert_eq!(*seg_items.last().unwrap() as usize, starts.len());
            let mut s0 = 0i64;
            for (l, &e) in ends.iter().enumerate() {
                let (b, f) = (seg_items[l] as usize, seg_items[l + 1] as usize);
                assert!(f > b, "segment {l} has no item");
                assert_eq!(starts[b], s0);
                for w in b..f {
                    assert!(stops[w] > starts[w]);
                    if w + 1 < f {
                        assert_eq!(stops[w], starts[w + 1]);
                    }
                }
                assert_eq!(stops[f - 1], e as i64);
                s0 = e as i64;
            }
            // Partials stay bounded: about TARGET_ITEMS plus one per segment.
            assert!(
                starts.len() <= TARGET_ITEMS + 2 * ends.len(),
                "{}",
                starts.len()
            );
        }
    }
}
