// Softmax over the last axis, forward and backward (CUDA twin of crates/kernels/src/cpu/softmax.rs).
#include "common.cuh"
