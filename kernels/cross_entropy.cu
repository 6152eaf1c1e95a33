// Cross-entropy with logits (softmax over classes, integer targets, ignore_index) and binary
// cross-entropy with logits (CUDA twin of crates/kernels/src/cpu/cross_entropy.rs).
//
// Kernels:
//   ce_check:    grid-stride over rows; counts the rows whose target is not ignore_index and
//                flags out-of-range targets. The count is an integer (per-thread counts, a 64-bit
//                warp sum, one integer atomicAdd per warp) and the flag an integer atomicMax of
//                (rows - row), so the smallest bad row wins: both are exact and deterministic.
//                The host reads them back before launching the loss kernels (the CPU also
//                refuses bad targets before writing anything).
//   ce_forward:  one group per row (a warp for short rows, the whole block for long ones, as in
//                softmax.cu): m = max, s = sum exp(x - m), loss = (m + log s) - x[target]; 0 for
//                ignored rows. One float per row: the mean over valid rows is the caller's
//                fixed-order reduction (cuda::reduce), never a float atomic here.
//   ce_backward: same groups; dlogits = scale * exp(x - lse), minus scale at the target column;
//                zero rows for ignored targets.
//   bce_forward / bce_backward: elementwise, grid-stride over 64-bit indices.
// The targets are validated (ce_check) before ce_forward / ce_backward run, so those kernels
// assume every non-ignored target lies in [0, classes).
#include "common.cuh"

// Max over the group (a warp, or the whole block when `block`); every thread gets the result.
// sh: 32 floats of shared memory, free again when this returns.
__device__ __forceinline__ float ce_group_max(float v, bool block, float* sh) {
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

// Sum over the group, as ce_group_max.
__device__ __forceinline__ float ce_group_sum(float v, bool block, float* sh) {
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

// Max-subtracted log-sum-exp of row xr over the group (every thread gets it).
__device__ __forceinline__ float ce_row_lse(const float* xr, i64 classes, int lane, int gsize,
                                            bool blk, float* sh) {
    // fmaxf skips NaN like the CPU's f32::max fold; a NaN logit still poisons the sum.
    float m = NEG_INF;
    for (i64 j = lane; j < classes; j += gsize) m = fmaxf(m, xr[j]);
    m = ce_group_max(m, blk, sh);
    float s = 0.0f;
    for (i64 j = lane; j < classes; j += gsize) s += expf(xr[j] - m);
    s = ce_group_sum(s, blk, sh);
    return m + logf(s);
}

// valid[0] += rows whose target is not ignore_index; bad[0] = max(rows - r) over rows r with
// a target outside [0, classes) that is not ignore_index (0: none). Both start at zero.
extern "C" __global__ void ce_check(const i64* __restrict__ targets, i64 rows, i64 classes,
                                    i64 ignore_index, u64* __restrict__ valid,
                                    u64* __restrict__ bad) {
    u64 local = 0;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 r = (i64)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += stride) {
        const i64 t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= classes) {
            atomicMax(bad, (u64)(rows - r));
        } else {
            local++;
        }
    }
    // 64-bit warp sum (every lane reaches it: the loop above has no early exit), then one
    // integer atomic per warp: integer addition is exact, so the order does not matter.
    for (int o = 16; o > 0; o >>= 1) local += __shfl_xor_sync(0xffffffffu, local, o);
    if ((threadIdx.x & 31) == 0 && local != 0) atomicAdd(valid, local);
}

// losses[r] = lse(logits[r]) - logits[r, targets[r]]; 0 where targets[r] == ignore_index.
extern "C" __global__ void ce_forward(const float* __restrict__ logits,
                                      const i64* __restrict__ targets, i64 rows, i64 classes,
                                      i64 ignore_index, float* __restrict__ losses,
                                      int block_per_row) {
    __shared__ float sh[32];
    const bool blk = block_per_row != 0;
    const int lane = blk ? (int)threadIdx.x : (int)(threadIdx.x & 31);
    const int gsize = blk ? (int)blockDim.x : 32;
    const i64 groups = blk ? 1 : (i64)(blockDim.x >> 5);
    const i64 g = blk ? 0 : (i64)(threadIdx.x >> 5);
    // Uniform over the group: the target (hence the skip) is per row, and the row loop is the
    // same for every thread of a group, so the reductions' barriers are reached by all.
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const i64 t = targets[r];
        if (t == ignore_index) {
            if (lane == 0) losses[r] = 0.0f;
            continue;
        }
        const float* xr = logits + r * classes;
        const float lse = ce_row_lse(xr, classes, lane, gsize, blk, sh);
        if (lane == 0) losses[r] = lse - xr[t];
    }
}

// dlogits[r] = scale * (softmax(logits[r]) - onehot(targets[r])); zero rows where ignored.
extern "C" __global__ void ce_backward(const float* __restrict__ logits,
                                       const i64* __restrict__ targets, i64 rows, i64 classes,
                                       i64 ignore_index, float scale,
                                       float* __restrict__ dlogits, int block_per_row) {
    __shared__ float sh[32];
    const bool blk = block_per_row != 0;
    const int lane = blk ? (int)threadIdx.x : (int)(threadIdx.x & 31);
    const int gsize = blk ? (int)blockDim.x : 32;
    const i64 groups = blk ? 1 : (i64)(blockDim.x >> 5);
    const i64 g = blk ? 0 : (i64)(threadIdx.x >> 5);
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const i64 t = targets[r];
        float* dr = dlogits + r * classes;
        if (t == ignore_index) {
            for (i64 j = lane; j < classes; j += gsize) dr[j] = 0.0f;
            continue;
        }
        const float* xr = logits + r * classes;
        const float lse = ce_row_lse(xr, classes, lane, gsize, blk, sh);
        for (i64 j = lane; j < classes; j += gsize) {
            float d = scale * expf(xr[j] - lse);
            // The same two roundings as the CPU's `d = scale·p; d[t] -= scale`.
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
