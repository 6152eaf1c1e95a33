//! CUDA twin of [`crate::cpu::attention`]: the fused multi-head self-attention core on a packed
//! qkv projection `[n, t, 3, heads, hd]`, forward and backward, in device memory.
//!
//! The CPU reads q, k, v straight out of the packed rows with strided GEMMs; a device GEMM
//! needs contiguous rows, so the heads are first gathered into `[3, n, heads, t, hd]`
//! (kernels/attention.cu), every product then runs as one strided-batched GEMM over the
//! n·heads (image, head) pairs, the row softmax and its backward are softmax.cu's kernels (in
//! place on the t×t blocks), and the result is scattered back to the token-major layout. Same
//! contract as the CPU: `probs` `[n, heads, t, t]` is saved by the forward for the backward.
//! Deterministic: GEMMs, fixed-order softmax reductions and pure copies, no atomics.

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::flat_cfg_max;
use super::gemm::{Gemm, gemm};
use super::gpu::Gpu;
use super::softmax::{launch_backward, launch_forward};
use super::sources::ATTENTION;
use crate::cpu::AttentionShape;
use crate::cpu::attention::check_attention;
use crate::cpu::checks::numel_i64;
use crate::error::{KernelError, Result};

/// Grid-stride loops cover any length; more blocks than this only add scheduling cost.
const MAX_BLOCKS: usize = 4096;

/// Moves `slots` packed slots between the token-major `[n, t, slots, heads, hd]` layout and
/// the head-major `[slots, n, heads, t, hd]` one (`to_heads` picks the direction).
fn relayout(
    gpu: &Gpu,
    s: &AttentionShape,
    slots: usize,
    to_heads: bool,
    src: &GpuBuffer<f32>,
    dst: &mut GpuBuffer<f32>,
) -> Result<()> {
    let total = slots * s.out_len();
    let cfg = flat_cfg_max(total, MAX_BLOCKS);
    let kernel = if to_heads {
        "attn_to_heads"
    } else {
        "attn_from_heads"
    };
    gpu.launch(
        &ATTENTION,
        kernel,
        cfg,
        &[
            src.arg(),
            dst.arg_mut(),
            Arg::i64(s.n as i64),
            Arg::i64(s.t as i64),
            Arg::i64(slots as i64),
            Arg::i64(s.heads as i64),
            Arg::i64(s.hd as i64),
        ],
    )
}

/// Forward: per image b and head h, P = softmax(scale·q·kᵀ) (saved in `probs`
/// `[n, heads, t, t]`) and out[b, :, h·hd..(h+1)·hd] = P·v, reading q, k, v from `qkv`
/// `[n, t, 3, heads, hd]`. `out` `[n, t, heads·hd]` and `probs` are overwritten.
pub fn attention_forward(
    gpu: &Gpu,
    s: AttentionShape,
    scale: f32,
    qkv: &GpuBuffer<f32>,
    probs: &mut GpuBuffer<f32>,
    out: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::attention_forward";
    let bufs = [("qkv", qkv.len())];
    check_attention(OP, numel_i64, &s, &bufs, probs.len(), ("out", out.len()))?;
    let (t, hd) = (s.t, s.hd);
    let (nh, m) = (s.n * s.heads, t * hd);
    // heads = [q; k; v], each [n, heads, t, hd]: slot j starts at j·nh·m.
    let mut heads = gpu.alloc::<f32>(3 * nh * m)?;
    relayout(gpu, &s, 3, true, qkv, &mut heads)?;
    // S = scale·Q·Kᵀ into probs, one t×t block per (image, head).
    let qk = Gemm::new(t, hd, t)
        .trans(false, true)
        .scale(scale, 0.0)
        .batched(nh)
        .strides(m, m, t * t);
    gemm(gpu, &qk, (&heads, 0), (&heads, nh * m), (probs, 0))?;
    // P = softmax(S) per row, in place.
    let p = probs.arg_mut();
    launch_forward(gpu, nh * t, t, p, p)?;
    // O = P·V per head, then merged back to [n, t, heads·hd].
    let mut o = gpu.alloc::<f32>(nh * m)?;
    let pv = Gemm::new(t, t, hd).batched(nh).strides(t * t, m, m);
    gemm(gpu, &pv, (probs, 0), (&heads, 2 * nh * m), (&mut o, 0))?;
    relayout(gpu, &s, 1, false, &o, out)
}

/// Backward of [`attention_forward`]: from `dout` `[n, t, d]`, the saved `probs` and the
/// forward input `qkv`, writes dqkv `[n, t, 3, heads, hd]` (overwritten).
pub fn attention_backward(
    gpu: &Gpu,
    s: AttentionShape,
    scale: f32,
    qkv: &GpuBuffer<f32>,
    probs: &GpuBuffer<f32>,
    dout: &GpuBuffer<f32>,
    dqkv: &mut GpuBuffer<f32>,
) -> Result<()> {
    const OP: &str = "cuda::attention_backward";
    let bufs = [("qkv", qkv.len()), ("dqkv", dqkv.len())];
    check_attention(OP, numel_i64, &s, &bufs, probs.len(), ("dout", dout.len()))?;
    if !scale.is_finite() {
        return Err(KernelError::new(OP, format!("scale {scale} is not finite")));
    }
    let (t, hd) = (s.t, s.hd);
    let (nh, m) = (s.n * s.heads, t * hd);
    let (q_at, k_at, v_at) = (0, nh * m, 2 * nh * m);
    let mut heads = gpu.alloc::<f32>(3 * nh * m)?;
    relayout(gpu, &s, 3, true, qkv, &mut heads)?;
    let mut go = gpu.alloc::<f32>(nh * m)?;
    relayout(gpu, &s, 1, true, dout, &mut go)?;
    // dP = dO·Vᵀ.
    let mut dp = gpu.alloc::<f32>(nh * t * t)?;
    let nt = Gemm::new(t, hd, t)
        .trans(false, true)
        .batched(nh)
        .strides(m, m, t * t);
    gemm(gpu, &nt, (&go, 0), (&heads, v_at), (&mut dp, 0))?;
    // dV = Pᵀ·dO, dQ = dS·K and dK = dSᵀ·Q, all [t, hd] per head, into [3, n, heads, t, hd].
    let mut dheads = gpu.alloc::<f32>(3 * nh * m)?;
    let tn = Gemm::new(t, t, hd)
        .trans(true, false)
        .batched(nh)
        .strides(t * t, m, m);
    gemm(gpu, &tn, (probs, 0), (&go, 0), (&mut dheads, v_at))?;
    // dS = scale·P ⊙ (dP − Σ_j dP⊙P): the softmax backward with the q·kᵀ scale, in place.
    let g = dp.arg_mut();
    launch_backward(gpu, nh * t, t, scale, (probs.arg(), g, g))?;
    let nn = Gemm::new(t, t, hd).batched(nh).strides(t * t, m, m);
    gemm(gpu, &nn, (&dp, 0), (&heads, k_at), (&mut dheads, q_at))?;
    gemm(gpu, &tn, (&dp, 0), (&heads, q_at), (&mut dheads, k_at))?;
    relayout(gpu, &s, 3, false, &dheads, dqkv)
}
