//! CUDA average, max and global-average pooling (kernels/pool.cu).
