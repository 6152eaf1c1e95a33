//! CUDA softmax cross-entropy and BCE with logits (kernels/cross_entropy.cu).
