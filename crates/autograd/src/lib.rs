//! scalarize-autograd: `Tensor`, `Device` and a small tape-based reverse-mode autodiff.
//!
//! **Tensors.** A [`Tensor`] is a contiguous row-major f32 array with a shape, its values in a
//! shared, device-tagged [`Storage`] (only the CPU today), so cloning is cheap. Every op in
//! [`ops`] computes its forward with a kernel from `scalarize_kernels::cpu`; autograd itself
//! does no arithmetic beyond moving data.
//!
//! **The tape.** When an op has at least one *tracked* input (a parameter leaf, a tensor made
//! with [`Tensor::requires_grad`], or the output of another recorded op) and recording is on,
//! it attaches a node to its output: the op's name, the nodes of its inputs, and a
//! hand-written backward closure holding what it saved (inputs, statistics, argmax, ...).
//! Node ids come from one atomic counter, and a node is always created after its inputs, so
//! the nodes reachable from the roots, sorted newest first, are the tape in reverse. There is
//! no global tape and no lock: each thread (each model of a PBT population) builds its own
//! graphs, and tensors are `Send + Sync`.
//!
//! **Backward.** [`Backward`] seeds cotangents at one or more roots, walks the reachable
//! nodes newest first, calls each backward closure with the accumulated output gradient, and
//! sums the input gradients by node id. It reports gradients for leaves plus any
//! intermediates asked for ([`Backward::retain`], [`Backward::stop_at`]: the shared
//! representation of a multi-task model). It only reads the graph, so one forward serves T
//! per-task backward passes. [`Tensor::backward`] is the one-root, scalar-loss shortcut.
//!
//! **Parameters and modes.** A [`ParamStore`] holds a model's parameters (tracked leaves) and
//! buffers (e.g. BatchNorm running statistics) by PyTorch-style name in insertion order;
//! gradients are read back by name, and values are updated in place (copy on write if a live
//! graph still shares them). While a [`NoGradGuard`] from [`no_grad()`] lives, nothing is
//! recorded on that thread (evaluation).
//!
//! ```
//! use scalarize_autograd::{ParamStore, Tensor, no_grad};
//!
//! let mut store = ParamStore::new();
//! store.add_parameter("heads.0.weight", Tensor::new(vec![0.1, -0.2, 0.3, 0.4], &[2, 2])?)?;
//! store.add_parameter("heads.0.bias", Tensor::zeros(&[2])?)?;
//! let x = Tensor::new(vec![1.0, 2.0, -1.0, 0.5], &[2, 2])?;
//! let forward = |s: &ParamStore| -> scalarize_autograd::Result<Tensor> {
//!     let (w, b) = (s.get("heads.0.weight")?, s.get("heads.0.bias")?);
//!     x.linear(w, Some(b))?.cross_entropy(&[0, 1], -100)
//! };
//! let loss = forward(&store)?;
//! let grads = loss.backward()?;
//! for name in ["heads.0.weight", "heads.0.bias"] {
//!     let g = store.grad(&grads, name)?.expect("reached").to_vec();
//!     for (v, d) in store.values_mut(name)?.iter_mut().zip(g) {
//!         *v -= 0.1 * d; // plain SGD
//!     }
//! }
//! let _eval = no_grad();
//! assert!(forward(&store)?.item()? < loss.item()?);
//! # Ok::<(), scalarize_autograd::AutogradError>(())
//! ```

#![warn(missing_docs)]

pub mod backward;
pub mod device;
pub mod error;
pub(crate) mod gpu;
pub mod no_grad;
pub mod node;
pub mod ops;
pub mod params;
pub mod pool;
pub mod storage;
pub mod tensor;

pub use backward::{Backward, Gradients, backward_from};
pub use device::Device;
pub use error::{AutogradError, Result};
pub use no_grad::{NoGradGuard, is_grad_enabled, no_grad};
pub use node::NodeId;
pub use ops::batch_norm::{BatchNormMode, BnEpilogue};
pub use params::{Entry, EntryKind, ParamStore};
pub use scalarize_kernels::cpu::{TaskLayout, WeightedLossOutput};
pub use storage::{CudaStorage, Storage};
pub use tensor::{Tensor, cuda_device};
