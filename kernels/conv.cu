// 2-D convolution: im2col / col2im around the GEMMs (CUDA twin of crates/kernels/src/cpu/conv.rs).
//
// NCHW input x [n, c_in, h, w], weight [c_out, c_in, kh, kw], output [n, c_out, oh, ow]; one
// stride and one zero padding for both axes. The products themselves are cuBLAS GEMMs issued by
// crates/kernels/src/cuda/conv.rs; these kernels only move data around them, over a chunk of
// `nb` images at a time (K = c_in·kh·kw rows, ohw = oh·ow pixels per image):
//   conv_im2col      col (r, img, p) = x[img, ci, iy, ix] or 0 outside the image, where
//                    r = (ci·kh + ki)·kw + kj, p = oy·ow + ox. Two layouts: image-major
//                    [nb][K][ohw] (forward: one strided-batched GEMM straight into y) or folded
//                    [K][nb·ohw] (weight gradient: one GEMM with the batch in the depth).
//   conv_col2im      the adjoint, as a gather: each input pixel sums, in the fixed order
//                    (ki, kj) ascending, the column entries that read it (no atomics).
//   conv_nchw_to_cn  dy chunk [nb, c_out, ohw] -> [c_out, nb·ohw] (the folded layout).
//   conv_bias_fill   y[img, co, p] = bias[co] (the forward GEMM then accumulates with beta 1).
//   conv_bias_grad   dbias[co] = Σ over images and pixels of dy: one block per channel, fixed
//                    per-thread order, double accumulation, fixed warp/block tree.
// Element kernels use grid-stride loops over 64-bit indices in the order of the array they
// write (coalesced stores; reads are contiguous along a row of pixels), dividing in 32 bits
// whenever the operands fit. Blocks are 256 threads. Per-image sizes (K, h·w, oh·ow) fit in
// int (checked by the wrapper).
#include "common.cuh"

// a / b for non-negative a and b, as one 32-bit division when both fit (the usual case: a
// 64-bit division is a long instruction sequence on the GPU).
__device__ __forceinline__ i64 udiv(i64 a, i64 b) {
    return ((a | b) >> 31) == 0 ? (i64)((unsigned)a / (unsigned)b) : a / b;
}

// Writes the im2col matrix of images x[0..nb) (x points at the chunk's first image).
// folded = 0: col[(img·K + r)·ohw + p]; folded = 1: col[r·(nb·ohw) + img·ohw + p].
extern "C" __global__ void conv_im2col(const float* __restrict__ x, int nb, int c_in, int h, int w,
                                       int kh, int kw, int stride, int pad, int oh, int ow,
                                       int folded, float* __restrict__ col) {
    const i64 ohw = (i64)oh * ow;
    const i64 k = (i64)c_in * kh * kw;
    const i64 total = (i64)nb * k * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        i64 img, r, p;
        if (folded) {
            const i64 cols = (i64)nb * ohw;
            r = udiv(i, cols);
            const i64 q = i - r * cols;
            img = udiv(q, ohw);
            p = q - img * ohw;
        } else {
            const i64 per = k * ohw;
            img = udiv(i, per);
            const i64 q = i - img * per;
            r = udiv(q, ohw);
            p = q - r * ohw;
        }
        // r < K and p < ohw fit in int (checked by the wrapper).
        const int ri = (int)r, pi = (int)p;
        const int kj = ri % kw, rk = ri / kw;
        const int ki = rk % kh, ci = rk / kh;
        const int oy = pi / ow, ox = pi - oy * ow;
        const int iy = oy * stride + ki - pad, ix = ox * stride + kj - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
            v = x[((img * c_in + ci) * h + iy) * (i64)w + ix];
        col[i] = v;
    }
}

// dx of images [0..nb) (overwritten) from the column gradient dcol in the given layout: each
// input pixel (iy, ix) of channel ci gathers dcol(r, img, oy·ow + ox) over every kernel tap
// (ki, kj) with oy·stride + ki − pad = iy and ox·stride + kj − pad = ix, in (ki, kj) order.
extern "C" __global__ void conv_col2im(const float* __restrict__ dcol, int nb, int c_in, int h,
                                       int w, int kh, int kw, int stride, int pad, int oh, int ow,
                                       int folded, float* __restrict__ dx) {
    const i64 ohw = (i64)oh * ow;
    const i64 k = (i64)c_in * kh * kw;
    const i64 hw = (i64)h * w;
    const i64 total = (i64)nb * c_in * hw;
    // Strides of (r, img) in the column layout; the pixel stride is 1.
    const i64 r_stride = folded ? (i64)nb * ohw : ohw;
    const i64 img_stride = folded ? ohw : k * ohw;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, hw);  // img·c_in + ci
        const int q = (int)(i - plane * hw);
        const int iy = q / w, ix = q - iy * w;
        const i64 img = udiv(plane, c_in);
        const int ci = (int)(plane - img * c_in);
        const float* base = dcol + img * img_stride + (i64)ci * kh * kw * r_stride;
        // Taps ki with (iy + pad − ki) a non-negative multiple of stride, below oh·stride.
        const int ty = iy + pad, tx = ix + pad;
        float acc = 0.0f;
        for (int ki = ty % stride; ki < kh && ki <= ty; ki += stride) {
            const int oy = (ty - ki) / stride;
            if (oy >= oh) continue;
            for (int kj = tx % stride; kj < kw && kj <= tx; kj += stride) {
                const int ox = (tx - kj) / stride;
                if (ox >= ow) continue;
                acc += base[(i64)(ki * kw + kj) * r_stride + (i64)oy * ow + ox];
            }
        }
        dx[i] = acc;
    }
}

// dst[co·(nb·ohw) + img·ohw + p] = src[(img·c_out + co)·ohw + p] for the chunk's nb images.
extern "C" __global__ void conv_nchw_to_cn(const float* __restrict__ src, int nb, int c_out,
                                           i64 ohw, float* __restrict__ dst) {
    const i64 cols = (i64)nb * ohw;
    const i64 total = (i64)c_out * cols;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 co = udiv(i, cols);
        const i64 q = i - co * cols;
        const i64 img = udiv(q, ohw);
        const i64 p = q - img * ohw;
        dst[i] = src[(img * c_out + co) * ohw + p];
    }
}

// y[img, co, p] = bias[co] over the `total` elements of y (images of c_out planes of ohw).
extern "C" __global__ void conv_bias_fill(const float* __restrict__ bias, i64 total, int c_out,
                                          i64 ohw, float* __restrict__ y) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (i64)gridDim.x * blockDim.x) {
        const i64 plane = udiv(i, ohw);
        y[i] = bias[plane - udiv(plane, c_out) * c_out];
    }
}

// dbias[co] = Σ_img Σ_p dy[img, co, p], one block of blockDim.x (a multiple of 32, at most
// 1024) threads per channel co = blockIdx.x. Each thread sums a fixed strided subset in
// double; the warp and block trees are fixed, so the result is reproducible.
extern "C" __global__ void conv_bias_grad(const float* __restrict__ dy, i64 n, int c_out, i64 ohw,
                                          float* __restrict__ dbias) {
    __shared__ double sh[32];
    const int co = blockIdx.x;
    double acc = 0.0;
    // (img, p) flattened, so that small planes (7x7) still keep every thread busy.
    const i64 total = (i64)n * ohw;
    for (i64 j = threadIdx.x; j < total; j += blockDim.x) {
        const i64 img = udiv(j, ohw);
        acc += (double)dy[(img * c_out + co) * ohw + (j - img * ohw)];
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    acc = warp_sum_d(acc);
    if (lane == 0) sh[warp] = acc;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    acc = (threadIdx.x < nw) ? sh[threadIdx.x] : 0.0;
    if (warp == 0) acc = warp_sum_d(acc);
    if (threadIdx.x == 0) dbias[co] = (float)acc;
}
