//! scalarize-autograd: Tensor, Device and a small tape-based reverse-mode autodiff.
