//! CUDA bilinear and nearest 2-D upsampling (kernels/upsample.cu).
