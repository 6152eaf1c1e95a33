// Batch norm (training statistics, running statistics, eval; fused ReLU / residual epilogues)
// (CUDA twin of crates/kernels/src/cpu/batch_norm.rs). Layout x [n, c, hw]: channel ch of
// image i is the contiguous plane x[(i*c + ch)*hw ..][..hw].
//
// Training forward, three launches:
//   1. bn_fwd_partial: grid = c * splits blocks of 256 threads (block b: channel b / splits,
//      split b % splits). A split is a range of images and of positions of the channel (the
//      host picks them so that each block reads ~8K values and the grid keeps the GPU busy even
//      for small c). Each thread sums d = x - k and d*d in double, k = the channel's first value
//      x[ch*hw] (one pass, and no cancellation in E[d^2] - E[d]^2 when |mean| >> std), then a
//      fixed-order block reduction writes partial[split][ch].
//   2. bn_fwd_finish: one thread per channel adds its partials in split order and forms mean,
//      invstd (f64, as the CPU), then scale = invstd*gamma and shift = beta - mean*scale (f32).
//   3. bn_apply: y = x*scale + shift (+ residual) (max 0 with ReLU), blocks over tiles of whole
//      planes (a tile of min(hw, 256)-wide rows, so small planes still give contiguous loads).
// Backward, the same three steps: partial sums of g and g*(x - mean) (g = dy, gated by the
// ReLU), a per-channel finish (dgamma, dbeta and the dx coefficients), and an apply pass for dx
// (and dresidual). Eval: bn_eval_coef (scale, shift per channel) then bn_apply.
// Running statistics: bn_update_running, one thread per channel.
//
// No float atomics: every sum has an order fixed by the shape, so results are bit-for-bit
// reproducible. The f32 arithmetic the CPU does (affine, ReLU gate, dx) uses explicitly
// rounded operations (no FMA contraction), so that the ReLU gate the fused backward recomputes
// from x is exactly the forward's, and values match the CPU's operation for operation.
#include "common.cuh"

#define BN_THREADS 256

// Explicitly rounded f32 / f64 operations: on the device the compiler may not contract them
// into FMA; the emulator (host C++, compiled without FMA contraction on x86-64) does the same.
#ifdef SCALARIZE_EMU
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
__device__ __forceinline__ float bn_mul(float a, float b) { return a * b; }
__device__ __forceinline__ float bn_add(float a, float b) { return a + b; }
__device__ __forceinline__ float bn_sub(float a, float b) { return a - b; }
__device__ __forceinline__ float bn_div(float a, float b) { return a / b; }
__device__ __forceinline__ float bn_sqrt(float a) { return sqrtf(a); }
__device__ __forceinline__ double bn_dmul(double a, double b) { return a * b; }
__device__ __forceinline__ double bn_dadd(double a, double b) { return a + b; }
#else
__device__ __forceinline__ float bn_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float bn_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float bn_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float bn_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float bn_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double bn_dmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double bn_dadd(double a, double b) { return __dadd_rn(a, b); }
#endif

// Sums a and b over the block (blockDim.x a multiple of 32, at most 1024); valid in thread 0.
// Every thread of the block must call it (it has a barrier).
__device__ void bn_block_sum2(double& a, double& b) {
    __shared__ double sa[32], sb[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    a = warp_sum_d(a);
    b = warp_sum_d(b);
    if (lane == 0) {
        sa[warp] = a;
        sb[warp] = b;
    }
    __syncthreads();
    const int nw = blockDim.x >> 5;
    a = (threadIdx.x < nw) ? sa[threadIdx.x] : 0.0;
    b = (threadIdx.x < nw) ? sb[threadIdx.x] : 0.0;
    if (warp == 0) {
        a = warp_sum_d(a);
        b = warp_sum_d(b);
    }
}

// The part of channel `ch` that block split `s` covers: images [i0, i1), positions [q0, q1).
struct BnSplit {
    int i0, i1, q0, q1;
};

__device__ __forceinline__ BnSplit bn_split(int s, int n, int hw, int img_per, int pos_per,
                                            int splits_pos) {
    BnSplit r;
    const int si = s / splits_pos, sp = s % splits_pos;
    r.i0 = si * img_per;
    r.i1 = min(n, r.i0 + img_per);
    r.q0 = sp * pos_per;
    r.q1 = min(hw, r.q0 + pos_per);
    return r;
}

// Training forward, step 1: per (channel, split) sums of d = x - x[ch*hw] and d*d.
// part: [2][splits][c] doubles (sums, then sums of squares).
extern "C" __global__ void bn_fwd_partial(const float* __restrict__ x, int n, int c, int hw,
                                          int img_per, int pos_per, int splits_pos, int splits,
                                          double* __restrict__ part) {
    const int ch = blockIdx.x / splits, s = blockIdx.x % splits;
    const BnSplit r = bn_split(s, n, hw, img_per, pos_per, splits_pos);
    const double k = (double)x[(i64)ch * hw];
    // Threads in rows of `span` consecutive positions, `rows` rows (images) at a time.
    const int len = r.q1 - r.q0;
    const int span = min(len, (int)blockDim.x);
    const int rows = blockDim.x / span;
    const int row = threadIdx.x / span, col = threadIdx.x % span;
    double a = 0.0, b = 0.0;
    if (row < rows) {
        for (int img = r.i0 + row; img < r.i1; img += rows) {
            const float* p = x + ((i64)img * c + ch) * hw;
            for (int q = r.q0 + col; q < r.q1; q += span) {
                const double d = (double)p[q] - k;
                a += d;
                b += d * d;
            }
        }
    }
    bn_block_sum2(a, b);
    if (threadIdx.x == 0) {
        part[(i64)s * c + ch] = a;
        part[((i64)splits + s) * c + ch] = b;
    }
}

// Training forward, step 2: one thread per channel. coef: [2][c] (scale, then shift).
extern "C" __global__ void bn_fwd_finish(const double* __restrict__ part, int splits, int c,
                                         const float* __restrict__ x, int hw, double count,
                                         const float* __restrict__ gamma,
                                         const float* __restrict__ beta, float eps,
                                         float* __restrict__ save_mean,
                                         float* __restrict__ save_invstd,
                                         float* __restrict__ coef) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s = 0.0, q = 0.0;
    for (int i = 0; i < splits; ++i) {
        s += part[(i64)i * c + ch];
        q += part[((i64)splits + i) * c + ch];
    }
    const double k = (double)x[(i64)ch * hw];
    const double d = s / count;
    const double var = fmax(q / count - bn_dmul(d, d), 0.0);
    const double is = 1.0 / sqrt(var + (double)eps);
    const float m = (float)(k + d), isf = (float)is;
    const float scale = bn_mul(isf, gamma[ch]);
    const float shift = bn_sub(beta[ch], bn_mul(m, scale));
    save_mean[ch] = m;
    save_invstd[ch] = isf;
    coef[ch] = scale;
    coef[c + ch] = shift;
}

// Eval forward: scale = gamma / sqrt(running_var + eps), shift = beta - running_mean*scale
// (f32, as the CPU). One thread per channel; coef as in bn_fwd_finish.
extern "C" __global__ void bn_eval_coef(const float* __restrict__ gamma,
                                        const float* __restrict__ beta,
                                        const float* __restrict__ running_mean,
                                        const float* __restrict__ running_var, float eps, int c,
                                        float* __restrict__ coef) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const float scale = bn_div(gamma[ch], bn_sqrt(bn_add(running_var[ch], eps)));
    coef[ch] = scale;
    coef[c + ch] = bn_sub(beta[ch], bn_mul(running_mean[ch], scale));
}

// y = x*scale + shift (+ residual), max 0 when relu, over `planes` = n*c planes of hw values.
// A block covers a tile of `rows` consecutive planes at a time (rows = 256 / min(hw, 256)),
// which is one contiguous run of memory; blocks stride over tiles.
extern "C" __global__ void bn_apply(const float* __restrict__ x,
                                    const float* __restrict__ residual,
                                    const float* __restrict__ coef, int planes, int c, int hw,
                                    int relu, float* __restrict__ y) {
    const int span = min(hw, (int)blockDim.x);
    const int rows = blockDim.x / span;
    const int row = threadIdx.x / span, col = threadIdx.x % span;
    if (row >= rows) return;  // no barrier in this kernel
    for (i64 p = (i64)blockIdx.x * rows + row; p < planes; p += (i64)gridDim.x * rows) {
        const int ch = (int)(p % c);
        const float scale = coef[ch], shift = coef[c + ch];
        const i64 o = p * hw;
        for (int q = col; q < hw; q += span) {
            float v = bn_add(bn_mul(x[o + q], scale), shift);
            if (residual) v = bn_add(v, residual[o + q]);
            if (relu) v = fmaxf(v, 0.0f);
            y[o + q] = v;
        }
    }
}

// running = (1 - momentum)*running + momentum*batch in f64, the batch variance recovered from
// invstd and made unbiased by count/(count - 1). One thread per channel.
extern "C" __global__ void bn_update_running(const float* __restrict__ save_mean,
                                             const float* __restrict__ save_invstd, float eps,
                                             float momentum, double unbias, int c,
                                             float* __restrict__ running_mean,
                                             float* __restrict__ running_var) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const double mo = (double)momentum;
    const double is = (double)save_invstd[ch];
    const double var = bn_dmul(fmax(1.0 / bn_dmul(is, is) - (double)eps, 0.0), unbias);
    running_mean[ch] = (float)bn_dadd(bn_dmul(1.0 - mo, (double)running_mean[ch]),
                                      bn_dmul(mo, (double)save_mean[ch]));
    running_var[ch] =
        (float)bn_dadd(bn_dmul(1.0 - mo, (double)running_var[ch]), bn_dmul(mo, var));
}

// The ReLU gate of a backward: y > 0 when y is given, else x*ga + gb > 0 when `recompute`
// (the forward's f32 operations), else open.
__device__ __forceinline__ bool bn_open(const float* __restrict__ y, i64 i, float xv,
                                        bool recompute, float ga, float gb) {
    if (y) return y[i] > 0.0f;
    if (recompute) return bn_add(bn_mul(xv, ga), gb) > 0.0f;
    return true;
}

// Backward, step 1: per (channel, split) sums of g and g*(x - mean) in double, g = dy gated
// by the ReLU (y: the fused add-ReLU output, or null; beta: recompute the gate from x, or
// null). part as in bn_fwd_partial.
extern "C" __global__ void bn_bwd_partial(const float* __restrict__ x,
                                          const float* __restrict__ dy,
                                          const float* __restrict__ y,
                                          const float* __restrict__ gamma,
                                          const float* __restrict__ beta,
                                          const float* __restrict__ mean,
                                          const float* __restrict__ invstd, int n, int c,
                                          int hw, int img_per, int pos_per, int splits_pos,
                                          int splits, double* __restrict__ part) {
    const int ch = blockIdx.x / splits, s = blockIdx.x % splits;
    const BnSplit r = bn_split(s, n, hw, img_per, pos_per, splits_pos);
    const float mf = mean[ch];
    const double m = (double)mf;
    const bool recompute = beta != nullptr;
    float ga = 0.0f, gb = 0.0f;
    if (recompute) {
        ga = bn_mul(invstd[ch], gamma[ch]);
        gb = bn_sub(beta[ch], bn_mul(mf, ga));
    }
    const int len = r.q1 - r.q0;
    const int span = min(len, (int)blockDim.x);
    const int rows = blockDim.x / span;
    const int row = threadIdx.x / span, col = threadIdx.x % span;
    double a = 0.0, b = 0.0;
    if (row < rows) {
        for (int img = r.i0 + row; img < r.i1; img += rows) {
            const i64 o = ((i64)img * c + ch) * hw;
            for (int q = r.q0 + col; q < r.q1; q += span) {
                const float xv = x[o + q];
                const double g = bn_open(y, o + q, xv, recompute, ga, gb) ? (double)dy[o + q]
                                                                            : 0.0;
                a += g;
                b += g * ((double)xv - m);
            }
        }
    }
    bn_block_sum2(a, b);
    if (threadIdx.x == 0) {
        part[(i64)s * c + ch] = a;
        part[((i64)splits + s) * c + ch] = b;
    }
}

// Backward, step 2: one thread per channel: dbeta = sum g, dgamma = sum g*(x - mean)*invstd,
// and the dx coefficients coef [3][c]: k = gamma*invstd, mean(g), mean(g*(x - mean))*invstd^2.
extern "C" __global__ void bn_bwd_finish(const double* __restrict__ part, int splits, int c,
                                         double count, const float* __restrict__ gamma,
                                         const float* __restrict__ invstd,
                                         float* __restrict__ dgamma, float* __restrict__ dbeta,
                                         float* __restrict__ coef) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double sdy = 0.0, sdyx = 0.0;
    for (int i = 0; i < splits; ++i) {
        sdy += part[(i64)i * c + ch];
        sdyx += part[((i64)splits + i) * c + ch];
    }
    const double is = (double)invstd[ch];
    dbeta[ch] = (float)sdy;
    dgamma[ch] = (float)bn_dmul(sdyx, is);
    coef[ch] = (float)bn_dmul((double)gamma[ch], is);
    coef[c + ch] = (float)(sdy / count);
    coef[2 * c + ch] = (float)bn_dmul(bn_dmul(sdyx / count, is), is);
}

// Backward, step 3: dx = k*(g - mean(g) - (x - mean)*coef) per element (f32, as the CPU), and
// dresidual = g when given. Gate arguments as in bn_bwd_partial; tiles as in bn_apply.
extern "C" __global__ void bn_bwd_apply(const float* __restrict__ x,
                                        const float* __restrict__ dy,
                                        const float* __restrict__ y,
                                        const float* __restrict__ gamma,
                                        const float* __restrict__ beta,
                                        const float* __restrict__ mean,
                                        const float* __restrict__ invstd,
                                        const float* __restrict__ coef, int planes, int c,
                                        int hw, float* __restrict__ dx,
                                        float* __restrict__ dresidual) {
    const int span = min(hw, (int)blockDim.x);
    const int rows = blockDim.x / span;
    const int row = threadIdx.x / span, col = threadIdx.x % span;
    if (row >= rows) return;  // no barrier in this kernel
    const bool recompute = beta != nullptr;
    for (i64 p = (i64)blockIdx.x * rows + row; p < planes; p += (i64)gridDim.x * rows) {
        const int ch = (int)(p % c);
        const float k = coef[ch], mdy = coef[c + ch], cf = coef[2 * c + ch];
        const float m = mean[ch];
        float ga = 0.0f, gb = 0.0f;
        if (recompute) {
            ga = bn_mul(invstd[ch], gamma[ch]);
            gb = bn_sub(beta[ch], bn_mul(m, ga));
        }
        const i64 o = p * hw;
        for (int q = col; q < hw; q += span) {
            const float xv = x[o + q];
            const float g = bn_open(y, o + q, xv, recompute, ga, gb) ? dy[o + q] : 0.0f;
            dx[o + q] = bn_mul(k, bn_sub(bn_sub(g, mdy), bn_mul(bn_sub(xv, m), cf)));
            if (dresidual) dresidual[o + q] = g;
        }
    }
}
