//! CUDA weighted combination of T per-task gradient rows (kernels/combine.cu).
