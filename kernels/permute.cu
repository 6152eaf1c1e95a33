// Axis permutations and 2-D transposes (CUDA twin of crates/kernels/src/cpu/permute.rs).
#include "common.cuh"
