// Concatenation along an axis and its inverse, split (CUDA twin of
// crates/kernels/src/cpu/concat.rs). Both are strided 2-D copies: part i, viewed as
// [outer, inner_i], is the column block [at_i, at_i + inner_i) of the [outer, width] result.
//
// cc_copy2d: dst[r * dst_ld + j] = src[r * src_ld + j] for r < rows, j < cols; the caller
//   offsets the pointers to the column block. Each block of blockDim.x threads is cut into
//   groups of `tpr` threads (a power of two dividing blockDim.x, at least the row length up to
//   a block); a group copies one row at a time with its threads on consecutive columns, so
//   reads and writes are coalesced and no index needs a division.
// One launch per part (concat reads each part once, split writes each once); every output
// element is written by exactly one thread, so results are deterministic.
#include "common.cuh"

extern "C" __global__ void cc_copy2d(const float* __restrict__ src, i64 src_ld,
                                     float* __restrict__ dst, i64 dst_ld, i64 rows, i64 cols,
                                     int tpr) {
    const int groups = blockDim.x / tpr;
    const int g = threadIdx.x / tpr, lane = threadIdx.x % tpr;
    for (i64 r = (i64)blockIdx.x * groups + g; r < rows; r += (i64)gridDim.x * groups) {
        const float* s = src + r * src_ld;
        float* d = dst + r * dst_ld;
        for (i64 j = lane; j < cols; j += tpr) d[j] = s[j];
    }
}
