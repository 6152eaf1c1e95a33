// Axis permutation (rank <= 6) and 2-D transpose (CUDA twin of
// crates/kernels/src/cpu/permute.rs).
//
// The host (cuda/permute.rs) first drops size-1 axes and merges axes that stay adjacent, then
// picks one of two kernels (a plain device copy when nothing moves):
// pm_rows     the last output axis is the input's contiguous axis: the output is rows of `len`
//             elements, each a contiguous run of the input. Groups of `tpr` threads (a power of
//             two dividing blockDim.x) copy one row at a time on consecutive columns
//             (coalesced both ways); the row's input offset costs one division per outer axis
//             per row, not per element.
// pm_tiled    otherwise (a batched transpose): A is the input's contiguous axis, B the output's.
//             Blocks of 32 x 8 threads move 32 x 32 tiles of (B, A) through shared memory:
//             reads run along A, writes along B, both coalesced; the tile is 32 x 33 so the
//             column reads of shared memory hit 32 different banks. The up to 4 other axes
//             are the batch, decomposed once per tile. transpose2d is the unbatched case.
// Every output element is written by exactly one thread: deterministic.
#include "common.cuh"

// Input offset of row r of the output, whose outer axes (innermost last) have sizes d[] and
// input strides s[]; only the last nd of the 5 slots are used.
__device__ __forceinline__ i64 row_offset(i64 r, int nd, const i64 (&d)[5], const i64 (&s)[5]) {
    i64 off = 0;
#pragma unroll
    for (int k = 4; k >= 0; --k) {
        if (k >= 5 - nd) {
            const i64 q = r / d[k];
            off += (r - q * d[k]) * s[k];
            r = q;
        }
    }
    return off;
}

extern "C" __global__ void pm_rows(const float* __restrict__ x, float* __restrict__ y, i64 rows,
                                   i64 len, int tpr, int nd, i64 d0, i64 d1, i64 d2, i64 d3,
                                   i64 d4, i64 s0, i64 s1, i64 s2, i64 s3, i64 s4) {
    const i64 d[5] = {d0, d1, d2, d3, d4};
    const i64 s[5] = {s0, s1, s2, s3, s4};
    const int groups = blockDim.x / tpr;
    const int g = threadIdx.x / tpr, lane = threadIdx.x % tpr;
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const float* xr = x + row_offset(r, nd, d, s);
        float* yr = y + r * len;
        for (i64 j = lane; j < len; j += tpr) yr[j] = xr[j];
    }
}

// y[yo + a * y_sa + b] = x[xo + b * x_sb + a] for a < n_a, b < n_b and every batch index, whose
// axes (innermost last) have sizes bd*, input strides bx* and output strides by*.
extern "C" __global__ void pm_tiled(const float* __restrict__ x, float* __restrict__ y, i64 n_a,
                                    i64 n_b, i64 x_sb, i64 y_sa, i64 nbatch, i64 bd0, i64 bd1,
                                    i64 bd2, i64 bd3, i64 bx0, i64 bx1, i64 bx2, i64 bx3,
                                    i64 by0, i64 by1, i64 by2, i64 by3) {
    __shared__ float tile[32][33];
    const i64 bd[4] = {bd0, bd1, bd2, bd3};
    const i64 bx[4] = {bx0, bx1, bx2, bx3};
    const i64 by[4] = {by0, by1, by2, by3};
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 ta = (n_a + 31) / 32, tb = (n_b + 31) / 32;
    const i64 tiles = ta * tb * nbatch;
    for (i64 t = blockIdx.x; t < tiles; t += gridDim.x) {
        const i64 a0 = (t % ta) * 32;
        i64 rest = t / ta;
        const i64 b0 = (rest % tb) * 32;
        rest /= tb;
        i64 xo = 0, yo = 0;
#pragma unroll
        for (int k = 3; k >= 0; --k) {
            if (bd[k] > 1) {
                const i64 q = rest / bd[k];
                const i64 i = rest - q * bd[k];
                xo += i * bx[k];
                yo += i * by[k];
                rest = q;
            }
        }
#pragma unroll
        for (int j0 = 0; j0 < 32; j0 += 8) {
            const int j = j0 + ty;
            const i64 a = a0 + tx, b = b0 + j;
            if (a < n_a && b < n_b) tile[j][tx] = x[xo + b * x_sb + a];
        }
        __syncthreads();
#pragma unroll
        for (int j0 = 0; j0 < 32; j0 += 8) {
            const int j = j0 + ty;
            const i64 a = a0 + j, b = b0 + tx;
            if (a < n_a && b < n_b) y[yo + a * y_sa + b] = tile[tx][j];
        }
        __syncthreads();
    }
}
