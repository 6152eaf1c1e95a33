//! Graph nodes: what an op records so that backward can run later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::no_grad::is_grad_enabled;
use crate::storage::Storage;
use crate::tensor::{Tensor, on_device};

/// A hand-written backward on host buffers: given the output cotangent `dy` and, per input,
/// whether that input needs a gradient, returns one gradient buffer per input (`None` where not
/// needed).
pub(crate) type CpuBackwardFn =
    Box<dyn Fn(&[f32], &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + Sync>;

/// A backward on any device: the cotangent and the gradients are storages of the op's device.
pub(crate) type BackwardFn =
    Box<dyn Fn(&Storage, &[bool]) -> Result<Vec<Option<Storage>>> + Send + Sync>;

/// Identifies one recorded value (a parameter leaf or an op output); ids grow in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u64);

/// One entry of the tape: an op output (or a leaf) and how to push its gradient to its inputs.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) op: &'static str,
    pub(crate) shape: Vec<usize>,
    /// One slot per op input; `None` for inputs that need no gradient.
    pub(crate) inputs: Vec<Option<Arc<Node>>>,
    /// `None` for leaves (parameters and other tensors that asked for a gradient).
    pub(crate) backward: Option<BackwardFn>,
}

/// Process-wide id source; an op's node is always created after its inputs' nodes, so sorting
/// by id gives execution order even when several threads record at once.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> NodeId {
    NodeId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A fresh leaf node for a tensor of `shape`.
pub(crate) fn leaf(shape: &[usize]) -> Arc<Node> {
    Arc::new(Node {
        id: next_id(),
        op: "leaf",
        shape: shape.to_vec(),
        inputs: Vec::new(),
        backward: None,
    })
}

/// Records a host-only op (see [`attach_any`]); its backward refuses a device cotangent.
pub(crate) fn attach(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: CpuBackwardFn,
) -> Tensor {
    attach_any(
        op,
        out,
        inputs,
        Box::new(move |dy, needs| match dy {
            Storage::Cpu(v) => Ok(backward(v, needs)?
                .into_iter()
                .map(|g| g.map(Storage::Cpu))
                .collect()),
            Storage::Cuda(_) => Err(on_device(dy.device())),
        }),
    )
}

/// Records `op` on the tape when gradients are enabled and any input is tracked; otherwise
/// returns `out` untouched (the backward closure is dropped unused).
pub(crate) fn attach_any(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: BackwardFn,
) -> Tensor {
    if !is_grad_enabled() || inputs.iter().all(|t| t.node().is_none()) {
        return out;
    }
    let node = Arc::new(Node {
        id: next_id(),
        op,
        shape: out.shape().to_vec(),
        inputs: inputs.iter().map(|t| t.node().cloned()).collect(),
        backward: Some(backward),
    });
    out.with_node(node)
}

/// Drops a long chain of nodes iteratively: the default recursive drop would overflow the
/// stack on graphs with very many sequential ops.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = self.inputs.drain(..).flatten().collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut owned) = Arc::try_unwrap(node) {
                stack.extend(owned.inputs.drain(..).flatten());
            }
        }
    }
}
