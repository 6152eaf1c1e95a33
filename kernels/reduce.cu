// Sums and means, whole and along an axis (CUDA twin of crates/kernels/src/cpu/reduce.rs), and
// the bias gradients of crates/kernels/src/cpu/elementwise.rs.
//
// Every reduction runs in two passes with double accumulation (the CPU accumulates in f64):
//   1. a partial kernel: grid.y = P chunks of the reduced range; each block sums its chunk of
//      one or 32 outputs and writes one double per output to partial[chunk][output];
//   2. rd_finish: one thread per output adds its P partials in chunk order and scales.
// The chunking depends only on the shapes, every sum has a fixed order (thread-strided loop,
// then a fixed tree over the block), and there are no atomics, so results are bit-identical
// from run to run.
//
// rd_rows   [outer, len] (contiguous rows): one block of 256 threads per (row, chunk), threads
//           on consecutive elements (coalesced), warp shuffles then a shared-memory tree.
// rd_cols   [outer, len, inner] summed over len: blocks of 32 x 8 threads; threadIdx.x picks one
//           of 32 consecutive output columns (flattened (outer, inner) index), threadIdx.y one of
//           8 interleaved rows of the chunk; the 8 row sums of a column are added in order.
//           For inner >= 32 the 32 lanes read consecutive addresses.
// rd_keep_mid [outer, mid, inner] summed over outer and inner (a per-channel bias gradient of
//           NCHW): one block per (channel, chunk of the outer*inner elements of the channel).
#include "common.cuh"

// Sum of one double per thread over the block, returned to every thread. blockDim.x is a
// multiple of 32 (at most 1024). Ends with a barrier so that the caller may call it again.
__device__ double block_sum_d(double v) {
    __shared__ double sh[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_d(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    v = (lane < nw) ? sh[lane] : 0.0;
    v = warp_sum_d(v);
    __syncthreads();
    return v;
}

// partial[blockIdx.y * outer + o] = sum of x[o, c0 .. c1) with c0 = blockIdx.y * chunk.
extern "C" __global__ void rd_rows(const float* __restrict__ x, i64 outer, i64 len, i64 chunk,
                                   double* __restrict__ partial) {
    const i64 c0 = (i64)blockIdx.y * chunk;
    const i64 c1 = min(len, c0 + chunk);
    for (i64 o = blockIdx.x; o < outer; o += gridDim.x) {
        const float* xr = x + o * len;
        double acc = 0.0;
        for (i64 i = c0 + threadIdx.x; i < c1; i += blockDim.x) acc += (double)xr[i];
        acc = block_sum_d(acc);
        if (threadIdx.x == 0) partial[(i64)blockIdx.y * outer + o] = acc;
    }
}

// partial[blockIdx.y * outer*inner + c] = sum over l in the chunk of x[o, l, i], c = o*inner + i.
// Block: 32 x 8 threads.
extern "C" __global__ void rd_cols(const float* __restrict__ x, i64 outer, i64 len, i64 inner,
                                   i64 chunk, double* __restrict__ partial) {
    __shared__ double sh[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 ncols = outer * inner;
    const i64 l0 = (i64)blockIdx.y * chunk;
    const i64 l1 = min(len, l0 + chunk);
    for (i64 tile = blockIdx.x; tile * 32 < ncols; tile += gridDim.x) {
        const i64 c = tile * 32 + tx;
        double acc = 0.0;
        if (c < ncols) {
            const i64 o = c / inner, i = c - o * inner;
            const float* xc = x + o * len * inner + i;
            for (i64 l = l0 + ty; l < l1; l += 8) acc += (double)xc[l * inner];
        }
        sh[ty][tx] = acc;
        __syncthreads();
        if (ty == 0 && c < ncols) {
            double s = 0.0;
#pragma unroll
            for (int k = 0; k < 8; ++k) s += sh[k][tx];
            partial[(i64)blockIdx.y * ncols + c] = s;
        }
        __syncthreads();
    }
}

// partial[blockIdx.y * mid + m] = sum of x[o, m, i] over the chunk [k0, k1) of the flattened
// (o, i) index k = o * inner + i.
extern "C" __global__ void rd_keep_mid(const float* __restrict__ x, i64 outer, i64 mid,
                                       i64 inner, i64 chunk, double* __restrict__ partial) {
    const i64 k0 = (i64)blockIdx.y * chunk;
    const i64 k1 = min(outer * inner, k0 + chunk);
    // Walk k in steps of blockDim.x while tracking (o, i) without a division per element.
    const i64 dq = blockDim.x / inner, dr = blockDim.x - dq * inner;
    for (i64 m = blockIdx.x; m < mid; m += gridDim.x) {
        double acc = 0.0;
        i64 k = k0 + threadIdx.x;
        i64 o = k / inner, i = k - o * inner;
        for (; k < k1; k += blockDim.x) {
            acc += (double)x[(o * mid + m) * inner + i];
            i += dr;
            o += dq;
            if (i >= inner) {
                i -= inner;
                o += 1;
            }
        }
        acc = block_sum_d(acc);
        if (threadIdx.x == 0) partial[(i64)blockIdx.y * mid + m] = acc;
    }
}

// For each of the m outputs: s = sum of its `chunks` partials in chunk order; y[k] = s * factor
// (as float) and, when yd is not null, yd[k] = s.
extern "C" __global__ void rd_finish(const double* __restrict__ partial, i64 m, int chunks,
                                     double factor, float* __restrict__ y,
                                     double* __restrict__ yd) {
    for (i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x; k < m;
         k += (i64)gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int p = 0; p < chunks; ++p) s += partial[(i64)p * m + k];
        if (y) y[k] = (float)(s * factor);
        if (yd) yd[k] = s;
    }
}
