//! The parameter store: named parameters and buffers in a stable (insertion) order.

use std::collections::HashMap;

use crate::backward::Gradients;
use crate::error::{AutogradError, Result};
use crate::tensor::Tensor;

/// What a store entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A learnable tensor; gradients are reported for it while it is trainable.
    Parameter,
    /// A non-learnable tensor saved with the model (e.g. BatchNorm running statistics).
    Buffer,
}

/// One named tensor of a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct Entry {
    name: String,
    kind: EntryKind,
    trainable: bool,
    tensor: Tensor,
}

impl Entry {
    /// The full name, e.g. `backbone.layer1.0.conv1.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parameter or buffer.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// True for parameters that currently receive gradients.
    pub fn trainable(&self) -> bool {
        self.trainable
    }

    /// The tensor (a tracked leaf for trainable parameters).
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// Named parameters and buffers of one model, in insertion order (the order checkpoints,
/// flat gradient vectors and optimizers use). Each model owns its store, so models on
/// different threads never share one.
#[derive(Debug, Default)]
pub struct ParamStore {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

/// A clone shares the values (copy on write) but gets fresh leaves, so the two models'
/// parameters are distinct on any tape (e.g. a PBT member copied from another).
impl Clone for ParamStore {
    fn clone(&self) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|e| Entry {
                tensor: if e.trainable {
                    e.tensor.requires_grad()
                } else {
                    e.tensor.clone()
                },
                ..e.clone()
            })
            .collect();
        Self {
            entries,
            index: self.index.clone(),
        }
    }
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, name: &str, kind: EntryKind, tensor: Tensor) -> Result<usize> {
        if name.is_empty() {
            return Err(AutogradError::Param("empty name".into()));
        }
        if self.index.contains_key(name) {
            return Err(AutogradError::Param(format!("`{name}` is already defined")));
        }
        let trainable = kind == EntryKind::Parameter;
        let tensor = if trainable {
            tensor.requires_grad()
        } else {
            tensor.detach()
        };
        self.index.insert(name.to_string(), self.entries.len());
        self.entries.push(Entry {
            name: name.to_string(),
            kind,
            trainable,
            tensor,
        });
        Ok(self.entries.len() - 1)
    }

    /// Adds a trainable parameter holding `init`'s values; returns the tracked leaf to use in
    /// forward passes (the same as [`ParamStore::get`] returns later).
    pub fn add_parameter(&mut self, name: &str, init: Tensor) -> Result<Tensor> {
        let i = self.insert(name, EntryKind::Parameter, init)?;
        Ok(self.entries[i].tensor.clone())
    }

    /// Adds a non-trainable buffer (never tracked).
    pub fn add_buffer(&mut self, name: &str, init: Tensor) -> Result<()> {
        self.insert(name, EntryKind::Buffer, init).map(|_| ())
    }

    fn position(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| AutogradError::Param(format!("no parameter or buffer named `{name}`")))
    }

    /// True when `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Result<&Entry> {
        Ok(&self.entries[self.position(name)?])
    }

    /// The tensor called `name` (tracked for trainable parameters); clone it to use it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        Ok(&self.entries[self.position(name)?].tensor)
    }

    /// Number of entries (parameters and buffers).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is defined.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Parameters (trainable or frozen) in insertion order.
    pub fn parameters(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Parameter)
    }

    /// Trainable parameters in insertion order: the layout of flat gradient vectors.
    pub fn trainable(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.trainable)
    }

    /// Buffers in insertion order.
    pub fn buffers(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.kind == EntryKind::Buffer)
    }

    /// Total element count of the trainable parameters.
    pub fn num_trainable_elements(&self) -> usize {
        self.trainable().map(|e| e.tensor.numel()).sum()
    }

    /// Freezes or unfreezes a parameter. Unfreezing creates a new leaf: tensors fetched
    /// earlier keep their old identity.
    pub fn set_trainable(&mut self, name: &str, trainable: bool) -> Result<()> {
        let i = self.position(name)?;
        let e = &mut self.entries[i];
        if e.kind == EntryKind::Buffer && trainable {
            return Err(AutogradError::Param(format!(
                "`{name}` is a buffer and cannot be trained"
            )));
        }
        if e.trainable != trainable {
            e.trainable = trainable;
            e.tensor = if trainable {
                e.tensor.requires_grad()
            } else {
                e.tensor.detach()
            };
        }
        Ok(())
    }

    /// The values of `name`.
    pub fn values(&self, name: &str) -> Result<&[f32]> {
        self.get(name)?.as_slice()
    }

    /// Mutable values of `name`, for optimizers and running statistics. The tape identity is
    /// kept; if a live graph still shares the buffer it is copied first, so that graph keeps
    /// the values it was computed with.
    pub fn values_mut(&mut self, name: &str) -> Result<&mut [f32]> {
        let i = self.position(name)?;
        self.entries[i].tensor.values_mut()
    }

    /// Two different entries' values at once (e.g. `running_mean` and `running_var`).
    pub fn values_mut_pair(&mut self, a: &str, b: &str) -> Result<(&mut [f32], &mut [f32])> {
        let (i, j) = (self.position(a)?, self.position(b)?);
        match self.entries.get_disjoint_mut([i, j]) {
            Ok([ea, eb]) => Ok((ea.tensor.values_mut()?, eb.tensor.values_mut()?)),
            Err(_) => Err(AutogradError::Param(format!(
                "values_mut_pair needs two different names, got `{a}` twice"
            ))),
        }
    }

    /// Puts `tensor` (same shape) in place of the untracked entry `name`: how values
    /// computed on a device into a fresh buffer (e.g. running statistics) are stored. A live
    /// graph still sharing the old values keeps them, as with [`ParamStore::values_mut`].
    pub(crate) fn replace_untracked(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        let i = self.position(name)?;
        let e = &mut self.entries[i];
        if e.trainable {
            return Err(AutogradError::Param(format!(
                "`{name}` is a trainable parameter: its leaf must keep its identity"
            )));
        }
        if e.tensor.shape() != tensor.shape() {
            return Err(AutogradError::Param(format!(
                "`{name}` has shape {:?}, {:?} given",
                e.tensor.shape(),
                tensor.shape()
            )));
        }
        e.tensor = tensor.detach();
        Ok(())
    }

    /// Overwrites the values of `name` (same element count), on whichever device they live.
    /// A BN running variance (`*.running_var`) must be non-negative: the device's eval batch
    /// norm does not read its variances back to check them, so loaded ones are checked here,
    /// where they enter.
    pub fn set_values(&mut self, name: &str, values: &[f32]) -> Result<()> {
        if name.ends_with(".running_var")
            && let Some(k) = values.iter().position(|v| v.is_nan() || *v < 0.0)
        {
            return Err(AutogradError::Param(format!(
                "`{name}`[{k}] = {} is not a variance (negative or NaN)",
                values[k]
            )));
        }
        let i = self.position(name)?;
        if self.entries[i].tensor.cuda().is_some() {
            let c = self.entries[i].tensor.cuda_mut()?;
            if c.buf.len() != values.len() {
                return Err(AutogradError::Param(format!(
                    "`{name}` has {} elements, {} given",
                    c.buf.len(),
                    values.len()
                )));
            }
            c.gpu.write(values, &mut c.buf)?;
            return Ok(());
        }
        let dst = self.values_mut(name)?;
        if dst.len() != values.len() {
            return Err(AutogradError::Param(format!(
                "`{name}` has {} elements, {} given",
                dst.len(),
                values.len()
            )));
        }
        dst.copy_from_slice(values);
        Ok(())
    }

    /// The gradient of parameter `name` in `grads` (`None`: backward did not reach it, zero).
    pub fn grad<'g>(&self, grads: &'g Gradients, name: &str) -> Result<Option<&'g Tensor>> {
        Ok(grads.get(self.get(name)?))
    }

    /// All trainable parameters' gradients concatenated in store order (zeros where backward
    /// did not reach), the P-vector of one task for gradient-based MTO methods.
    /// Device gradients are read back (see [`Tensor::to_vec`]).
    pub fn flat_grads(&self, grads: &Gradients) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.num_trainable_elements());
        for e in self.trainable() {
            match grads.get(&e.tensor) {
                Some(g) => out.extend_from_slice(&g.to_vec()),
                None => out.resize(out.len() + e.tensor.numel(), 0.0),
            }
        }
        out
    }

    /// All trainable parameters' values concatenated in store order.
    /// Device values are read back (see [`Tensor::to_vec`]).
    pub fn flat_values(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.num_trainable_elements());
        for e in self.trainable() {
            out.extend_from_slice(&e.tensor.to_vec());
        }
        out
    }

    /// Overwrites all trainable parameters from one flat vector in store order.
    pub fn set_flat_values(&mut self, flat: &[f32]) -> Result<()> {
        let expected = self.num_trainable_elements();
        if flat.len() != expected {
            return Err(AutogradError::Param(format!(
                "flat vector has {} elements, the trainable parameters have {expected}",
                flat.len()
            )));
        }
        let mut offset = 0;
        for e in self.entries.iter_mut().filter(|e| e.trainable) {
            let dst = e.tensor.values_mut()?;
            dst.copy_from_slice(&flat[offset..offset + dst.len()]);
            offset += dst.len();
        }
        Ok(())
    }
}

/// Devices: a store lives on one device; parameters stay tracked leaves when moved.
impl ParamStore {
    /// The device of the entries (the CPU for an empty store).
    pub fn device(&self) -> crate::device::Device {
        self.entries
            .first()
            .map_or(crate::device::Device::Cpu, |e| e.tensor.device())
    }

    /// Moves every parameter and buffer to `device` (see [`Tensor::to_device`]); the new
    /// parameter leaves are what [`ParamStore::get`] returns from now on.
    pub fn to_device(&mut self, device: crate::device::Device) -> Result<()> {
        match device {
            crate::device::Device::Cpu => self.move_entries(Tensor::to_cpu),
            crate::device::Device::Cuda(i) => self.to_gpu(&crate::tensor::cuda_device(i)?),
        }
    }

    /// Moves every entry to the device of `gpu` (that handle, e.g. one stream of a PBT member).
    pub fn to_gpu(&mut self, gpu: &std::sync::Arc<scalarize_kernels::cuda::Gpu>) -> Result<()> {
        self.move_entries(|t| t.to_gpu(gpu))
    }

    /// Replaces every entry by `to(entry)`; parameters become fresh tracked leaves.
    fn move_entries(&mut self, to: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        for e in &mut self.entries {
            let t = to(&e.tensor)?;
            e.tensor = if e.trainable { t.requires_grad() } else { t };
        }
        Ok(())
    }

    /// The device values of entry `name` for an in-place update (copied first if a live
    /// graph still shares them); an error for a host entry.
    pub fn cuda_mut(&mut self, name: &str) -> Result<&mut crate::storage::CudaStorage> {
        let i = self.position(name)?;
        self.entries[i].tensor.cuda_mut()
    }
}
