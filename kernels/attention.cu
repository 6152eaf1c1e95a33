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
// One thread per destination element, grid-stride (32-bit indices below 2^31 elements, 64-bit
// above); both sides keep the hd columns of a head contiguous, so a warp reads and writes runs
// of hd consecutive floats.
// Pure copies: every destination element is written exactly once, results are exact.
#include "common.cuh"

// Source index of destination element idx of attn_to_heads ([S, n, heads, t, hd] from
// [n, t, S, heads, hd]). I: the index type; 32-bit where the sizes allow, since a 64-bit
// division is a long instruction sequence on a GPU and there are four per element.
template <class I>
__device__ __forceinline__ I attn_to_heads_src(I idx, I n, I t, I S, I heads, I hd) {
    const I c = idx % hd;
    I r = idx / hd;
    const I i = r % t;
    r /= t;
    const I h = r % heads;
    r /= heads;
    const I b = r % n;
    const I s = r / n;
    return (((b * t + i) * S + s) * heads + h) * hd + c;
}

// Source index of destination element idx of attn_from_heads ([n, t, S, heads, hd] from
// [S, n, heads, t, hd]).
template <class I>
__device__ __forceinline__ I attn_from_heads_src(I idx, I n, I t, I S, I heads, I hd) {
    const I c = idx % hd;
    I r = idx / hd;
    const I h = r % heads;
    r /= heads;
    const I s = r % S;
    r /= S;
    const I i = r % t;
    const I b = r / t;
    return (((s * n + b) * heads + h) * t + i) * hd + c;
}

// One thread per destination element (grid-stride). total = S n heads t hd; below 2^31 every
// index fits in 32 bits (the strides too: at most total in all).
extern "C" __global__ void attn_to_heads(const float* __restrict__ src, float* __restrict__ dst,
                                         i64 n, i64 t, i64 S, i64 heads, i64 hd) {
    const i64 total = S * n * heads * t * hd;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 first = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (total <= 0x7fffffff) {
        for (unsigned idx = (unsigned)first; idx < (unsigned)total; idx += (unsigned)stride)
            dst[idx] = src[attn_to_heads_src<unsigned>(idx, n, t, S, heads, hd)];
    } else {
        for (i64 idx = first; idx < total; idx += stride)
            dst[idx] = src[attn_to_heads_src<i64>(idx, n, t, S, heads, hd)];
    }
}

extern "C" __global__ void attn_from_heads(const float* __restrict__ src,
                                           float* __restrict__ dst, i64 n, i64 t, i64 S,
                                           i64 heads, i64 hd) {
    const i64 total = S * n * heads * t * hd;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 first = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (total <= 0x7fffffff) {
        for (unsigned idx = (unsigned)first; idx < (unsigned)total; idx += (unsigned)stride)
            dst[idx] = src[attn_from_heads_src<unsigned>(idx, n, t, S, heads, hd)];
    } else {
        for (i64 idx = first; idx < total; idx += stride)
            dst[idx] = src[attn_from_heads_src<i64>(idx, n, t, S, heads, hd)];
    }
}
