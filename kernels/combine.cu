// Weighted combination of T per-task gradient rows: out[c] = sum_t w[l][t] * G[t, c] for every
// column c of segment l (the direction the MTO methods step along; with one segment this is
// out = G^T w). Device twin of crates/mto/src/combine.rs (combine / combine_segments).
//
// G is T x P row-major f32 (T <= 64; column indices are 64-bit), w is L x T f64 (one weight
// vector per segment), segment ends are strictly increasing with the last equal to P.
//
// Launch shape: 1-D grid, block CMB_THREADS threads; block b owns columns
// [b * CMB_CHUNK, (b + 1) * CMB_CHUNK) and walks the segments inside that range (found by a
// binary search over the segment ends). For each segment, warp 0 compacts the non-zero weights
// (ballot + popcount, ascending t) into shared memory, then every thread accumulates CMB_COLS
// columns at a time over the compacted rows (coalesced row reads, CMB_COLS loads in flight).
//
// Arithmetic, as the CPU: rows with weight exactly 0 are skipped (a NaN in such a row does not
// propagate), each column accumulates acc += w_t * (double)G[t, c] in f64 in ascending t, starting
// from 0, with non-contracting round-to-nearest operations (__dmul_rn, __dadd_rn), and is rounded
// once to f32. One thread owns each column: the result is deterministic and equal bit for bit to
// crates/mto's combine. f64 costs nothing here on data-centre GPUs (the kernel is bound by
// reading G: one FMA per 4 bytes).
#include "common.cuh"

#define CMB_THREADS 256
#define CMB_COLS 4
#define CMB_CHUNK (CMB_THREADS * CMB_COLS * 2)
#define CMB_MAXT 64

#ifdef SCALARIZE_EMU
// The emulator runs on the host compiler: volatile results keep it from contracting into FMAs.
__device__ __forceinline__ double cmb_mul(double a, double b) {
    volatile double r = a * b;
    return r;
}
__device__ __forceinline__ double cmb_add(double a, double b) {
    volatile double r = a + b;
    return r;
}
__device__ __forceinline__ int cmb_popc(unsigned v) { return __builtin_popcount(v); }
#else
__device__ __forceinline__ double cmb_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double cmb_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ int cmb_popc(unsigned v) { return __popc(v); }
#endif

// Index of the segment holding column i (the first whose end is greater than i).
__device__ __forceinline__ int cmb_segment_of(const i64* __restrict__ seg_end, int L, i64 i) {
    int lo = 0, hi = L - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (seg_end[mid] > i)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

extern "C" __global__ void __launch_bounds__(CMB_THREADS)
    combine_rows(const float* __restrict__ g, i64 p, int T, const i64* __restrict__ seg_end,
                 int L, const double* __restrict__ w, float* __restrict__ out) {
    __shared__ int rows[CMB_MAXT];
    __shared__ double wts[CMB_MAXT];
    __shared__ int nrows;
    const i64 c0 = (i64)blockIdx.x * CMB_CHUNK;
    if (c0 >= p) return;  // the whole block leaves together
    const i64 c1 = min(c0 + (i64)CMB_CHUNK, p);
    int s = cmb_segment_of(seg_end, L, c0);
    i64 start = c0;
    while (start < c1) {  // uniform across the block: the barriers below are reached by all
        const i64 end = min(seg_end[s], c1);
        __syncthreads();  // the previous segment's row list has been consumed
        if (threadIdx.x < 32) {
            const int lane = threadIdx.x;
            int count = 0;
            for (int h = 0; h < T; h += 32) {
                const int t = h + lane;
                const double wt = t < T ? w[(i64)s * T + t] : 0.0;
                const bool keep = wt != 0.0;  // NaN is kept, as on the CPU
                const unsigned m = __ballot_sync(0xffffffffu, keep);
                if (keep) {
                    const int pos = count + cmb_popc(m & ((1u << lane) - 1u));
                    rows[pos] = t;
                    wts[pos] = wt;
                }
                count += cmb_popc(m);
            }
            if (lane == 0) nrows = count;
        }
        __syncthreads();
        const int K = nrows;
        for (i64 base = start + threadIdx.x; base < end; base += CMB_THREADS * CMB_COLS) {
            double acc[CMB_COLS];
#pragma unroll
            for (int j = 0; j < CMB_COLS; ++j) acc[j] = 0.0;
#pragma unroll 2
            for (int k = 0; k < K; ++k) {
                const float* row = g + (i64)rows[k] * p;
                const double wk = wts[k];
#pragma unroll
                for (int j = 0; j < CMB_COLS; ++j) {
                    const i64 c = base + (i64)j * CMB_THREADS;
                    if (c < end) acc[j] = cmb_add(acc[j], cmb_mul(wk, (double)row[c]));
                }
            }
#pragma unroll
            for (int j = 0; j < CMB_COLS; ++j) {
                const i64 c = base + (i64)j * CMB_THREADS;
                if (c < end) out[c] = (float)acc[j];
            }
        }
        start = end;
        ++s;
    }
}
