// Shared helpers for scalarize's CUDA kernels. NVRTC has no standard headers, so only
// builtins are used here. The Rust side pastes this file in place of `#include "common.cuh"`.
#pragma once

typedef long long i64;
typedef unsigned long long u64;

#define NEG_INF (__int_as_float(0xff800000u))

// Full-warp reductions (every lane gets the result; the order is fixed, so results are
// deterministic).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ int warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Combines two online-softmax states (max m, sum s of exp(x - m)).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == NEG_INF) return;  // both empty
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// Dynamically sized shared memory (the launch's shared_mem_bytes) as a T array named `name`.
#ifdef SCALARIZE_EMU
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char name##_bytes[]; \
    T* name = reinterpret_cast<T*>(name##_bytes)
#endif
