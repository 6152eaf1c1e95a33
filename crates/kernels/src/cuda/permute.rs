//! CUDA axis permutations and 2-D transposes (kernels/permute.cu).
