// ReLU and GELU, forward and backward (CUDA twin of crates/kernels/src/cpu/activation.rs).
#include "common.cuh"
