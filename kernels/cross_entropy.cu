// Cross-entropy with logits (softmax over classes, integer targets, ignore_index) and binary
// cross-entropy with logits (CUDA twin of crates/kernels/src/cpu/cross_entropy.rs).
//
// Kernels:
//   ce_forward_*:  one row per warp (classes <= 1024, the row held in registers: read once)
//                  or per block (longer rows, re-read from L2 by each pass), as in softmax.cu:
//                  m = max, s = sum exp(x - m), loss = (m + log s) - x[target]; 0 for ignored
//                  rows. One float per row: the mean over valid rows is the caller's
//                  fixed-order reduction (cuda::reduce), never a float atomic here.
//   ce_backward_*: same shapes; dlogits = scale * exp(x - lse), minus scale at the target
//                  column; zero rows for ignored targets.
//   bce_forward / bce_backward: elementwise, grid-stride over 64-bit indices.
// The targets come from the host, which checks them before the upload (cuda::cross_entropy::
// CeTargets; no read-back), so the kernels assume every non-ignored target lies in
// [0, classes). Every reduction folds in a fixed
// order (per-thread columns, xor-butterfly, warp partials in warp order): bit-reproducible.
#include "common.cuh"

// Max over the block; every thread gets the result. sh: 32 floats of shared memory, free
// again when this returns.
__device__ __forceinline__ float ce_block_max(float v, float* sh) {
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

// Sum over the block, as ce_block_max.
__device__ __forceinline__ float ce_block_sum(float v, float* sh) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

// Max-subtracted log-sum-exp of row xr over the block (every thread gets it).
__device__ __forceinline__ float ce_block_lse(const float* xr, i64 classes, float* sh) {
    // fmaxf skips NaN like the CPU's f32::max fold; a NaN logit still poisons the sum.
    float m = NEG_INF;
    for (i64 j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = ce_block_max(m, sh);
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < classes; j += blockDim.x) s += expf(xr[j] - m);
    s = ce_block_sum(s, sh);
    return m + logf(s);
}

// Columns per lane of the warp kernels: rows of up to 32 * CE_PER_LANE = 1024 classes.
#define CE_PER_LANE 32

// Loads row xr (classes <= 32 * CE_PER_LANE) into v (lane l: columns l, l + 32, ...) and
// returns its max-subtracted log-sum-exp over the warp (every lane gets it).
__device__ __forceinline__ float ce_warp_lse(const float* xr, int classes, int lane,
                                             float (&v)[CE_PER_LANE]) {
    float m = NEG_INF;
    // Fully unrolled with a uniform early exit, so v[] stays in registers.
#pragma unroll
    for (int k = 0; k < CE_PER_LANE; ++k) {
        if (k * 32 >= classes) break;
        const int j = lane + k * 32;
        v[k] = j < classes ? xr[j] : NEG_INF;
        m = fmaxf(m, v[k]);  // skips NaN like the CPU's f32::max fold
    }
    m = warp_max(m);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < CE_PER_LANE; ++k) {
        if (k * 32 >= classes) break;
        if (lane + k * 32 < classes) s += expf(v[k] - m);
    }
    s = warp_sum(s);
    return m + logf(s);
}

// losses[r] = lse(logits[r]) - logits[r, targets[r]]; 0 where targets[r] == ignore_index.
// One warp per row, classes <= 32 * CE_PER_LANE.
extern "C" __global__ void ce_forward_warp(const float* __restrict__ logits,
                                           const i64* __restrict__ targets, i64 rows,
                                           int classes, i64 ignore_index,
                                           float* __restrict__ losses) {
    const int lane = threadIdx.x & 31;
    const i64 groups = blockDim.x >> 5;
    // The row loop and the ignore skip are uniform over the warp (one target per row), so
    // every lane reaches every shuffle.
    for (i64 r = (i64)blockIdx.x * groups + (threadIdx.x >> 5); r < rows;
         r += (i64)gridDim.x * groups) {
        const i64 t = targets[r];
        if (t == ignore_index) {
            if (lane == 0) losses[r] = 0.0f;
            continue;
        }
        const float* xr = logits + r * classes;
        float v[CE_PER_LANE];
        const float lse = ce_warp_lse(xr, classes, lane, v);
        if (lane == 0) losses[r] = lse - xr[t];
    }
}

// As ce_forward_warp, one block per row (any number of classes).
extern "C" __global__ void ce_forward_block(const float* __restrict__ logits,
                                            const i64* __restrict__ targets, i64 rows,
                                            i64 classes, i64 ignore_index,
                                            float* __restrict__ losses) {
    __shared__ float sh[32];
    // The row loop and the skip are the same for the whole block: every barrier is reached.
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const i64 t = targets[r];
        if (t == ignore_index) {
            if (threadIdx.x == 0) losses[r] = 0.0f;
            continue;
        }
        const float* xr = logits + r * classes;
        const float lse = ce_block_lse(xr, classes, sh);
        if (threadIdx.x == 0) losses[r] = lse - xr[t];
    }
}

// dlogits[r] = scale * (softmax(logits[r]) - onehot(targets[r])); zero rows where ignored.
// One warp per row, classes <= 32 * CE_PER_LANE.
extern "C" __global__ void ce_backward_warp(const float* __restrict__ logits,
                                            const i64* __restrict__ targets, i64 rows,
                                            int classes, i64 ignore_index, float scale,
                                            float* __restrict__ dlogits) {
    const int lane = threadIdx.x & 31;
    const i64 groups = blockDim.x >> 5;
    for (i64 r = (i64)blockIdx.x * groups + (threadIdx.x >> 5); r < rows;
         r += (i64)gridDim.x * groups) {
        const i64 t = targets[r];
        float* dr = dlogits + r * classes;
        if (t == ignore_index) {
            for (int j = lane; j < classes; j += 32) dr[j] = 0.0f;
            continue;
        }
        float v[CE_PER_LANE];
        const float lse = ce_warp_lse(logits + r * classes, classes, lane, v);
#pragma unroll
        for (int k = 0; k < CE_PER_LANE; ++k) {
            if (k * 32 >= classes) break;
            const int j = lane + k * 32;
            if (j < classes) {
                float d = scale * expf(v[k] - lse);
                // The same two roundings as the CPU's `d = scale·p; d[t] -= scale`.
                if (j == t) d -= scale;
                dr[j] = d;
            }
        }
    }
}

// As ce_backward_warp, one block per row (any number of classes).
extern "C" __global__ void ce_backward_block(const float* __restrict__ logits,
                                             const i64* __restrict__ targets, i64 rows,
                                             i64 classes, i64 ignore_index, float scale,
                                             float* __restrict__ dlogits) {
    __shared__ float sh[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const i64 t = targets[r];
        float* dr = dlogits + r * classes;
        if (t == ignore_index) {
            for (i64 j = threadIdx.x; j < classes; j += blockDim.x) dr[j] = 0.0f;
            continue;
        }
        const float* xr = logits + r * classes;
        const float lse = ce_block_lse(xr, classes, sh);
        for (i64 j = threadIdx.x; j < classes; j += blockDim.x) {
            float d = scale * expf(xr[j] - lse);
            if (j == t) d -= scale;
            dr[j] = d;
        }
    }
}

// losses = max(x, 0) - x t + log(1 + exp(-|x|)), elementwise.
extern "C" __global__ void bce_forward(const float* __restrict__ x,
                                       const float* __restrict__ targets,
                                       float* __restrict__ losses, i64 n) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i];
        losses[i] = fmaxf(v, 0.0f) - v * targets[i] + log1pf(expf(-fabsf(v)));
    }
}

// dx = scale * (sigmoid(x) - t), with the stable two-sided sigmoid of the CPU.
extern "C" __global__ void bce_backward(const float* __restrict__ x,
                                        const float* __restrict__ targets, float scale,
                                        float* __restrict__ dx, i64 n) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i];
        float sig;
        if (v >= 0.0f) {
            sig = 1.0f / (1.0f + expf(-v));
        } else {
            const float e = expf(v);
            sig = e / (1.0f + e);
        }
        dx[i] = scale * (sig - targets[i]);
    }
}
