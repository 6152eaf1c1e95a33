//! Reverse sweep: walk the recorded nodes newest first and accumulate gradients by node id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use scalarize_kernels::{cpu, cuda};

use crate::error::{AutogradError, Result};
use crate::node::{BackwardFn, Node, NodeId};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// Gradients produced by one backward sweep, keyed by node id: every reached leaf plus the
/// intermediates that were asked for with [`Backward::retain`] or [`Backward::stop_at`].
#[derive(Clone, Debug, Default)]
pub struct Gradients {
    grads: HashMap<NodeId, Tensor>,
}

impl Gradients {
    /// The gradient with respect to `t`, if backward reached it (absent means zero).
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        t.id().and_then(|id| self.grads.get(&id))
    }

    /// The gradient for a node id.
    pub fn get_by_id(&self, id: NodeId) -> Option<&Tensor> {
        self.grads.get(&id)
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when backward reached no leaf.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// A backward sweep from one or more roots with given cotangents. It reads the recorded graph
/// and never changes it, so one forward serves any number of sweeps (one per task, say).
#[derive(Default)]
pub struct Backward<'a> {
    roots: Vec<(&'a Tensor, &'a Tensor)>,
    retain: HashSet<NodeId>,
    stop: HashSet<NodeId>,
    untracked: Vec<&'static str>,
}

impl<'a> Backward<'a> {
    /// An empty sweep; add roots with [`Backward::root`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root `output` whose incoming gradient is `cotangent` (same shape). Several roots
    /// are summed: the result is the gradient of Σ_r <cotangent_r, output_r>.
    pub fn root(mut self, output: &'a Tensor, cotangent: &'a Tensor) -> Self {
        self.roots.push((output, cotangent));
        self
    }

    /// Also report the gradient at the intermediate `t` (e.g. a shared representation).
    pub fn retain(mut self, t: &Tensor) -> Self {
        match t.id() {
            Some(id) => {
                self.retain.insert(id);
            }
            None => self.untracked.push("retain"),
        }
        self
    }

    /// Report the gradient at `t` and propagate no further (its producers get nothing from
    /// this sweep); cheap per-task gradients at a shared representation.
    pub fn stop_at(mut self, t: &Tensor) -> Self {
        match t.id() {
            Some(id) => {
                self.retain.insert(id);
                self.stop.insert(id);
            }
            None => self.untracked.push("stop_at"),
        }
        self
    }

    /// Runs the sweep.
    pub fn run(&self) -> Result<Gradients> {
        if let Some(what) = self.untracked.first() {
            return Err(AutogradError::Backward(format!(
                "`{what}` was given a tensor that is not on the tape (untracked or made under no_grad)"
            )));
        }
        if self.roots.is_empty() {
            return Err(AutogradError::Backward("no root given".into()));
        }
        let mut pending: HashMap<NodeId, Storage> = HashMap::new();
        let mut starts: Vec<Arc<Node>> = Vec::new();
        for (i, (out, cot)) in self.roots.iter().enumerate() {
            let node = out.node().ok_or_else(|| {
                AutogradError::Backward(format!(
                    "root {i} (shape {:?}) is not tracked: it depends on no parameter or was computed under no_grad",
                    out.shape()
                ))
            })?;
            if cot.shape() != out.shape() {
                return Err(AutogradError::Backward(format!(
                    "root {i}: cotangent shape {:?} does not match output shape {:?}",
                    cot.shape(),
                    out.shape()
                )));
            }
            if cot.device() != out.device() {
                return Err(AutogradError::Backward(format!(
                    "root {i}: cotangent on {} but output on {}",
                    cot.device(),
                    out.device()
                )));
            }
            accumulate(&mut pending, node.id, copy_of(cot)?)?;
            starts.push(Arc::clone(node));
        }
        let order = self.reverse_order(starts);
        let mut grads = HashMap::new();
        for node in order {
            let Some(g) = pending.remove(&node.id) else {
                continue;
            };
            let Some(backward) = &node.backward else {
                grads.insert(node.id, Tensor::from_storage(g, node.shape.clone()));
                continue;
            };
            if self.retain.contains(&node.id) {
                let copy = Tensor::from_storage(g, node.shape.clone());
                let g = copy_of(&copy)?;
                grads.insert(node.id, copy);
                if self.stop.contains(&node.id) {
                    continue;
                }
                run_node(&node, backward, g, &mut pending)?;
                continue;
            }
            if self.stop.contains(&node.id) {
                continue;
            }
            run_node(&node, backward, g, &mut pending)?;
        }
        Ok(Gradients { grads })
    }

    /// Every node reachable from `starts` (not below stop nodes), newest first. Inputs are
    /// always older than the ops using them, so this is a valid reverse topological order.
    fn reverse_order(&self, starts: Vec<Arc<Node>>) -> Vec<Arc<Node>> {
        let mut seen: HashSet<NodeId> = HashSet::new();
        let mut stack = starts;
        let mut order = Vec::new();
        while let Some(node) = stack.pop() {
            if !seen.insert(node.id) {
                continue;
            }
            if !self.stop.contains(&node.id) {
                stack.extend(node.inputs.iter().flatten().cloned());
            }
            order.push(node);
        }
        order.sort_unstable_by_key(|n| std::cmp::Reverse(n.id));
        order
    }
}

/// Calls one node's backward with its accumulated output gradient `g` and adds the input
/// gradients to `pending`.
fn run_node(
    node: &Node,
    backward: &BackwardFn,
    g: Storage,
    pending: &mut HashMap<NodeId, Storage>,
) -> Result<()> {
    let needs: Vec<bool> = node.inputs.iter().map(Option::is_some).collect();
    let input_grads = backward(&g, &needs)?;
    drop(g);
    for (input, ig) in node.inputs.iter().zip(input_grads) {
        if let (Some(input), Some(ig)) = (input, ig) {
            let expected: usize = input.shape.iter().product();
            if ig.len() != expected {
                return Err(AutogradError::Backward(format!(
                    "internal: backward of `{}` returned {} gradient values for an input of shape {:?}",
                    node.op,
                    ig.len(),
                    input.shape
                )));
            }
            accumulate(pending, input.id, ig)?;
        }
    }
    Ok(())
}

/// A private copy of a tensor's values, on its device.
fn copy_of(t: &Tensor) -> Result<Storage> {
    Ok(match t.storage() {
        Storage::Cpu(v) => Storage::Cpu(v.clone()),
        Storage::Cuda(c) => crate::gpu::grad(&c.gpu, crate::gpu::copy(&c.gpu, &c.buf)?),
    })
}

/// Adds `g` to the gradient pending for `id` (or makes it the pending gradient).
fn accumulate(pending: &mut HashMap<NodeId, Storage>, id: NodeId, g: Storage) -> Result<()> {
    match pending.get_mut(&id) {
        Some(acc) => match (acc, &g) {
            (Storage::Cpu(acc), Storage::Cpu(v)) => cpu::axpy_acc(1.0, v, acc)?,
            (Storage::Cuda(acc), Storage::Cuda(v)) => {
                cuda::elementwise::axpy_acc(&acc.gpu, 1.0, &v.buf, &mut acc.buf)?
            }
            (acc, _) => {
                return Err(AutogradError::Backward(format!(
                    "gradients of one value arrived on {} and {}",
                    acc.device(),
                    g.device()
                )));
            }
        },
        None => {
            pending.insert(id, g);
        }
    }
    Ok(())
}

/// Backward from several roots with given cotangents (see [`Backward`] for more options).
pub fn backward_from(roots: &[(&Tensor, &Tensor)]) -> Result<Gradients> {
    let mut b = Backward::new();
    for (out, cot) in roots {
        b = b.root(out, cot);
    }
    b.run()
}

impl Tensor {
    /// Backward from this one-element tensor (a loss) with cotangent 1.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(AutogradError::Backward(format!(
                "backward() needs a one-element loss, got shape {:?}; use backward_with to give a cotangent",
                self.shape()
            )));
        }
        let one = match self.cuda() {
            // A device copy of the handle's constant 1 (uploaded once), not an upload per step.
            Some(c) => {
                let ones = c.gpu.constant("ones", &[1], || vec![1.0f32])?;
                crate::gpu::tensor(
                    &c.gpu,
                    crate::gpu::copy(&c.gpu, &ones)?,
                    self.shape().to_vec(),
                )
            }
            None => Tensor::from_parts(vec![1.0], self.shape().to_vec()),
        };
        Backward::new().root(self, &one).run()
    }

    /// Backward from this tensor with the given cotangent (same shape).
    pub fn backward_with(&self, cotangent: &Tensor) -> Result<Gradients> {
        Backward::new().root(self, cotangent).run()
    }
}
