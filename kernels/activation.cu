// ReLU and GELU, forward and backward (CUDA twin of crates/kernels/src/cpu/activation.rs).
//
// One thread per element in a grid-stride loop (coalesced, any grid); every output element is
// written by exactly one thread, so results are deterministic.
//
// ReLU keeps the CPU's exact semantics: y = x if x > 0 else 0 (NaN gives 0), and the backward
// passes dy where x > 0.
//
// GELU is the exact (erf) form like the CPU, not the tanh approximation:
//   y = x * Phi(x), dy/dx = Phi(x) + x * phi(x), Phi(x) = erfc(-x / sqrt(2)) / 2,
//   phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
// erfcf keeps Phi relatively accurate in the far negative tail (1 - erf would cancel). The CPU
// evaluates Phi with Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), so the two agree to
// about 1e-7 * (1 + |x|), not bit for bit.
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                   \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (i64)gridDim.x * blockDim.x)

// 1/sqrt(2) and 1/sqrt(2 pi) as floats.
#define GELU_FRAC_1_SQRT_2 0.70710678118654752f
#define GELU_INV_SQRT_2PI 0.39894228040143268f

extern "C" __global__ void act_relu_forward(const float* __restrict__ x, float* __restrict__ y,
                                            i64 n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

extern "C" __global__ void act_relu_backward(const float* __restrict__ x,
                                             const float* __restrict__ dy,
                                             float* __restrict__ dx, i64 n) {
    GRID_STRIDE(i, n) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

__device__ __forceinline__ float gelu_cdf(float v) {
    return 0.5f * erfcf(-v * GELU_FRAC_1_SQRT_2);
}

extern "C" __global__ void act_gelu_forward(const float* __restrict__ x, float* __restrict__ y,
                                            i64 n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v * gelu_cdf(v);
    }
}

extern "C" __global__ void act_gelu_backward(const float* __restrict__ x,
                                             const float* __restrict__ dy,
                                             float* __restrict__ dx, i64 n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        const float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] = dy[i] * (gelu_cdf(v) + v * pdf);
    }
}
