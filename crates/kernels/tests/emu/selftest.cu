// Kernels that check the CUDA emulator itself (crates/kernels/tests/cuda_emulator.rs): some
// correct, some with the bugs the emulator must catch.
#include "common.cuh"

// Tree sum of 256 floats per block into out[blockIdx.x].
extern "C" __global__ void st_block_sum(const float* x, float* out) {
    __shared__ float sh[256];
    const int t = threadIdx.x;
    sh[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = sh[0];
}

// The same without the barrier inside the tree: a race the emulator must expose.
extern "C" __global__ void st_block_sum_racy(const float* x, float* out) {
    __shared__ float sh[256];
    const int t = threadIdx.x;
    sh[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
    }
    if (t == 0) out[blockIdx.x] = sh[0];
}

// Writes one element past the end of out (n elements).
extern "C" __global__ void st_oob_write(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;
}

// Every warp collective, 8 results per lane of one warp.
extern "C" __global__ void st_shuffles(int* out) {
    const int l = threadIdx.x;
    const unsigned all = 0xffffffffu;
    int* o = out + l * 8;
    o[0] = __shfl_xor_sync(all, l, 5);
    o[1] = __shfl_down_sync(all, l * 10, 3);
    o[2] = __shfl_up_sync(all, l, 2);
    o[3] = __shfl_sync(all, l * 3, 31 - l);
    o[4] = (int)__ballot_sync(all, l % 3 == 0);
    o[5] = __any_sync(all, l == 7) + 2 * __all_sync(all, l < 31);
    o[6] = __shfl_down_sync(all, l, 3, 8);
    o[7] = (int)__shfl_xor_sync(all, (double)l * 0.5, 16) * 2;
}

// Lane 0 exits, the others reduce over the full warp: undefined on a GPU, an error here.
extern "C" __global__ void st_exited_lane(float* out) {
    if (threadIdx.x == 0) return;
    out[threadIdx.x] = warp_sum(1.0f);
}

// Each thread changes its own copy of the parameter.
extern "C" __global__ void st_params(int n, int* out) {
    n += threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = n;
}

// 2-D grid of 2-D blocks: each thread writes its coordinates at its global position.
extern "C" __global__ void st_indices(int* out) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int width = gridDim.x * blockDim.x;
    out[y * width + x] = blockIdx.x * 1000 + blockIdx.y * 100 + threadIdx.x * 10 + threadIdx.y;
}

// Reverses each block's chunk through dynamic shared memory.
extern "C" __global__ void st_dynamic_shared(const float* x, float* out) {
    DYNAMIC_SHARED(float, sh);
    const int t = threadIdx.x, n = blockDim.x;
    sh[t] = x[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = sh[n - 1 - t];
}
