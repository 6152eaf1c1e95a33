// Average, max and global-average pooling (CUDA twin of crates/kernels/src/cpu/pool.rs).
//
// NCHW planes: x [planes = n·c, h, w], y [planes, oh, ow]; window kh x kw, one stride and zero
// padding for both axes (the wrapper checks pad ≤ window / 2, so every window holds at least
// one input pixel, and that h·w and oh·ow fit in int). Every kernel is a grid-stride loop, one thread per element it writes, in
// the written array's order (coalesced stores), 256-thread blocks:
//   pool_avg_forward    y = (Σ of the window clipped to the image) / (kh·kw), summed row by row
//                       in the CPU's order (count_include_pad = true);
//   pool_avg_backward   a gather: each input pixel sums dy·(1/(kh·kw)) over the outputs whose
//                       window covers it, in (oy, ox) order;
//   pool_max_forward    max and argmax (index iy·w + ix in the plane); the first maximum in
//                       row-major order wins ties, and the first NaN wins over any number, as
//                       on the CPU;
//   pool_max_check      flags (integer atomicMin of the output index, deterministic) the first
//                       argmax outside its own window;
//   pool_max_backward   a gather: each input pixel sums dy of the outputs (in (oy, ox) order)
//                       whose argmax is that pixel;
//   gap_forward         one warp per plane, double sum in a fixed lane order and warp tree;
//   gap_backward        dx = dy · (1/hw).
// No float atomics: every result is reproducible bit for bit. The products that the CPU rounds
// before an addition use __fmul_rn so that the GPU compiler cannot fuse them into an FMA: the
// sums then match the CPU's bit for bit.
#include "common.cuh"

// a / b for non-negative a and b, as one 32-bit division when both fit (the usual case: a
// 64-bit division is a long instruction sequence on the GPU).
__device__ __forceinline__ i64 udiv(i64 a, i64 b) {
    return ((a | b) >> 31) == 0 ? (i64)((unsigned)a / (unsigned)b) : a / b;
}

#ifdef SCALARIZE_EMU
__device__ __forceinline__ float mul_rn(float a, float b) { return a * b; }
#else
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
#endif

// Outputs o in [lo, hi) whose window [o·stride − pad, o·stride − pad + k) covers input i.
__device__ __forceinline__ void covering(int i, int k, int stride, int pad, int out, int& lo,
                                         int& hi) {
    const int t = i + pad - k + 1;  // o·stride ≥ t
    lo = t <= 0 ? 0 : (t + stride - 1) / stride;
    hi = min((i + pad) / stride + 1, out);
    if (hi < lo) hi = lo;
}

// The window of output o clipped to the image: [lo, hi).
__device__ __forceinline__ void span(int o, int k, int stride, int pad, int size, int& lo,
                                     int& hi) {
    const int start = o * stride - pad;
    lo = max(start, 0);
    hi = min(start + k, size);
    if (hi < lo) hi = lo;
}

// Output element i of [planes, oh, ow]: its plane, its index q in the plane and its window
// clipped to the image, rows [y0, y1) and columns [x0, x1).
struct OutWindow {
    i64 plane;
    int q, y0, y1, x0, x1;
};

__device__ __forceinline__ OutWindow out_window(i64 i, int h, int w, int kh, int kw, int stride,
                                                int pad, int oh, int ow) {
    const i64 ohw = (i64)oh * ow;
    OutWindow r;
    r.plane = udiv(i, ohw);
    r.q = (int)(i - r.plane * ohw);
    span(r.q / ow, kh, stride, pad, h, r.y0, r.y1);
    span(r.q % ow, kw, stride, pad, w, r.x0, r.x1);
    return r;
}

// Input element i of [planes, h, w]: its plane, its index q in the plane and the outputs whose
// windows cover it, rows [oy0, oy1) and columns [ox0, ox1).
struct InCover {
    i64 plane;
    int q, oy0, oy1, ox0, ox1;
};

__device__ __forceinline__ InCover in_cover(i64 i, int h, int w, int kh, int kw, int stride,
                                            int pad, int oh, int ow) {
    const i64 hw = (i64)h * w;
    InCover r;
    r.plane = udiv(i, hw);
    r.q = (int)(i - r.plane * hw);
    covering(r.q / w, kh, stride, pad, oh, r.oy0, r.oy1);
    covering(r.q % w, kw, stride, pad, ow, r.ox0, r.ox1);
    return r;
}

extern "C" __global__ void pool_avg_forward(const float* __restrict__ x, i64 planes, int h, int w,
                                            int kh, int kw, int stride, int pad, int oh, int ow,
                                            float inv, float* __restrict__ y) {
    const i64 ohw = (i64)oh * ow;
    const i64 total = planes * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const OutWindow o = out_window(i, h, w, kh, kw, stride, pad, oh, ow);
        const float* xp = x + o.plane * h * (i64)w;
        float acc = 0.0f;
        for (int iy = o.y0; iy < o.y1; ++iy) {
            float row = 0.0f;  // the CPU sums each row of the window, then adds the row
            for (int ix = o.x0; ix < o.x1; ++ix) row += xp[(i64)iy * w + ix];
            acc += row;
        }
        y[i] = acc * inv;
    }
}

extern "C" __global__ void pool_avg_backward(const float* __restrict__ dy, i64 planes, int h,
                                             int w, int kh, int kw, int stride, int pad, int oh,
                                             int ow, float inv, float* __restrict__ dx) {
    const i64 hw = (i64)h * w;
    const i64 total = planes * hw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const InCover c = in_cover(i, h, w, kh, kw, stride, pad, oh, ow);
        const float* gp = dy + c.plane * oh * (i64)ow;
        float acc = 0.0f;
        for (int oy = c.oy0; oy < c.oy1; ++oy)
            for (int ox = c.ox0; ox < c.ox1; ++ox) acc += mul_rn(gp[(i64)oy * ow + ox], inv);
        dx[i] = acc;
    }
}

extern "C" __global__ void pool_max_forward(const float* __restrict__ x, i64 planes, int h, int w,
                                            int kh, int kw, int stride, int pad, int oh, int ow,
                                            float* __restrict__ y,
                                            unsigned* __restrict__ argmax) {
    const i64 ohw = (i64)oh * ow;
    const i64 total = planes * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const OutWindow o = out_window(i, h, w, kh, kw, stride, pad, oh, ow);
        const float* xp = x + o.plane * h * (i64)w;
        int best = o.y0 * w + o.x0;
        float bv = xp[best];
        for (int iy = o.y0; iy < o.y1; ++iy) {
            for (int ix = o.x0; ix < o.x1; ++ix) {
                const float v = xp[(i64)iy * w + ix];
                if (v > bv || (isnan(v) && !isnan(bv))) {
                    bv = v;
                    best = iy * w + ix;
                }
            }
        }
        y[i] = bv;
        argmax[i] = (unsigned)best;
    }
}

// bad (initially all ones) gets the smallest output index whose argmax lies outside that
// output's window (the plane included).
extern "C" __global__ void pool_max_check(const unsigned* __restrict__ argmax, i64 planes, int h,
                                          int w, int kh, int kw, int stride, int pad, int oh,
                                          int ow, u64* __restrict__ bad) {
    const i64 ohw = (i64)oh * ow;
    const i64 total = planes * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const OutWindow o = out_window(i, h, w, kh, kw, stride, pad, oh, ow);
        const unsigned a = argmax[i];
        const bool inside = a < (unsigned)h * (unsigned)w && (int)(a / w) >= o.y0 &&
                            (int)(a / w) < o.y1 && (int)(a % w) >= o.x0 && (int)(a % w) < o.x1;
        if (!inside) atomicMin(bad, (u64)i);
    }
}

extern "C" __global__ void pool_max_backward(const unsigned* __restrict__ argmax,
                                             const float* __restrict__ dy, i64 planes, int h,
                                             int w, int kh, int kw, int stride, int pad, int oh,
                                             int ow, float* __restrict__ dx) {
    const i64 hw = (i64)h * w;
    const i64 total = planes * hw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const InCover c = in_cover(i, h, w, kh, kw, stride, pad, oh, ow);
        const i64 base = c.plane * oh * (i64)ow;
        float acc = 0.0f;
        for (int oy = c.oy0; oy < c.oy1; ++oy) {
            for (int ox = c.ox0; ox < c.ox1; ++ox) {
                const i64 o = base + (i64)oy * ow + ox;
                if (argmax[o] == (unsigned)c.q) acc += dy[o];
            }
        }
        dx[i] = acc;
    }
}

// One warp per plane (blockDim.x a multiple of 32): y[plane] = (Σ x[plane, :] in double) · inv.
extern "C" __global__ void gap_forward(const float* __restrict__ x, i64 planes, i64 hw, double inv,
                                       float* __restrict__ y) {
    const int lane = threadIdx.x & 31;
    const i64 warps = (i64)gridDim.x * (blockDim.x >> 5);
    for (i64 plane = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); plane < planes;
         plane += warps) {
        const float* xp = x + plane * hw;
        double acc = 0.0;
        for (i64 j = lane; j < hw; j += 32) acc += (double)xp[j];
        acc = warp_sum_d(acc);  // the whole warp shares `plane`, so every lane is here
        if (lane == 0) y[plane] = (float)(acc * inv);
    }
}

extern "C" __global__ void gap_backward(const float* __restrict__ dy, i64 total, i64 hw, float inv,
                                        float* __restrict__ dx) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        dx[i] = dy[udiv(i, hw)] * inv;
    }
}
