// Layer norm, forward and backward (CUDA twin of crates/kernels/src/cpu/layer_norm.rs).
#include "common.cuh"
