// Bilinear and nearest 2-D upsampling (CUDA twin of crates/kernels/src/cpu/upsample.rs).
#include "common.cuh"
