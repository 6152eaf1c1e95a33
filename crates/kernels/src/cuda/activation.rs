//! CUDA ReLU and GELU, forward and backward (kernels/activation.cu).
