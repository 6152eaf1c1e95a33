//! CUDA 2-D convolution: im2col / col2im around the GEMMs (kernels/conv.cu).
