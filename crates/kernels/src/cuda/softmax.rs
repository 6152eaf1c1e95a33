//! CUDA softmax over the last axis, forward and backward (kernels/softmax.cu).
