//! CUDA layer norm, forward and backward (kernels/layer_norm.cu).
