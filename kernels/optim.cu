// Multi-tensor optimizer kernels (PyTorch's multi_tensor_apply / fused optimizers): the global
// gradient norm and the SGD-momentum / AdamW updates of ALL parameter tensors of a model, one
// launch each. Device twin of crates/nn/src/optim/{clip,sgd,adamw}.rs (torch.optim semantics).
//
// Data layout: a table of OptEntry rows in device memory, one per tensor, uploaded by the host
// once per step (crates/kernels/src/cuda/optim.rs, `MultiTensor`). A row holds the tensor's
// parameter, gradient and state addresses (the gradient may point into a flat direction
// buffer at an offset, or at a per-tensor gradient buffer), its length, the index of its first
// chunk (prefix sum of the chunk counts, so rows are sorted by it) and four per-tensor
// coefficients computed by the host exactly as the CPU optimizer computes them (in f64 where
// the CPU does): SGD weight decay and first-momentum-step flag; AdamW keep factor
// 1 - lr * wd, lr / (1 - beta1^t) and sqrt(1 - beta2^t) with the tensor's own step count t.
// Tensors without a gradient this step have no row (untouched, as PyTorch with
// set_to_none). The table may end with padding rows (len 0, chunk0 = total chunks) so the host
// can reuse one device buffer across steps; they are never selected.
//
// Launch shape (all three kernels): 1-D grid of one block per chunk, block OPT_THREADS threads.
// Block b owns elements [(b - chunk0) * OPT_CHUNK, +OPT_CHUNK) of the row with the largest
// chunk0 <= b, found by a binary search over the table (uniform across the block, served
// from cache), and walks them with coalesced thread-strided loops. Big tensors get many
// blocks and tiny ones one block each, so both parallelise. 64-bit indices throughout.
//
// Determinism: the updates touch each element from one thread with no reduction. The norm
// kernel sums x*x in f64 per thread, reduces each block in a fixed warp/lane order into one
// f64 partial per chunk, and the last block to finish (integer ticket, no float atomics)
// sums the partials in index order: the result depends only on the table, not on timing.
//
// Arithmetic of the updates: every operation is spelled with the round-to-nearest intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn), which the compiler may not contract into
// FMAs, in the same order as the CPU code, so a step matches the CPU optimizer bit for bit.
// The gradient-clipping factor arrives as a scalar `gscale` multiplied into each gradient
// element as it is read, g' = g * gscale rounded to f32: the CPU's clip_grad_norm scales the
// gradient in f32 the same way before the update (and a factor of 1 changes no bit).
#include "common.cuh"

#define OPT_THREADS 256
#define OPT_ITEMS 8
#define OPT_CHUNK (OPT_THREADS * OPT_ITEMS)
#define OPT_WARPS (OPT_THREADS / 32)

// One tensor's row (64 bytes; the host writes it as 8 little-endian u64 words in this order).
struct OptEntry {
    float* param;        // len elements, read and written
    const float* grad;   // len elements, read
    float* state1;       // SGD momentum (null when momentum == 0) / AdamW exp_avg
    float* state2;       // AdamW exp_avg_sq (unused by SGD)
    i64 len;             // elements (0 only in padding rows)
    i64 chunk0;          // index of the tensor's first chunk
    float c[4];          // per-tensor coefficients (see the columns below)
};
static_assert(sizeof(OptEntry) == 64, "OptEntry must match the host's 8-word rows");

// SGD columns: weight decay of this tensor (0 when it does not decay); 1 on the tensor's
// first momentum step (the buffer is written, never read), else 0.
#define SGD_WD 0
#define SGD_FIRST 1
// AdamW columns: keep factor (1 when the tensor does not decay), step size
// lr / (1 - beta1^t), sqrt(1 - beta2^t).
#define ADAMW_KEEP 0
#define ADAMW_STEP_SIZE 1
#define ADAMW_BIAS2_SQRT 2

#ifdef SCALARIZE_EMU
// The emulator runs on the host compiler: a volatile result keeps it from contracting a
// multiply and an add into an FMA on targets where it would (the GPU intrinsics forbid it).
__device__ __forceinline__ float opt_mul(float a, float b) {
    volatile float r = a * b;
    return r;
}
__device__ __forceinline__ float opt_add(float a, float b) {
    volatile float r = a + b;
    return r;
}
__device__ __forceinline__ float opt_div(float a, float b) { return a / b; }
__device__ __forceinline__ float opt_sqrt(float a) { return sqrtf(a); }
#else
__device__ __forceinline__ float opt_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float opt_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float opt_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float opt_sqrt(float a) { return __fsqrt_rn(a); }
#endif

// The row owning chunk b: the last row whose chunk0 <= b (rows are sorted by chunk0, row 0
// starts at chunk 0, and padding rows start at the total, past every launched block).
__device__ __forceinline__ const OptEntry* opt_entry_of(const OptEntry* __restrict__ table,
                                                        int L, i64 b) {
    int lo = 0, hi = L - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (table[mid].chunk0 <= b)
            lo = mid;
        else
            hi = mid - 1;
    }
    return table + lo;
}

// Sum over the block in a fixed order (lanes by warp_sum_d, then warps in index order by
// warp 0); the result is valid in thread 0. Callable twice in a row: the trailing barrier
// keeps a second call from overwriting `part` before warp 0 has read it.
__device__ __forceinline__ double opt_block_sum(double v, double* part) {
    v = warp_sum_d(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < OPT_WARPS ? part[lane] : 0.0;
        v = warp_sum_d(v);
    }
    __syncthreads();
    return v;
}

// Sum of squares of every row's gradient (times nothing: the clip factor is computed from
// it). partials has one f64 per block; counter is 0 before the launch and 0 again after it
// (the last block resets it); out[0] receives the total.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_grad_sq_norm(const OptEntry* __restrict__ table, int L, double* __restrict__ partials,
                       unsigned int* __restrict__ counter, double* __restrict__ out) {
    __shared__ double part[OPT_WARPS];
    __shared__ int am_last;
    const i64 b = blockIdx.x;
    const OptEntry* e = opt_entry_of(table, L, b);
    const float* __restrict__ grad = e->grad;
    const i64 start = (b - e->chunk0) * OPT_CHUNK;
    const i64 end = min(start + (i64)OPT_CHUNK, e->len);
    double acc = 0.0;
    for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
        const double x = (double)grad[i];
        acc += x * x;  // exact product of two f32 values: contraction cannot change it
    }
    const double s = opt_block_sum(acc, part);
    if (threadIdx.x == 0) {
        partials[b] = s;
        // Publish the partial before taking a ticket, so the last block sees every partial.
        __threadfence();
        const unsigned int ticket = atomicAdd(counter, 1u);
        am_last = ticket == gridDim.x - 1;
    }
    __syncthreads();
    if (!am_last) return;
    __threadfence();
    // Volatile reads: the partials of other blocks must come from memory, not a stale cache.
    const volatile double* vp = partials;
    double tot = 0.0;
    for (i64 i = threadIdx.x; i < (i64)gridDim.x; i += OPT_THREADS) tot += vp[i];
    tot = opt_block_sum(tot, part);
    if (threadIdx.x == 0) {
        out[0] = tot;
        *counter = 0u;  // ready for the next launch
    }
}

// SGD (torch.optim.SGD, crates/nn/src/optim/sgd.rs), per element of a row (g' = g * gscale):
//   d = g' + wd * p
//   mu == 0:  p += -lr * d
//   first:    buf = d;                   step = nesterov ? d + mu * d : d;  p += -lr * step
//   else:     buf = buf * mu + damp * d; step = nesterov ? d + mu * buf : buf; p += -lr * step
// damp = 1 - dampening (computed by the host in f32).
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_sgd(const OptEntry* __restrict__ table, int L, float gscale, float lr, float mu,
              float damp, int nesterov) {
    const i64 b = blockIdx.x;
    const OptEntry* e = opt_entry_of(table, L, b);
    float* __restrict__ param = e->param;
    const float* __restrict__ grad = e->grad;
    float* __restrict__ momentum = e->state1;
    const float wd = e->c[SGD_WD];
    const bool first = e->c[SGD_FIRST] != 0.0f;
    const i64 start = (b - e->chunk0) * OPT_CHUNK;
    const i64 end = min(start + (i64)OPT_CHUNK, e->len);
    const float neg_lr = -lr;
    if (mu == 0.0f) {
        for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
            const float p = param[i];
            const float d = opt_add(opt_mul(grad[i], gscale), opt_mul(wd, p));
            param[i] = opt_add(p, opt_mul(neg_lr, d));
        }
    } else if (first) {
        for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
            const float p = param[i];
            const float d = opt_add(opt_mul(grad[i], gscale), opt_mul(wd, p));
            momentum[i] = d;
            const float step = nesterov ? opt_add(d, opt_mul(mu, d)) : d;
            param[i] = opt_add(p, opt_mul(neg_lr, step));
        }
    } else {
        for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
            const float p = param[i];
            const float d = opt_add(opt_mul(grad[i], gscale), opt_mul(wd, p));
            const float m = opt_add(opt_mul(momentum[i], mu), opt_mul(damp, d));
            momentum[i] = m;
            const float step = nesterov ? opt_add(d, opt_mul(mu, m)) : m;
            param[i] = opt_add(p, opt_mul(neg_lr, step));
        }
    }
}

// AdamW (torch.optim.AdamW without amsgrad, crates/nn/src/optim/adamw.rs), per element of a
// row (the step count t is the tensor's own, folded into its coefficients; g' = g * gscale):
//   p *= keep                          (keep = (1 - lr * wd) in f64, cast to f32; 1 if no decay)
//   m += w1 * (g' - m)                 (w1 = 1 - beta1 in f32)
//   v = v * beta2 + w2 * g' * g'       (w2 = 1 - beta2 in f32)
//   p += -step_size * (m / (sqrt(v) / bias2_sqrt + eps))
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_adamw(const OptEntry* __restrict__ table, int L, float gscale, float beta2, float w1,
                float w2, float eps) {
    const i64 b = blockIdx.x;
    const OptEntry* e = opt_entry_of(table, L, b);
    float* __restrict__ param = e->param;
    const float* __restrict__ grad = e->grad;
    float* __restrict__ exp_avg = e->state1;
    float* __restrict__ exp_avg_sq = e->state2;
    const float keep = e->c[ADAMW_KEEP];
    const float neg_step = -e->c[ADAMW_STEP_SIZE];
    const float bias2_sqrt = e->c[ADAMW_BIAS2_SQRT];
    const i64 start = (b - e->chunk0) * OPT_CHUNK;
    const i64 end = min(start + (i64)OPT_CHUNK, e->len);
    for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
        const float g = opt_mul(grad[i], gscale);
        float m = exp_avg[i], v = exp_avg_sq[i];
        m = opt_add(m, opt_mul(w1, opt_add(g, -m)));
        v = opt_add(opt_mul(v, beta2), opt_mul(opt_mul(w2, g), g));
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        const float denom = opt_add(opt_div(opt_sqrt(v), bias2_sqrt), eps);
        const float p = opt_mul(param[i], keep);
        param[i] = opt_add(p, opt_mul(neg_step, opt_div(m, denom)));
    }
}
