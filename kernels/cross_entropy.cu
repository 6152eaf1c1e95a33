// Softmax cross-entropy and BCE with logits (CUDA twin of crates/kernels/src/cpu/cross_entropy.rs).
#include "common.cuh"
