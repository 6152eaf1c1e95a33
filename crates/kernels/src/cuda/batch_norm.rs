//! CUDA batch norm (training statistics, running statistics, eval; fused ReLU / residual epilogues) (kernels/batch_norm.cu).
