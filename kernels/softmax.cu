// Softmax over the last axis, forward and backward (CUDA twin of crates/kernels/src/cpu/softmax.rs).
//
// x, y, dy, dx are [rows, dim] row-major. Two launch shapes, picked by the host from dim:
//   - *_warp (dim <= 1024): one warp per row, blockDim / 32 rows per block. Lane l holds
//     columns l, l + 32, ... in registers (at most 32 per lane), so a row is read from global
//     memory once and written once; loads and stores are 32 consecutive floats (coalesced).
//   - *_block (longer rows): one whole block per row, columns strided by blockDim; the row is
//     re-read from global memory (L2) by each pass instead of being held in registers.
// Every launch is grid-stride over rows, so any grid size covers any number of rows.
//
// forward:  m = max_j x, e_j = exp(x_j - m), y_j = e_j * (1 / sum_j e_j) (the CPU's order).
// backward: dot = sum_j y_j dy_j, dx_j = scale * y_j * (dy_j - dot) (scale = 1 for a plain
//           softmax; attention passes its q.k^T scale here, fusing dS = scale * dP-term).
// Both may run in place (y == x; dx == dy): every element is read and then written by the same
// thread, and the group reduction between the passes orders all reads of a row before any
// write. The pointers are therefore not __restrict__.
//
// Determinism: each thread folds its columns in a fixed order, then the warp reduces with a
// fixed xor-butterfly and (block mode) every warp folds the per-warp partials in warp order;
// no atomics, so two runs are bit-identical.
#include "common.cuh"

// Max over the block; every thread gets the result. sh: 32 floats of shared memory, free
// again when this returns.
__device__ __forceinline__ float sm_block_max(float v, float* sh) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    // Every warp folds the same partials in the same order, so all threads agree bit for bit.
    float r = lane < nw ? sh[lane] : NEG_INF;
    r = warp_max(r);
    __syncthreads();  // sh is reused by the next reduction
    return r;
}

// Sum over the block, as sm_block_max.
__device__ __forceinline__ float sm_block_sum(float v, float* sh) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

// Columns per lane of the warp kernels: rows of up to 32 * SM_PER_LANE = 1024 elements.
#define SM_PER_LANE 32

// y = softmax(x) per row, one warp per row held in registers. dim <= 32 * SM_PER_LANE.
extern "C" __global__ void softmax_fwd_warp(const float* x, float* y, i64 rows, int dim) {
    const int lane = threadIdx.x & 31;
    const i64 groups = blockDim.x >> 5;
    // A warp runs its rows to the end together (the loop bound is per warp), so every lane
    // reaches every shuffle.
    for (i64 r = (i64)blockIdx.x * groups + (threadIdx.x >> 5); r < rows;
         r += (i64)gridDim.x * groups) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        float v[SM_PER_LANE];
        float m = NEG_INF;
        // Fully unrolled with a uniform early exit, so v[] stays in registers.
#pragma unroll
        for (int k = 0; k < SM_PER_LANE; ++k) {
            if (k * 32 >= dim) break;
            const int j = lane + k * 32;
            v[k] = j < dim ? xr[j] : NEG_INF;
            // fmaxf skips NaN, but a NaN element still makes its exp, the sum and so the whole
            // row NaN, as on the CPU (which propagates NaN through the max instead).
            m = fmaxf(m, v[k]);
        }
        m = warp_max(m);
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < SM_PER_LANE; ++k) {
            if (k * 32 >= dim) break;
            if (lane + k * 32 < dim) {
                v[k] = expf(v[k] - m);
                s += v[k];
            }
        }
        s = warp_sum(s);
        const float inv = 1.0f / s;
#pragma unroll
        for (int k = 0; k < SM_PER_LANE; ++k) {
            if (k * 32 >= dim) break;
            const int j = lane + k * 32;
            if (j < dim) yr[j] = v[k] * inv;
        }
    }
}

// dx = scale * y * (dy - sum(dy * y)) per row, one warp per row held in registers.
extern "C" __global__ void softmax_bwd_warp(const float* y, const float* dy, float* dx, i64 rows,
                                            int dim, float scale) {
    const int lane = threadIdx.x & 31;
    const i64 groups = blockDim.x >> 5;
    for (i64 r = (i64)blockIdx.x * groups + (threadIdx.x >> 5); r < rows;
         r += (i64)gridDim.x * groups) {
        const float* yr = y + r * dim;
        const float* gr = dy + r * dim;
        float* dr = dx + r * dim;
        float yv[SM_PER_LANE], gv[SM_PER_LANE];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < SM_PER_LANE; ++k) {
            if (k * 32 >= dim) break;
            const int j = lane + k * 32;
            yv[k] = j < dim ? yr[j] : 0.0f;
            gv[k] = j < dim ? gr[j] : 0.0f;
            dot += yv[k] * gv[k];
        }
        dot = warp_sum(dot);
#pragma unroll
        for (int k = 0; k < SM_PER_LANE; ++k) {
            if (k * 32 >= dim) break;
            const int j = lane + k * 32;
            if (j < dim) dr[j] = scale * yv[k] * (gv[k] - dot);
        }
    }
}

// y = softmax(x), one block per row (any dim). blockDim.x: a multiple of 32, at most 1024.
extern "C" __global__ void softmax_fwd_block(const float* x, float* y, i64 rows, i64 dim) {
    __shared__ float sh[32];
    const int lane = threadIdx.x;
    const int gsize = blockDim.x;
    // The row loop is the same for the whole block, so every thread reaches every barrier.
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        float m = NEG_INF;
        for (i64 j = lane; j < dim; j += gsize) m = fmaxf(m, xr[j]);
        m = sm_block_max(m, sh);
        float s = 0.0f;
        for (i64 j = lane; j < dim; j += gsize) {
            const float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        s = sm_block_sum(s, sh);
        const float inv = 1.0f / s;
        for (i64 j = lane; j < dim; j += gsize) yr[j] *= inv;
    }
}

// dx = scale * y * (dy - sum(dy * y)), one block per row (any dim).
extern "C" __global__ void softmax_bwd_block(const float* y, const float* dy, float* dx,
                                             i64 rows, i64 dim, float scale) {
    __shared__ float sh[32];
    const int lane = threadIdx.x;
    const int gsize = blockDim.x;
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * dim;
        const float* gr = dy + r * dim;
        float* dr = dx + r * dim;
        float dot = 0.0f;
        for (i64 j = lane; j < dim; j += gsize) dot += yr[j] * gr[j];
        dot = sm_block_sum(dot, sh);
        for (i64 j = lane; j < dim; j += gsize) dr[j] = scale * yr[j] * (gr[j] - dot);
    }
}
