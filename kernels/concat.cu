// Concatenation and split along an axis (CUDA twin of crates/kernels/src/cpu/concat.rs).
#include "common.cuh"
