// Elementwise arithmetic and bias broadcasts (CUDA twin of crates/kernels/src/cpu/elementwise.rs).
//
// ew_add / ew_sub / ew_mul / ew_scale / ew_axpy_acc: one thread per element in a grid-stride
//   loop over the flat buffers (any block size, any grid; consecutive threads touch consecutive
//   elements, so every access is coalesced).
// ew_add_bias_rows: y[r, j] = x[r, j] + bias[j] over rows of length `len`. Each block of
//   blockDim.x threads is cut into groups of `tpr` threads (a power of two dividing blockDim.x);
//   a group walks one row at a time with its threads on consecutive columns, so the row index
//   (and, for channels, its channel) costs one division per row instead of one per element.
//   `modulus` = 0 gives bias[j] per column (add_bias_rows); otherwise the row r is a plane of
//   NCHW and bias[r % modulus] is added to the whole plane (add_bias_channels).
// The bias gradients are reductions and live in reduce.cu (called from cuda/elementwise.rs).
//
// No atomics, no reductions: every output element is written by exactly one thread, so the
// results are deterministic. axpy uses __fmul_rn / __fadd_rn so that NVRTC cannot contract it
// into an FMA: the result is then bit-identical to the CPU's y + alpha*x (two roundings).
#include "common.cuh"

#ifdef SCALARIZE_EMU
// The emulator's host compiler targets baseline x86-64 (no FMA), so plain operators already
// round each operation separately.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
#endif

#define GRID_STRIDE(i, n)                                                   \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (i64)gridDim.x * blockDim.x)

extern "C" __global__ void ew_add(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void ew_sub(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] - b[i];
}

extern "C" __global__ void ew_mul(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

extern "C" __global__ void ew_scale(const float* __restrict__ x, float s, float* __restrict__ y,
                                    i64 n) {
    GRID_STRIDE(i, n) y[i] = s * x[i];
}

// y += alpha * x, rounded like the CPU (product, then sum).
extern "C" __global__ void ew_axpy_acc(float alpha, const float* __restrict__ x,
                                       float* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));
}

// y[r, j] = x[r, j] + (modulus ? bias[r % modulus] : bias[j]) for r < rows, j < len.
extern "C" __global__ void ew_add_bias_rows(const float* __restrict__ x,
                                            const float* __restrict__ bias,
                                            float* __restrict__ y, i64 rows, i64 len,
                                            i64 modulus, int tpr) {
    const int groups = blockDim.x / tpr;
    const int g = threadIdx.x / tpr, lane = threadIdx.x % tpr;
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const float* xr = x + r * len;
        float* yr = y + r * len;
        if (modulus) {
            const float b = bias[r % modulus];
            for (i64 j = lane; j < len; j += tpr) yr[j] = xr[j] + b;
        } else {
            for (i64 j = lane; j < len; j += tpr) yr[j] = xr[j] + bias[j];
        }
    }
}
