// Average, max and global-average pooling (CUDA twin of crates/kernels/src/cpu/pool.rs).
#include "common.cuh"
