//! CUDA weighted combination of T per-task gradient rows (kernels/combine.cu): the direction
//! `sum_t w_t g_t` of the MTO methods, on the device.
//!
//! Twin of `crates/mto/src/combine.rs` (`combine`, `combine_segments`), which this crate cannot
//! depend on: same f64 weights, same skipping of zero weights, same f64 accumulation in
//! ascending task order rounded once to f32, so the results are equal bit for bit.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::gpu::Gpu;
use super::sources::COMBINE;
use crate::cpu::grad_gram::check_segments;
use crate::error::{KernelError, Result, check_len};

/// Largest T the kernel handles (its shared row list holds 64 tasks).
pub const MAX_T: usize = 64;
/// Threads per block (CMB_THREADS in kernels/combine.cu).
const THREADS: u32 = 256;
/// Columns per block (CMB_CHUNK in kernels/combine.cu).
const CHUNK: usize = 256 * 4 * 2;

/// Checks T, P, the lengths of `g` and `out` and the segment ends; `out_at: None` wants `out`
/// of exactly P elements, `Some(at)` wants room for P elements from `at` on.
fn validate(
    op: &'static str,
    g_len: usize,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    out_len: usize,
    out_at: Option<usize>,
) -> Result<()> {
    if t == 0 || p == 0 {
        return Err(KernelError::new(
            op,
            format!("empty input: t = {t}, p = {p}, expected both >= 1"),
        ));
    }
    if t > MAX_T {
        return Err(KernelError::new(
            op,
            format!("t = {t} tasks, the CUDA kernel handles at most {MAX_T}"),
        ));
    }
    let len = t
        .checked_mul(p)
        .ok_or_else(|| KernelError::new(op, format!("t * p overflows: t = {t}, p = {p}")))?;
    check_len(op, "g", g_len, len)?;
    match out_at {
        None => check_len(op, "out", out_len, p)?,
        Some(at) => {
            if at.checked_add(p).is_none_or(|e| e > out_len) {
                return Err(KernelError::new(
                    op,
                    format!("out has {out_len} elements, expected at least out_at {at} + p {p}"),
                ));
            }
        }
    }
    check_segments(op, p, segment_ends)?;
    i32::try_from(segment_ends.len())
        .map_err(|_| KernelError::new(op, "more than i32::MAX segments"))?;
    Ok(())
}

/// Writes `out[c] = sum_t weights[t] * g[t, c]` for the T x P row-major `g` (every element of
/// `out`, length P, is overwritten). Host weights, length T. Does not synchronise.
pub fn combine(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    weights: &[f64],
    out: &mut GpuBuffer<f32>,
) -> Result<()> {
    combine_at(gpu, "cuda::combine", g, (t, p), weights, out, None)
}

/// [`combine`] and [`combine_into`]: T host weights, `out` written at `out_at` (None: `out`
/// holds exactly P elements).
fn combine_at(
    gpu: &Gpu,
    op: &'static str,
    g: &GpuBuffer<f32>,
    (t, p): (usize, usize),
    weights: &[f64],
    out: &mut GpuBuffer<f32>,
    out_at: Option<usize>,
) -> Result<()> {
    validate(op, g.len(), t, p, &[p], out.len(), out_at)?;
    check_len(op, "weights", weights.len(), t)?;
    let d_w = gpu.upload(weights)?;
    launch(gpu, op, g, t, p, &[p], &d_w, out, out_at.unwrap_or(0))
}

/// Like [`combine`] with a separate weight vector per segment: columns of segment `l`
/// (`segment_ends[l - 1]..segment_ends[l]`) use `weights[l]` (length T each).
pub fn combine_segments(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    weights: &[Vec<f64>],
    out: &mut GpuBuffer<f32>,
) -> Result<()> {
    let op = "cuda::combine_segments";
    combine_segments_at(gpu, op, g, (t, p), segment_ends, weights, out, None)
}

/// [`combine_segments`] and [`combine_segments_into`]: L x T host weights, `out` written at
/// `out_at` (None: `out` holds exactly P elements).
#[allow(clippy::too_many_arguments)]
fn combine_segments_at(
    gpu: &Gpu,
    op: &'static str,
    g: &GpuBuffer<f32>,
    (t, p): (usize, usize),
    segment_ends: &[usize],
    weights: &[Vec<f64>],
    out: &mut GpuBuffer<f32>,
    out_at: Option<usize>,
) -> Result<()> {
    validate(op, g.len(), t, p, segment_ends, out.len(), out_at)?;
    let d_w = upload_segment_weights(gpu, op, t, segment_ends, weights)?;
    launch(
        gpu,
        op,
        g,
        t,
        p,
        segment_ends,
        &d_w,
        out,
        out_at.unwrap_or(0),
    )
}

/// Checks L x T host weights and uploads them row-major.
fn upload_segment_weights(
    gpu: &Gpu,
    op: &'static str,
    t: usize,
    segment_ends: &[usize],
    weights: &[Vec<f64>],
) -> Result<GpuBuffer<f64>> {
    check_len(op, "weights", weights.len(), segment_ends.len())?;
    let mut flat = Vec::with_capacity(segment_ends.len() * t);
    for (l, w) in weights.iter().enumerate() {
        if w.len() != t {
            return Err(KernelError::new(
                op,
                format!("weights[{l}] has {} elements, expected t = {t}", w.len()),
            ));
        }
        flat.extend_from_slice(w);
    }
    gpu.upload(&flat)
}

/// Like [`combine`] but writes `out[out_at..out_at + p]` and leaves the rest of `out` as it
/// is, so several combinations (e.g. a backbone's and the heads') fill one flat buffer.
pub fn combine_into(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    weights: &[f64],
    out: &mut GpuBuffer<f32>,
    out_at: usize,
) -> Result<()> {
    combine_at(
        gpu,
        "cuda::combine_into",
        g,
        (t, p),
        weights,
        out,
        Some(out_at),
    )
}

/// Like [`combine_segments`] but writes `out[out_at..out_at + p]` and leaves the rest of
/// `out` as it is.
#[allow(clippy::too_many_arguments)]
pub fn combine_segments_into(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    weights: &[Vec<f64>],
    out: &mut GpuBuffer<f32>,
    out_at: usize,
) -> Result<()> {
    let op = "cuda::combine_segments_into";
    combine_segments_at(gpu, op, g, (t, p), segment_ends, weights, out, Some(out_at))
}

/// Like [`combine_segments`] with the weights already on the device: `weights` is L x T
/// row-major f64 (L = `segment_ends.len()`; pass `&[p]` for one vector over all columns).
pub fn combine_device(
    gpu: &Gpu,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    weights: &GpuBuffer<f64>,
    out: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::combine_device";
    validate(OP, g.len(), t, p, segment_ends, out.len(), None)?;
    check_len(OP, "weights", weights.len(), segment_ends.len() * t)?;
    launch(gpu, OP, g, t, p, segment_ends, weights, out, 0)
}

/// Uploads the segment ends and launches one block per CHUNK columns (shapes checked) writing
/// `out[out_at..out_at + p]`.
#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    op: &'static str,
    g: &GpuBuffer<f32>,
    t: usize,
    p: usize,
    segment_ends: &[usize],
    weights: &GpuBuffer<f64>,
    out: &mut GpuBuffer<f32>,
    out_at: usize,
) -> Result<()> {
    let blocks = u32::try_from(p.div_ceil(CHUNK))
        .map_err(|_| KernelError::new(op, format!("p = {p} columns need too many blocks")))?;
    let ends: Vec<i64> = segment_ends.iter().map(|&e| e as i64).collect();
    let d_ends = gpu.upload(&ends)?;
    gpu.launch(
        &COMBINE,
        "combine_rows",
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        },
        &[
            g.arg(),
            Arg::i64(p as i64),
            Arg::i32(t as i32),
            d_ends.arg(),
            Arg::i32(segment_ends.len() as i32),
            weights.arg(),
            out.arg_mut_at(out_at),
        ],
    )
}
