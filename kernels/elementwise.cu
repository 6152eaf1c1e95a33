// Elementwise arithmetic and bias broadcasts (CUDA twin of crates/kernels/src/cpu/elementwise.rs).
#include "common.cuh"
