//! CUDA elementwise arithmetic and bias broadcasts (kernels/elementwise.cu).
