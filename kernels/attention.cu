// Layout kernels of the fused multi-head self-attention core (CUDA twin of
// crates/kernels/src/cpu/attention.rs). The products run as strided-batched GEMMs (cuBLAS) and
// the row softmax / its backward in softmax.cu; what is left is moving heads in and out of the
// packed token-major layout, since a GEMM operand must have contiguous rows:
//
//   attn_to_heads:   src [n, t, S, heads, hd] (qkv with S = 3, or dout with S = 1)
//                    -> dst [S, n, heads, t, hd] (one contiguous t x hd matrix per head).
//   attn_from_heads: the inverse, src [S, n, heads, t, hd] -> dst [n, t, S, heads, hd]
//                    (the merged output with S = 1, dqkv with S = 3).
//
// One thread per destination element, grid-stride over 64-bit indices; both sides keep the
// hd columns of a head contiguous, so a warp reads and writes runs of hd consecutive floats.
// Pure copies: every destination element is written exactly once, results are exact.
#include "common.cuh"

extern "C" __global__ void attn_to_heads(const float* __restrict__ src, float* __restrict__ dst,
                                         i64 n, i64 t, i64 S, i64 heads, i64 hd) {
    const i64 total = S * n * heads * t * hd;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const i64 c = idx % hd;
        i64 r = idx / hd;
        const i64 i = r % t;
        r /= t;
        const i64 h = r % heads;
        r /= heads;
        const i64 b = r % n;
        const i64 s = r / n;
        dst[idx] = src[(((b * t + i) * S + s) * heads + h) * hd + c];
    }
}

extern "C" __global__ void attn_from_heads(const float* __restrict__ src,
                                           float* __restrict__ dst, i64 n, i64 t, i64 S,
                                           i64 heads, i64 hd) {
    const i64 total = S * n * heads * t * hd;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const i64 c = idx % hd;
        i64 r = idx / hd;
        const i64 h = r % heads;
        r /= heads;
        const i64 s = r % S;
        r /= S;
        const i64 i = r % t;
        const i64 b = r / t;
        dst[idx] = src[(((s * n + b) * heads + h) * t + i) * hd + c];
    }
}
