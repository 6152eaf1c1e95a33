// Weighted combination of T per-task gradient rows (CUDA twin of crates/kernels/src/cpu/combine.rs).
#include "common.cuh"
