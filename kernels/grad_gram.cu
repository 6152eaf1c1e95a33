// Batched segmented Gram matrices (CUDA twin of crates/kernels/src/cpu/grad_gram.rs).
//
// G is T x P row-major f32 (T <= 64, P up to ~1e9: all column indices are 64-bit). The host
// cuts the columns into work items, each inside one segment (a layer), and launches:
//   1. gg_partial: one block per item. Tiles of K columns of all T rows are staged in
//      shared memory (each input element is read from DRAM once); each thread owns a 4 x 4
//      block of (i, j) pairs and a strided subset of the tile's columns, sums the tile in f32
//      and accumulates tiles in f64; the block then reduces its column groups in a fixed order
//      and writes the item's upper-triangular T x T partial (f64).
//   2. gg_reduce: one block per segment sums its items' partials in item order (f64) and
//      writes the full symmetric matrix.
// No atomics: the result is bit-for-bit reproducible.
#include "common.cuh"

#define GG_MAXT 64
#define GG_THREADS 256
// Floats of the shared-memory column tile (T rows padded to a multiple of 4, times K columns):
// wide tiles for small T keep more loads in flight per synchronisation.
#define GG_TILE_FLOATS 4096
#define GG_MAX_K 512

// Decodes upper block-triangular tile q of an RB x RB block grid into (bi, bj), bi <= bj.
__device__ __forceinline__ void gg_tile(int q, int RB, int& bi, int& bj) {
    bi = 0;
    while (q >= RB - bi) {
        q -= RB - bi;
        bi++;
    }
    bj = bi + q;
}

extern "C" __global__ void __launch_bounds__(GG_THREADS)
    gg_partial(const float* __restrict__ g, i64 p, int T, const i64* __restrict__ item_start,
               const i64* __restrict__ item_end, double* __restrict__ partial) {
    // 32 KiB: the column tile (GG_TILE_FLOATS f32) and, after the loop, the reduction buffer.
    __shared__ double smem[GG_THREADS * 16];
    float* tile = reinterpret_cast<float*>(smem);

    const i64 w = blockIdx.x;
    const int RB = (T + 3) / 4;
    const int tiles = RB * (RB + 1) / 2;
    int groups = GG_THREADS / tiles;
    if (groups < 1) groups = 1;
    const int tid = threadIdx.x;
    const int q = tid % tiles, grp = tid / tiles;
    const bool active = grp < groups;
    int bi, bj;
    gg_tile(q, RB, bi, bj);
    const int Tpad = RB * 4;
    const int K = min(GG_MAX_K, GG_TILE_FLOATS / Tpad);

    double dacc[16];
#pragma unroll
    for (int e = 0; e < 16; ++e) dacc[e] = 0.0;

    const i64 c0 = item_start[w], c1 = item_end[w];
    for (i64 base = c0; base < c1; base += K) {
        const i64 rem = c1 - base;
        const int kk = rem < K ? (int)rem : K;
        __syncthreads();  // the previous tile has been consumed
        for (int e = tid; e < Tpad * K; e += GG_THREADS) {
            const int r = e / K, k = e % K;
            tile[e] = (r < T && k < kk) ? g[(i64)r * p + base + k] : 0.0f;
        }
        __syncthreads();
        if (active) {
            float acc[16];
#pragma unroll
            for (int e = 0; e < 16; ++e) acc[e] = 0.0f;
            for (int k = grp; k < kk; k += groups) {
                float a[4], b[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    a[u] = tile[(4 * bi + u) * K + k];
                    b[u] = tile[(4 * bj + u) * K + k];
                }
#pragma unroll
                for (int u = 0; u < 4; ++u)
#pragma unroll
                    for (int v = 0; v < 4; ++v) acc[u * 4 + v] = fmaf(a[u], b[v], acc[u * 4 + v]);
            }
#pragma unroll
            for (int e = 0; e < 16; ++e) dacc[e] += (double)acc[e];
        }
    }
    __syncthreads();
    double* red = smem;
    if (active) {
#pragma unroll
        for (int e = 0; e < 16; ++e) red[tid * 16 + e] = dacc[e];
    }
    __syncthreads();
    const i64 tt = (i64)T * T;
    for (int o = tid; o < tiles * 16; o += GG_THREADS) {
        const int qq = o / 16, e = o % 16;
        double s = 0.0;
        for (int gg = 0; gg < groups; ++gg) s += red[(gg * tiles + qq) * 16 + e];
        int bi2, bj2;
        gg_tile(qq, RB, bi2, bj2);
        const int i = 4 * bi2 + e / 4, j = 4 * bj2 + e % 4;
        if (i < T && j < T && i <= j) partial[w * tt + i * T + j] = s;
    }
}

// Sums the partials of segment blockIdx.x (items seg_items[l] .. seg_items[l+1]) in item
// order and writes its full symmetric T x T matrix.
extern "C" __global__ void gg_reduce(const double* __restrict__ partial,
                                     const i64* __restrict__ seg_items, int T,
                                     double* __restrict__ out) {
    const i64 l = blockIdx.x;
    const i64 b = seg_items[l], e = seg_items[l + 1];
    const i64 tt = (i64)T * T;
    for (int o = threadIdx.x; o < T * T; o += blockDim.x) {
        const int i = o / T, j = o % T;
        const int src = i <= j ? i * T + j : j * T + i;
        double s = 0.0;
        for (i64 w = b; w < e; ++w) s += partial[w * tt + src];
        out[l * tt + o] = s;
    }
}
