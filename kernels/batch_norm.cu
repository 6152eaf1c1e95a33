// Batch norm (training statistics, running statistics, eval; fused ReLU / residual epilogues) (CUDA twin of crates/kernels/src/cpu/batch_norm.rs).
#include "common.cuh"
