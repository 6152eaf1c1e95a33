//! CUDA concatenation and split along an axis (kernels/concat.cu).
