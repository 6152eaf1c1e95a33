// 2-D upsampling of NCHW planes, bilinear (align_corners = false) and nearest, forward and
// backward (CUDA twin of crates/kernels/src/cpu/upsample.rs).
//
// The taps are computed on the host exactly as the CPU computes them (f32 index arithmetic
// that an on-device FMA could round differently at the borders) and passed in two tables:
//   idx  int:   bilinear: y taps (i0, i1) per output row [oh][2], x taps [ow][2], then the
//               range [first, end) of output rows whose taps touch each input row [h][2] and
//               the same for columns [w][2]; nearest: y tap per output row [oh], x tap per
//               output column [ow], then the row ranges [h][2] and column ranges [w][2];
//   wts  float: bilinear only: (lambda0, lambda1) per output row [oh][2], per column [ow][2].
// Every kernel is a grid-stride loop with one thread per element it writes, in that array's
// order, 256-thread blocks. The backward passes are gathers: each input pixel sums, in (oy,
// ox, tap) order, the contributions the CPU scatters into it in that same order, so there are
// no atomics and the results equal the CPU's bit for bit (products use __fmul_rn, which the
// compiler never fuses into an FMA).
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

extern "C" __global__ void ups_bilinear_forward(const float* __restrict__ x, i64 planes, int h,
                                                int w, int oh, int ow,
                                                const int* __restrict__ idx,
                                                const float* __restrict__ wts,
                                                float* __restrict__ y) {
    const int* ty = idx;
    const int* tx = idx + 2 * oh;
    const float* wy = wts;
    const float* wx = wts + 2 * oh;
    const i64 ohw = (i64)oh * ow;
    const i64 total = planes * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, ohw);
        const int q = (int)(i - plane * ohw);
        const int oy = q / ow, ox = q % ow;
        const float* xp = x + plane * h * (i64)w;
        const i64 r0 = (i64)ty[2 * oy] * w, r1 = (i64)ty[2 * oy + 1] * w;
        const int c0 = tx[2 * ox], c1 = tx[2 * ox + 1];
        const float a0 = wy[2 * oy], a1 = wy[2 * oy + 1];
        const float b0 = wx[2 * ox], b1 = wx[2 * ox + 1];
        // a0·(b0·x00 + b1·x01) + a1·(b0·x10 + b1·x11), rounded as on the CPU.
        const float top = mul_rn(b0, xp[r0 + c0]) + mul_rn(b1, xp[r0 + c1]);
        const float bot = mul_rn(b0, xp[r1 + c0]) + mul_rn(b1, xp[r1 + c1]);
        y[i] = mul_rn(a0, top) + mul_rn(a1, bot);
    }
}

extern "C" __global__ void ups_bilinear_backward(const float* __restrict__ dy, i64 planes, int h,
                                                 int w, int oh, int ow,
                                                 const int* __restrict__ idx,
                                                 const float* __restrict__ wts,
                                                 float* __restrict__ dx) {
    const int* ty = idx;
    const int* tx = idx + 2 * oh;
    const int* ry = tx + 2 * ow;
    const int* rx = ry + 2 * h;
    const float* wy = wts;
    const float* wx = wts + 2 * oh;
    const i64 hw = (i64)h * w;
    const i64 total = planes * hw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, hw);
        const int q = (int)(i - plane * hw);
        const int iy = q / w, ix = q % w;
        const float* gp = dy + plane * oh * (i64)ow;
        float acc = 0.0f;
        for (int oy = ry[2 * iy]; oy < ry[2 * iy + 1]; ++oy) {
            const bool y0 = ty[2 * oy] == iy, y1 = ty[2 * oy + 1] == iy;
            const float a0 = wy[2 * oy], a1 = wy[2 * oy + 1];
            for (int ox = rx[2 * ix]; ox < rx[2 * ix + 1]; ++ox) {
                const bool x0 = tx[2 * ox] == ix, x1 = tx[2 * ox + 1] == ix;
                const float b0 = wx[2 * ox], b1 = wx[2 * ox + 1];
                const float g = gp[(i64)oy * ow + ox];
                // The CPU's scatter order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
                if (y0 && x0) acc += mul_rn(mul_rn(a0, b0), g);
                if (y0 && x1) acc += mul_rn(mul_rn(a0, b1), g);
                if (y1 && x0) acc += mul_rn(mul_rn(a1, b0), g);
                if (y1 && x1) acc += mul_rn(mul_rn(a1, b1), g);
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void ups_nearest_forward(const float* __restrict__ x, i64 planes, int h,
                                               int w, int oh, int ow,
                                               const int* __restrict__ idx,
                                               float* __restrict__ y) {
    const int* ty = idx;
    const int* tx = idx + oh;
    const i64 ohw = (i64)oh * ow;
    const i64 total = planes * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, ohw);
        const int q = (int)(i - plane * ohw);
        const int oy = q / ow, ox = q % ow;
        y[i] = x[(plane * h + ty[oy]) * (i64)w + tx[ox]];
    }
}

extern "C" __global__ void ups_nearest_backward(const float* __restrict__ dy, i64 planes, int h,
                                                int w, int oh, int ow,
                                                const int* __restrict__ idx,
                                                float* __restrict__ dx) {
    const int* ty = idx;
    const int* tx = idx + oh;
    const int* ry = tx + ow;
    const int* rx = ry + 2 * h;
    const i64 hw = (i64)h * w;
    const i64 total = planes * hw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, hw);
        const int q = (int)(i - plane * hw);
        const int iy = q / w, ix = q % w;
        const float* gp = dy + plane * oh * (i64)ow;
        float acc = 0.0f;
        for (int oy = ry[2 * iy]; oy < ry[2 * iy + 1]; ++oy) {
            if (ty[oy] != iy) continue;
            for (int ox = rx[2 * ix]; ox < rx[2 * ix + 1]; ++ox) {
                if (tx[ox] == ix) acc += gp[(i64)oy * ow + ox];
            }
        }
        dx[i] = acc;
    }
}
