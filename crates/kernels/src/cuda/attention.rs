//! CUDA scaled dot-product attention helpers (scaling, masking) around the batched GEMMs (kernels/attention.cu).
