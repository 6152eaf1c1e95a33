// Sums and means, whole and along an axis (CUDA twin of crates/kernels/src/cpu/reduce.rs).
#include "common.cuh"
