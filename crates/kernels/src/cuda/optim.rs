//! CUDA fused optimizer updates (SGD with momentum, AdamW) (kernels/optim.cu).
