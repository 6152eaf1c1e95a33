// Softmax over the last axis, forward and backward (CUDA twin of crates/kernels/src/cpu/softmax.rs).
//
// x, y, dy, dx are [rows, dim] row-major. A row is handled by one "group" of threads:
//   - short rows (the host picks by dim): one warp per row, blockDim / 32 rows per block;
//   - long rows: one whole block per row (block_per_row = 1).
// Every launch is grid-stride over rows, so any grid size covers any number of rows. Columns
// are strided by the group size, so a warp reads 32 consecutive floats at a time (coalesced).
//
// softmax_fwd:  m = max_j x, e_j = exp(x_j - m) stored in y, then y_j *= 1 / sum_j e_j.
// softmax_bwd:  dot = sum_j y_j dy_j, dx_j = scale * y_j * (dy_j - dot) (scale = 1 for a plain
//               softmax; attention passes its q.k^T scale here, fusing dS = scale * dP-term).
// Both may run in place (y == x; dx == dy): every element is read and then written by the same
// thread, and the group reduction between the passes orders all reads of a row before any
// write. The pointers are therefore not __restrict__.
//
// Determinism: each thread folds its columns in a fixed order, then the warp reduces with a
// fixed xor-butterfly and (block mode) warp 0's partials are combined in warp order; no
// atomics, so two runs are bit-identical.
#include "common.cuh"

// Max over the group (a warp, or the whole block when `block`); every thread gets the result.
// sh: 32 floats of shared memory, free again when this returns.
__device__ __forceinline__ float sm_group_max(float v, bool block, float* sh) {
    v = warp_max(v);
    if (!block) return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    // Every warp folds the same partials in the same order, so all threads agree bit for bit.
    float r = lane < nw ? sh[lane] : NEG_INF;
    r = warp_max(r);
    __syncthreads();  // sh is reused by the next reduction
    return r;
}

// Sum over the group, as sm_group_max.
__device__ __forceinline__ float sm_group_sum(float v, bool block, float* sh) {
    v = warp_sum(v);
    if (!block) return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

// y = softmax(x) per row, max-subtracted. blockDim.x: a multiple of 32 (at most 1024).
extern "C" __global__ void softmax_fwd(const float* x, float* y, i64 rows, i64 dim,
                                       int block_per_row) {
    __shared__ float sh[32];
    const bool blk = block_per_row != 0;
    const int lane = blk ? (int)threadIdx.x : (int)(threadIdx.x & 31);
    const int gsize = blk ? (int)blockDim.x : 32;
    const i64 groups = blk ? 1 : (i64)(blockDim.x >> 5);
    const i64 g = blk ? 0 : (i64)(threadIdx.x >> 5);
    // The row loop is uniform over the group (a warp leaves together; in block mode the whole
    // block runs the same rows), so the barriers inside the reductions are reached by all.
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        // fmaxf skips NaN, but a NaN element still makes its exp, the sum and so the whole row
        // NaN, as on the CPU (which propagates NaN through the max instead).
        float m = NEG_INF;
        for (i64 j = lane; j < dim; j += gsize) m = fmaxf(m, xr[j]);
        m = sm_group_max(m, blk, sh);
        float s = 0.0f;
        for (i64 j = lane; j < dim; j += gsize) {
            const float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        s = sm_group_sum(s, blk, sh);
        const float inv = 1.0f / s;
        for (i64 j = lane; j < dim; j += gsize) yr[j] *= inv;
    }
}

// dx = scale * y * (dy - sum(dy * y)) per row, from the forward output y.
extern "C" __global__ void softmax_bwd(const float* y, const float* dy, float* dx, i64 rows,
                                       i64 dim, float scale, int block_per_row) {
    __shared__ float sh[32];
    const bool blk = block_per_row != 0;
    const int lane = blk ? (int)threadIdx.x : (int)(threadIdx.x & 31);
    const int gsize = blk ? (int)blockDim.x : 32;
    const i64 groups = blk ? 1 : (i64)(blockDim.x >> 5);
    const i64 g = blk ? 0 : (i64)(threadIdx.x >> 5);
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const float* yr = y + r * dim;
        const float* gr = dy + r * dim;
        float* dr = dx + r * dim;
        float dot = 0.0f;
        for (i64 j = lane; j < dim; j += gsize) dot += yr[j] * gr[j];
        dot = sm_group_sum(dot, blk, sh);
        for (i64 j = lane; j < dim; j += gsize) dr[j] = scale * yr[j] * (gr[j] - dot);
    }
}
