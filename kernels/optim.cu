// Fused optimizer updates (SGD with momentum, AdamW) over ALL parameters of a model in one launch.
// Device twin of crates/nn/src/optim/{sgd,adamw}.rs (torch.optim.SGD / torch.optim.AdamW).
//
// Data layout: one flat buffer each for the parameters, the gradients and every optimizer state
// (momentum; exp_avg, exp_avg_sq), all in the model's store order, and a table of segment ends
// (one segment per parameter tensor, strictly increasing, the last equal to n). This was chosen
// over a table of per-tensor pointers because it is equally fast (one coalesced pass over the
// flat range, no pointer chasing) and fits the rest of the device pipeline: the per-task
// gradients of the MTO methods are T x P rows in this same store order, and the weighted
// combination (kernels/combine.cu) writes a flat P-vector that feeds these kernels directly.
//
// Per-tensor behaviour of the CPU optimizer is kept through a small per-segment coefficient
// table that the host computes each step (in f64 where the CPU does, so the values are
// identical): whether the tensor has a gradient this step (absent => untouched, as PyTorch
// with set_to_none), whether weight decay applies to it, the SGD momentum state (first step
// copies the gradient into the buffer), and the AdamW per-tensor step count through its bias
// corrections.
//
// Launch shape: 1-D grid, block OPT_THREADS threads; block b owns the flat chunk
// [b * OPT_CHUNK, (b + 1) * OPT_CHUNK) and finds the first segment intersecting it by a binary
// search over the segment ends (the same for all threads, served from cache), then walks the
// segments inside its chunk with coalesced thread-strided loops. 64-bit indices throughout.
//
// Arithmetic: every operation is spelled with the round-to-nearest intrinsics (__fmul_rn,
// __fadd_rn, __fdiv_rn, __fsqrt_rn), which the compiler may not contract into FMAs, in the same
// order as the CPU code. Each element is updated by one thread with no reduction, so the
// result is deterministic and equal bit for bit to the CPU optimizer's.
#include "common.cuh"

#define OPT_THREADS 256
#define OPT_ITEMS 8
#define OPT_CHUNK (OPT_THREADS * OPT_ITEMS)

// Columns of the per-segment coefficient tables (f32, L x width, row-major).
// SGD: mode (0 = no gradient this step: skip; 1 = first momentum step: buffer := d;
// 2 = momentum buffer exists), weight decay for this tensor (0 when it does not decay).
#define SGD_MODE 0
#define SGD_WD 1
#define SGD_WIDTH 2
// AdamW: active (0 = skip, 1 = update), keep factor 1 - lr * wd (1 when the tensor does not
// decay), lr / (1 - beta1^t), sqrt(1 - beta2^t).
#define ADAMW_ACTIVE 0
#define ADAMW_KEEP 1
#define ADAMW_STEP_SIZE 2
#define ADAMW_BIAS2_SQRT 3
#define ADAMW_WIDTH 4

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

// Index of the first segment whose end is greater than i (segments are non-empty, so this is
// the segment holding element i).
__device__ __forceinline__ int opt_segment_of(const i64* __restrict__ seg_end, int L, i64 i) {
    int lo = 0, hi = L - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (seg_end[mid] > i)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

// SGD (torch.optim.SGD, crates/nn/src/optim/sgd.rs), per element of an active segment:
//   d = g + wd * p
//   mu == 0:  p += -lr * d
//   first:    buf = d;                   step = nesterov ? d + mu * d : d;  p += -lr * step
//   else:     buf = buf * mu + damp * d; step = nesterov ? d + mu * buf : buf; p += -lr * step
// damp = 1 - dampening (computed by the host in f32). `momentum` may be null when mu == 0.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_sgd(float* __restrict__ param, const float* __restrict__ grad,
              float* __restrict__ momentum, const i64* __restrict__ seg_end,
              const float* __restrict__ seg_coef, int L, i64 n, float lr, float mu, float damp,
              int nesterov) {
    const i64 c0 = (i64)blockIdx.x * OPT_CHUNK;
    if (c0 >= n) return;
    const i64 c1 = min(c0 + (i64)OPT_CHUNK, n);
    const float neg_lr = -lr;
    int s = opt_segment_of(seg_end, L, c0);
    i64 start = c0;
    while (start < c1) {
        const i64 end = min(seg_end[s], c1);
        const int mode = (int)seg_coef[s * SGD_WIDTH + SGD_MODE];
        const float wd = seg_coef[s * SGD_WIDTH + SGD_WD];
        if (mode != 0) {
            if (mu == 0.0f) {
                for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
                    const float p = param[i];
                    const float d = opt_add(grad[i], opt_mul(wd, p));
                    param[i] = opt_add(p, opt_mul(neg_lr, d));
                }
            } else if (mode == 1) {
                for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
                    const float p = param[i];
                    const float d = opt_add(grad[i], opt_mul(wd, p));
                    momentum[i] = d;
                    const float step = nesterov ? opt_add(d, opt_mul(mu, d)) : d;
                    param[i] = opt_add(p, opt_mul(neg_lr, step));
                }
            } else {
                for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
                    const float p = param[i];
                    const float d = opt_add(grad[i], opt_mul(wd, p));
                    const float b = opt_add(opt_mul(momentum[i], mu), opt_mul(damp, d));
                    momentum[i] = b;
                    const float step = nesterov ? opt_add(d, opt_mul(mu, b)) : b;
                    param[i] = opt_add(p, opt_mul(neg_lr, step));
                }
            }
        }
        start = end;
        ++s;
    }
}

// AdamW (torch.optim.AdamW without amsgrad, crates/nn/src/optim/adamw.rs), per element of an
// active segment (the step count t is the tensor's own, folded into the coefficients):
//   p *= keep                          (keep = (1 - lr * wd) in f64, cast to f32; 1 if no decay)
//   m += w1 * (g - m)                  (w1 = 1 - beta1 in f32)
//   v = v * beta2 + w2 * g * g         (w2 = 1 - beta2 in f32)
//   p += -step_size * (m / (sqrt(v) / bias2_sqrt + eps))
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_adamw(float* __restrict__ param, const float* __restrict__ grad,
                float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                const i64* __restrict__ seg_end, const float* __restrict__ seg_coef, int L, i64 n,
                float beta2, float w1, float w2, float eps) {
    const i64 c0 = (i64)blockIdx.x * OPT_CHUNK;
    if (c0 >= n) return;
    const i64 c1 = min(c0 + (i64)OPT_CHUNK, n);
    int s = opt_segment_of(seg_end, L, c0);
    i64 start = c0;
    while (start < c1) {
        const i64 end = min(seg_end[s], c1);
        const float* coef = seg_coef + (i64)s * ADAMW_WIDTH;
        if (coef[ADAMW_ACTIVE] != 0.0f) {
            const float keep = coef[ADAMW_KEEP];
            const float neg_step = -coef[ADAMW_STEP_SIZE];
            const float bias2_sqrt = coef[ADAMW_BIAS2_SQRT];
            for (i64 i = start + threadIdx.x; i < end; i += OPT_THREADS) {
                const float g = grad[i];
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
        start = end;
        ++s;
    }
}
