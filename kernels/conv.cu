// 2-D convolution: im2col / col2im around the GEMMs (CUDA twin of crates/kernels/src/cpu/conv.rs).
#include "common.cuh"
