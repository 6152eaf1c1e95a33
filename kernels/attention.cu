// Scaled dot-product attention helpers (scaling, masking) around the batched GEMMs (CUDA twin of crates/kernels/src/cpu/attention.rs).
#include "common.cuh"
