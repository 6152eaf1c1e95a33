//! `Tensor`: shared f32 storage, a shape, and (when tracked) its node on the tape.

use std::fmt;
use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use crate::device::Device;
use crate::error::{AutogradError, Result, invalid};
use crate::node::{Node, NodeId, leaf};
use crate::storage::{CudaStorage, Storage};

/// A contiguous row-major f32 array with a shape. Cloning is cheap (the storage is shared).
///
/// A tensor is *tracked* when it carries a tape node: parameter leaves, tensors made with
/// [`Tensor::requires_grad`], and outputs of ops recorded with at least one tracked input.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    node: Option<Arc<Node>>,
}

/// Checks a shape for zero-sized dimensions and returns its element count.
pub(crate) fn numel_of(op: &'static str, shape: &[usize]) -> Result<usize> {
    if shape.contains(&0) {
        return Err(invalid(
            op,
            format!("empty tensor of shape {shape:?}: every dimension must be at least 1"),
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            invalid(
                op,
                format!("shape {shape:?} has more elements than fit in memory"),
            )
        })
}

impl Tensor {
    /// Builds an untracked CPU tensor from `values` laid out row-major in `shape`.
    pub fn new(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = numel_of("tensor", shape)?;
        if values.len() != n {
            return Err(invalid(
                "tensor",
                format!(
                    "{} values given for shape {shape:?}, expected {n}",
                    values.len()
                ),
            ));
        }
        Ok(Tensor::from_parts(values, shape.to_vec()))
    }

    /// Builds an untracked CPU tensor by copying `values`.
    pub fn from_slice(values: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::new(values.to_vec(), shape)
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Result<Tensor> {
        let n = numel_of("tensor", shape)?;
        Ok(Tensor::from_parts(vec![value; n], shape.to_vec()))
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of `shape` filled with zeros on the device (and handle) of `like`: on a GPU
    /// the zeros are set there, with no host copy to upload (e.g. in every training step).
    pub fn zeros_like_device(shape: &[usize], like: &Tensor) -> Result<Tensor> {
        let n = numel_of("tensor", shape)?;
        match like.cuda() {
            Some(c) => Ok(Tensor::from_cuda(
                c.gpu.clone(),
                c.gpu.zeros::<f32>(n)?,
                shape.to_vec(),
            )),
            None => Tensor::zeros(shape),
        }
    }

    /// A tensor of `shape` filled with ones.
    pub fn ones(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 1.0)
    }

    /// A rank-0 tensor holding `value`.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_parts(vec![value], Vec::new())
    }

    /// Internal constructor; the caller guarantees `values.len() == product(shape)`.
    pub(crate) fn from_parts(values: Vec<f32>, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Tensor {
            storage: Arc::new(Storage::Cpu(values)),
            shape,
            node: None,
        }
    }

    /// Internal constructor for device values; the caller guarantees the length.
    pub(crate) fn from_cuda(gpu: Arc<Gpu>, buf: GpuBuffer<f32>, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(buf.len(), shape.iter().product::<usize>());
        Tensor {
            storage: Arc::new(Storage::Cuda(CudaStorage { gpu, buf })),
            shape,
            node: None,
        }
    }

    /// Internal constructor from a storage of any device; the caller guarantees the length.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        Tensor {
            storage: Arc::new(storage),
            shape,
            node: None,
        }
    }

    /// These values on the device (and handle) of `like` (shared if already there).
    pub fn to_device_like(&self, like: &Tensor) -> Result<Tensor> {
        match like.cuda() {
            Some(c) => self.to_gpu(&c.gpu),
            None => self.to_cpu(),
        }
    }

    /// Same storage, another shape of equal element count, no node (the caller attaches one).
    pub(crate) fn view_untracked(&self, shape: Vec<usize>) -> Tensor {
        Tensor {
            storage: Arc::clone(&self.storage),
            shape,
            node: None,
        }
    }

    pub(crate) fn with_node(mut self, node: Arc<Node>) -> Tensor {
        self.node = Some(node);
        self
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// The host values; every CPU op reads its inputs through this. A tensor on a device is
    /// an error here: the op that asked has no device implementation.
    pub(crate) fn values(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(v) => Ok(v),
            Storage::Cuda(_) => Err(on_device(self.device())),
        }
    }

    /// The device values, when the tensor lives on a GPU (or the emulator).
    pub fn cuda(&self) -> Option<&CudaStorage> {
        match &*self.storage {
            Storage::Cuda(c) => Some(c),
            Storage::Cpu(_) => None,
        }
    }

    /// The storage.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Mutable host values, copied first if the storage is shared (copy on write).
    pub(crate) fn values_mut(&mut self) -> Result<&mut [f32]> {
        if Arc::get_mut(&mut self.storage).is_none() {
            let copy = self.values()?.to_vec();
            self.storage = Arc::new(Storage::Cpu(copy));
        }
        let device = self.device();
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Cpu(v)) => Ok(v),
            _ => Err(on_device(device)),
        }
    }

    /// The device values for an in-place update, copied first if the storage is shared
    /// (copy on write, as [`Tensor::values_mut`] does on the host).
    pub(crate) fn cuda_mut(&mut self) -> Result<&mut CudaStorage> {
        let device = self.device();
        if Arc::get_mut(&mut self.storage).is_none() {
            let c = self.cuda().ok_or_else(|| {
                AutogradError::Device(format!("expected a CUDA tensor, got {device}"))
            })?;
            let buf = crate::gpu::copy(&c.gpu, &c.buf)?;
            let gpu = c.gpu.clone();
            self.storage = Arc::new(Storage::Cuda(CudaStorage { gpu, buf }));
        }
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Cuda(c)) => Ok(c),
            _ => Err(AutogradError::Device(format!(
                "expected a CUDA tensor, got {device}"
            ))),
        }
    }

    /// The same values on `device` (a copy unless already there). `Device::Cuda(i)` opens
    /// device i, or the CPU emulator when `SCALARIZE_CUDA_EMULATOR=1`.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => self.to_cpu(),
            Device::Cuda(i) => self.to_gpu(&cuda_device(i)?),
        }
    }

    /// The same values in device memory of `gpu` (shared if already there).
    pub fn to_gpu(&self, gpu: &Arc<Gpu>) -> Result<Tensor> {
        if let Some(c) = self.cuda()
            && Arc::ptr_eq(&c.gpu, gpu)
        {
            return Ok(self.detach());
        }
        let host = self.to_host()?;
        let buf = gpu.upload(&host)?;
        Ok(Tensor::from_cuda(gpu.clone(), buf, self.shape.clone()))
    }

    /// The same values in host memory (shared if already there).
    pub fn to_cpu(&self) -> Result<Tensor> {
        match &*self.storage {
            Storage::Cpu(_) => Ok(self.detach()),
            Storage::Cuda(_) => Ok(Tensor::from_parts(self.to_host()?, self.shape.clone())),
        }
    }

    /// A host copy of the values, from any device.
    pub fn to_host(&self) -> Result<Vec<f32>> {
        match &*self.storage {
            Storage::Cpu(v) => Ok(v.clone()),
            Storage::Cuda(c) => Ok(c.gpu.download(&c.buf)?),
        }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.storage.len()
    }

    /// The device holding the values.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The values as a host slice (CPU tensors only; see [`Tensor::to_host`]).
    pub fn as_slice(&self) -> Result<&[f32]> {
        self.values()
    }

    /// A host copy of the values. Panics only if reading a device buffer back fails (a lost
    /// device); [`Tensor::to_host`] returns that as an error.
    pub fn to_vec(&self) -> Vec<f32> {
        match self.to_host() {
            Ok(v) => v,
            Err(e) => panic!(
                "reading a {} tensor back to the host failed: {e}",
                self.device()
            ),
        }
    }

    /// The single value of a one-element tensor (e.g. a loss).
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(invalid(
                "item",
                format!(
                    "tensor of shape {:?} has {} elements, expected 1",
                    self.shape,
                    self.numel()
                ),
            ));
        }
        Ok(self.to_host()?[0])
    }

    /// A new leaf sharing these values whose gradient backward will report.
    pub fn requires_grad(&self) -> Tensor {
        Tensor {
            storage: Arc::clone(&self.storage),
            shape: self.shape.clone(),
            node: Some(leaf(&self.shape)),
        }
    }

    /// The same values, cut from the tape (gradients stop here).
    pub fn detach(&self) -> Tensor {
        self.view_untracked(self.shape.clone())
    }

    /// True when the tensor carries a tape node (a leaf or a recorded op output).
    pub fn is_tracked(&self) -> bool {
        self.node.is_some()
    }

    /// True for tracked leaves (parameters, [`Tensor::requires_grad`] tensors).
    pub fn is_leaf(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.backward.is_none())
    }

    /// The tape node id, if tracked; gradients are keyed by it.
    pub fn id(&self) -> Option<NodeId> {
        self.node.as_ref().map(|n| n.id)
    }

    /// Name of the op that produced this tensor (`"leaf"` for leaves), if tracked.
    pub fn op_name(&self) -> Option<&'static str> {
        self.node.as_ref().map(|n| n.op)
    }

    /// True when both tensors share one storage buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tensor");
        d.field("shape", &self.shape)
            .field("device", &self.device())
            .field("op", &self.op_name());
        // Device values stay where they are: no hidden transfer in a debug print.
        if let Ok(v) = self.values() {
            let head: Vec<f32> = v.iter().take(8).copied().collect();
            d.field(
                "values",
                &format_args!("{head:?}{}", if v.len() > 8 { "…" } else { "" }),
            );
        }
        d.finish()
    }
}

/// The error for a device tensor reaching a computation that runs on the host only.
pub(crate) fn on_device(device: Device) -> AutogradError {
    AutogradError::Device(format!(
        "a tensor on {device} reached a computation that has no CUDA implementation yet; \
         move it with to_device(Device::Cpu) or use an op that runs on {device}"
    ))
}

/// The handle of CUDA device `ordinal`, or the CPU emulator when `SCALARIZE_CUDA_EMULATOR=1`.
pub fn cuda_device(ordinal: usize) -> Result<Arc<Gpu>> {
    if std::env::var("SCALARIZE_CUDA_EMULATOR").is_ok_and(|v| v == "1") {
        return Gpu::emulated().map_err(AutogradError::Device);
    }
    Gpu::shared(ordinal).map_err(|e| AutogradError::Device(format!("cuda:{ordinal}: {e}")))
}
