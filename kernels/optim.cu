// Fused optimizer updates (SGD with momentum, AdamW) (CUDA twin of crates/kernels/src/cpu/optim.rs).
#include "common.cuh"
