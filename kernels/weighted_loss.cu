// Fused weighted multi-task loss, forward and backward (CUDA twin of
// crates/kernels/src/cpu/weighted_loss.rs).
//
// Logits of all heads are packed per sample: row i holds task t's logits in columns
// offsets[t]..offsets[t+1]. Four launches:
//   1. *_count: one block per task counts its valid samples n_t (integer block reduction);
//      when `bad` is not null, bad targets are flagged with an integer atomicMax of their
//      index (deterministic), by the count kernel for CE and by the row kernel for BCE. The
//      training path passes null: it checks the targets on the host before the upload, so the
//      flag would only cost a read-back (an out-of-range CE target counts as not valid);
//   2. *_rows: one warp per sample row computes each task's row loss (max-subtracted
//      log-sum-exp / stable BCE) into row_loss[n x T] and writes
//      d(logits) = p_t / n_t * (softmax - onehot) (BCE: p_t / (n_t C_t) * (sigmoid - y));
//   3. wl_reduce: one block per task sums row_loss in a fixed order in double;
//   4. wl_finish: one thread turns the sums into task means and the weighted total on the
//      device (the host's f64 formula, in task order), so the loss needs no read-back.
// No float atomics: results are bit-for-bit reproducible.
#include "common.cuh"

// Sum of one int per thread over the block; valid in thread 0. blockDim.x is a multiple of 32.
__device__ int block_sum_i(int v) {
    __shared__ int sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_i(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = (threadIdx.x < nw) ? sh[threadIdx.x] : 0;
    if (warp == 0) v = warp_sum_i(v);
    return v;
}

// Counts valid samples of task blockIdx.x for the softmax CE variant.
// bad: set to (row * T + task + 1) of the largest out-of-range target (0 if none).
extern "C" __global__ void wl_ce_count(const i64* __restrict__ targets,
                                       const unsigned char* __restrict__ mask,
                                       const int* __restrict__ offsets, i64 n, int T,
                                       i64 ignore_index, int* __restrict__ counts,
                                       u64* __restrict__ bad) {
    const int t = blockIdx.x;
    const i64 c = offsets[t + 1] - offsets[t];
    int local = 0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        const i64 k = i * T + t;
        const i64 y = targets[k];
        if ((mask == nullptr || mask[k] != 0) && y != ignore_index) {
            if (y < 0 || y >= c) {
                if (bad) atomicMax(bad, (u64)(k + 1));
            } else {
                local++;
            }
        }
    }
    local = block_sum_i(local);
    if (threadIdx.x == 0) counts[t] = local;
}

// One warp per row: per-task CE row losses and (if dlogits is not null) the gradient.
extern "C" __global__ void wl_ce_rows(const float* __restrict__ logits,
                                      const i64* __restrict__ targets,
                                      const unsigned char* __restrict__ mask,
                                      const int* __restrict__ offsets,
                                      const float* __restrict__ weights,
                                      const int* __restrict__ counts, i64 n, int width, int T,
                                      i64 ignore_index, float* __restrict__ row_loss,
                                      float* __restrict__ dlogits) {
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n) return;  // the whole warp leaves together
    const float* x = logits + row * (i64)width;
    float* d = dlogits ? dlogits + row * (i64)width : nullptr;
    for (int t = 0; t < T; ++t) {
        const int o0 = offsets[t], o1 = offsets[t + 1];
        const i64 k = row * T + t;
        const i64 y = targets[k];
        const bool valid = (mask == nullptr || mask[k] != 0) && y != ignore_index && y >= 0 &&
                           y < (i64)(o1 - o0);
        if (!valid) {
            if (d)
                for (int j = o0 + lane; j < o1; j += 32) d[j] = 0.0f;
            if (lane == 0) row_loss[k] = 0.0f;
            continue;
        }
        // Online max / sum of exp per lane, then a symmetric warp merge.
        float m = NEG_INF, s = 0.0f;
#pragma unroll 4
        for (int j = o0 + lane; j < o1; j += 32) {
            const float v = x[j];
            if (v > m) {
                s = s * expf(m - v) + 1.0f;
                m = v;
            } else {
                s += expf(v - m);
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
            const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
            lse_merge(m, s, m2, s2);
        }
        const int yc = o0 + (int)y;
        if (lane == 0) row_loss[k] = (m - x[yc]) + logf(s);
        if (d) {
            const float scale = weights[t] / (float)counts[t];
            const float inv = scale / s;
#pragma unroll 4
            for (int j = o0 + lane; j < o1; j += 32) {
                float gv = expf(x[j] - m) * inv;
                if (j == yc) gv -= scale;
                d[j] = gv;
            }
        }
    }
}

// Counts samples of task blockIdx.x for the BCE variant (the mask only; targets are checked
// by wl_bce_rows, where every element is read anyway).
extern "C" __global__ void wl_bce_count(const unsigned char* __restrict__ mask, i64 n, int T,
                                        int* __restrict__ counts) {
    const int t = blockIdx.x;
    int local = 0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        local += (mask == nullptr || mask[i * T + t] != 0) ? 1 : 0;
    }
    local = block_sum_i(local);
    if (threadIdx.x == 0) counts[t] = local;
}

// One warp per row: per-task BCE row losses (summed over the task's columns) and the gradient.
extern "C" __global__ void wl_bce_rows(const float* __restrict__ logits,
                                       const float* __restrict__ targets,
                                       const unsigned char* __restrict__ mask,
                                       const int* __restrict__ offsets,
                                       const float* __restrict__ weights,
                                       const int* __restrict__ counts, i64 n, int width, int T,
                                       float* __restrict__ row_loss,
                                       float* __restrict__ dlogits, u64* __restrict__ bad) {
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n) return;
    // Targets outside [0, 1] (NaN included) are flagged: (row * width + column + 1), largest
    // wins. Skipped when the host checked them (bad is null).
    if (bad) {
        for (int j = lane; j < width; j += 32) {
            const float yv = targets[row * (i64)width + j];
            if (!(yv >= 0.0f && yv <= 1.0f)) atomicMax(bad, (u64)(row * (i64)width + j + 1));
        }
    }
    const float* x = logits + row * (i64)width;
    const float* yr = targets + row * (i64)width;
    float* d = dlogits ? dlogits + row * (i64)width : nullptr;
    for (int t = 0; t < T; ++t) {
        const int o0 = offsets[t], o1 = offsets[t + 1];
        const i64 k = row * T + t;
        if (!(mask == nullptr || mask[k] != 0)) {
            if (d)
                for (int j = o0 + lane; j < o1; j += 32) d[j] = 0.0f;
            if (lane == 0) row_loss[k] = 0.0f;
            continue;
        }
        const float scale = weights[t] / ((float)counts[t] * (float)(o1 - o0));
        float loss = 0.0f;
        for (int j = o0 + lane; j < o1; j += 32) {
            const float xv = x[j], yv = yr[j];
            const float e = expf(-fabsf(xv));
            loss += fmaxf(xv, 0.0f) - xv * yv + log1pf(e);
            if (d) {
                const float sig = xv >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
                d[j] = scale * (sig - yv);
            }
        }
        loss = warp_sum(loss);
        if (lane == 0) row_loss[k] = loss;
    }
}

// Sums row_loss[:, blockIdx.x] in double in a fixed order (thread-strided, then a fixed tree).
extern "C" __global__ void wl_reduce(const float* __restrict__ row_loss, i64 n, int T,
                                     double* __restrict__ task_sum) {
    __shared__ double sh[32];
    const int t = blockIdx.x;
    double acc = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) acc += (double)row_loss[i * T + t];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    acc = warp_sum_d(acc);
    if (lane == 0) sh[warp] = acc;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    acc = (threadIdx.x < nw) ? sh[threadIdx.x] : 0.0;
    if (warp == 0) acc = warp_sum_d(acc);
    if (threadIdx.x == 0) task_sum[t] = acc;
}

// task_loss[t] = task_sum[t] / (counts[t] * C_t) (0 when counts[t] == 0), C_t = 1 for CE
// (per_column == 0) and the head's width for BCE; total[0] = sum_t task_loss[t] * weights[t].
// All in double in task order, as the host's finish, then rounded to float once: one thread
// (T is small), deterministic.
extern "C" __global__ void wl_finish(const double* __restrict__ task_sum,
                                     const int* __restrict__ counts,
                                     const int* __restrict__ offsets,
                                     const float* __restrict__ weights, int T, int per_column,
                                     float* __restrict__ task_loss, float* __restrict__ total) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double acc = -0.0;  // Rust's f64 Sum starts from -0.0
    for (int t = 0; t < T; ++t) {
        const int c = counts[t];
        const double cols = per_column ? (double)(offsets[t + 1] - offsets[t]) : 1.0;
        const double l = c <= 0 ? 0.0 : task_sum[t] / ((double)c * cols);
        task_loss[t] = (float)l;
        acc += l * (double)weights[t];
    }
    total[0] = (float)acc;
}
