//! CUDA sums and means, whole and along an axis (kernels/reduce.cu).
