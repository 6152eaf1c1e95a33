// Layer norm of x [rows, dim] over dim, with affine gamma, beta [dim] (CUDA twin of
// crates/kernels/src/cpu/layer_norm.rs).
//
//   ln_forward:       one warp per row (8 rows per 256-thread block): mean and variance as
//                     f64 sums over the row (two passes, the second over x - mean, as the CPU),
//                     then y = ((x - mean)*invstd)*gamma + beta in f32.
//   ln_backward_rows: one warp per row: f64 sums of g = dy*gamma and g*x_hat, then dx.
//   ln_backward_cols: dgamma = sum_rows dy*x_hat and dbeta = sum_rows dy in two passes: block
//                     (column tile, row chunk) threads each own one column and add a fixed chunk
//                     of rows in order (coalesced across the warp); ln_backward_cols_finish adds
//                     the chunks' partials in chunk order, one thread per column.
// Every sum has an order fixed by the shape (lane-strided, then a fixed shuffle tree, or plain
// loops), and no float atomics are used: results are bit-for-bit reproducible. The f32
// arithmetic the CPU does is done with explicitly rounded operations (no FMA contraction), so
// each element sees the CPU's operations in the CPU's order.
#include "common.cuh"

#ifdef SCALARIZE_EMU
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
__device__ __forceinline__ float ln_mul(float a, float b) { return a * b; }
__device__ __forceinline__ float ln_add(float a, float b) { return a + b; }
__device__ __forceinline__ float ln_sub(float a, float b) { return a - b; }
#else
__device__ __forceinline__ float ln_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float ln_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float ln_sub(float a, float b) { return __fsub_rn(a, b); }
#endif

// Forward. save_mean, save_invstd: [rows].
extern "C" __global__ void ln_forward(const float* __restrict__ x,
                                      const float* __restrict__ gamma,
                                      const float* __restrict__ beta, i64 rows, int dim,
                                      float eps, float* __restrict__ y,
                                      float* __restrict__ save_mean,
                                      float* __restrict__ save_invstd) {
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;  // the whole warp leaves together
    const float* xr = x + row * dim;
    double s = 0.0;
    for (int j = lane; j < dim; j += 32) s += (double)xr[j];
    const double mean = warp_sum_d(s) / (double)dim;
    double q = 0.0;
    for (int j = lane; j < dim; j += 32) {
        const double d = (double)xr[j] - mean;
        q += d * d;
    }
    const double var = warp_sum_d(q) / (double)dim;
    const double is = 1.0 / sqrt(var + (double)eps);
    const float m = (float)mean, isf = (float)is;
    if (lane == 0) {
        save_mean[row] = m;
        save_invstd[row] = isf;
    }
    float* yr = y + row * dim;
    for (int j = lane; j < dim; j += 32) {
        yr[j] = ln_add(ln_mul(ln_mul(ln_sub(xr[j], m), isf), gamma[j]), beta[j]);
    }
}

// Backward, dx: with g = dy*gamma and x_hat = (x - mean)*invstd,
// dx = invstd*(g - mean(g) - x_hat*mean(g*x_hat)). One warp per row.
extern "C" __global__ void ln_backward_rows(const float* __restrict__ x,
                                            const float* __restrict__ dy,
                                            const float* __restrict__ gamma,
                                            const float* __restrict__ save_mean,
                                            const float* __restrict__ save_invstd, i64 rows,
                                            int dim, float* __restrict__ dx) {
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;  // the whole warp leaves together
    const float* xr = x + row * dim;
    const float* gr = dy + row * dim;
    const float m = save_mean[row], is = save_invstd[row];
    double sg = 0.0, sgx = 0.0;
    for (int j = lane; j < dim; j += 32) {
        const float g = ln_mul(gr[j], gamma[j]);
        sg += (double)g;
        sgx += (double)ln_mul(g, ln_mul(ln_sub(xr[j], m), is));
    }
    const float mg = (float)(warp_sum_d(sg) / (double)dim);
    const float mgx = (float)(warp_sum_d(sgx) / (double)dim);
    float* dr = dx + row * dim;
    for (int j = lane; j < dim; j += 32) {
        const float g = ln_mul(gr[j], gamma[j]);
        const float xh = ln_mul(ln_sub(xr[j], m), is);
        dr[j] = ln_mul(is, ln_sub(ln_sub(g, mg), ln_mul(xh, mgx)));
    }
}

// Backward, dgamma / dbeta partials: block (blockIdx.x, blockIdx.y) = (256-column tile, chunk
// of rows_per rows). part: [2][chunks][dim] doubles (dgamma partials, then dbeta partials).
extern "C" __global__ void ln_backward_cols(const float* __restrict__ x,
                                            const float* __restrict__ dy,
                                            const float* __restrict__ save_mean,
                                            const float* __restrict__ save_invstd, i64 rows,
                                            int dim, i64 rows_per, int chunks,
                                            double* __restrict__ part) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim) return;  // no barrier in this kernel
    const int chunk = blockIdx.y;
    const i64 r0 = (i64)chunk * rows_per;
    const i64 r1 = min(rows, r0 + rows_per);
    double dg = 0.0, db = 0.0;
    for (i64 r = r0; r < r1; ++r) {
        const i64 o = r * dim + j;
        const float g = dy[o];
        dg += (double)ln_mul(g, ln_mul(ln_sub(x[o], save_mean[r]), save_invstd[r]));
        db += (double)g;
    }
    part[(i64)chunk * dim + j] = dg;
    part[((i64)chunks + chunk) * dim + j] = db;
}

// Backward, dgamma / dbeta: the chunks' partials added in chunk order, one thread per column.
extern "C" __global__ void ln_backward_cols_finish(const double* __restrict__ part, int chunks,
                                                   int dim, float* __restrict__ dgamma,
                                                   float* __restrict__ dbeta) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim) return;
    double dg = 0.0, db = 0.0;
    for (int k = 0; k < chunks; ++k) {
        dg += part[(i64)k * dim + j];
        db += part[((i64)chunks + k) * dim + j];
    }
    dgamma[j] = (float)dg;
    dbeta[j] = (float)db;
}
