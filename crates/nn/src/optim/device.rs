//! The optimizer's state in device memory, for models that live on a GPU: the same SGD and
//! AdamW updates as the host code, run by the multi-tensor kernels of
//! `scalarize_kernels::cuda::optim` (bit-compatible with the host arithmetic). A step is one
//! gradient-norm launch (one 8-byte read-back), one table upload and one update launch for
//! all parameters together, whatever their number.
//!
//! The state stays per parameter (one buffer per tensor and moment, by name), and the host
//! maps of [`super::Optimizer`] stay the canonical resting state (checkpoints, clones): a
//! parameter's host state moves to the device on its first device update, and
//! [`super::Optimizer::to_host`] brings all of it back.

use std::collections::BTreeMap;
use std::sync::Arc;

use scalarize_kernels::cuda::optim::{
    AdamWHyper, AdamWSegment, MultiOptim, MultiTensor, SgdHyper, SgdSegment, TensorAddrs,
};
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use super::{AdamWState, OptimizerConfig, clip_coef};
use crate::error::{NnError, Result};
use crate::layout::ParamKind;

/// One trainable parameter of a device step: its name and kind and the device addresses of
/// its values (`len` f32) and gradient (`grad_len` f32, which must equal `len`). See the
/// safety contract of [`super::Optimizer::step_device`].
pub(crate) struct DeviceParam<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: ParamKind,
    pub(crate) value: u64,
    pub(crate) len: usize,
    pub(crate) grad: u64,
    pub(crate) grad_len: usize,
}

/// One parameter's AdamW moments on the device.
pub(crate) struct DeviceAdamW {
    pub(crate) step: u64,
    pub(crate) exp_avg: GpuBuffer<f32>,
    pub(crate) exp_avg_sq: GpuBuffer<f32>,
}

/// Device-resident optimizer state by parameter name, with the handle that owns it.
#[derive(Default)]
pub(crate) struct DeviceState {
    pub(crate) gpu: Option<Arc<Gpu>>,
    pub(crate) momentum: BTreeMap<String, GpuBuffer<f32>>,
    pub(crate) adamw: BTreeMap<String, DeviceAdamW>,
    /// The multi-tensor table and its device buffers (reused every step) for `gpu`.
    table: Option<MultiTensor>,
}

/// The host state [`DeviceState::step`] moves in and the per-parameter settings it needs.
pub(crate) struct StepInputs<'a, 'p> {
    pub(crate) config: OptimizerConfig,
    pub(crate) params: &'a [DeviceParam<'p>],
    pub(crate) decays: &'a [bool],
    pub(crate) host_momentum: &'a mut BTreeMap<String, Vec<f32>>,
    pub(crate) host_adamw: &'a mut BTreeMap<String, AdamWState>,
    pub(crate) lr: f32,
    pub(crate) max_grad_norm: Option<f32>,
    pub(crate) want_norm: bool,
}

impl DeviceState {
    /// True when nothing is held on the device.
    pub(crate) fn is_empty(&self) -> bool {
        self.momentum.is_empty() && self.adamw.is_empty()
    }

    /// One step of every parameter of `inp.params` on `gpu`; returns the gradient norm before
    /// clipping when it was computed (clipping or `want_norm`).
    ///
    /// # Safety
    /// As [`super::Optimizer::step_device`].
    pub(crate) unsafe fn step(
        &mut self,
        gpu: &Arc<Gpu>,
        mut inp: StepInputs<'_, '_>,
    ) -> Result<Option<f32>> {
        if !self.gpu.as_ref().is_some_and(|g| Arc::ptr_eq(g, gpu)) {
            // The table's buffers belong to the old handle (the caller checked that no state
            // does).
            self.table = None;
            self.gpu = Some(gpu.clone());
        }
        let mut table = match self.table.take() {
            Some(t) => t,
            None => MultiTensor::new(gpu)?,
        };
        // Momentum buffers created by this step: garbage until the launch writes them, so
        // they are dropped again if the step fails before it.
        let mut fresh = Vec::new();
        // SAFETY: forwarded from the caller's contract; the state addresses come from buffers
        // of `self`, which this call keeps alive and does not otherwise touch.
        let r = unsafe { self.fill(gpu, &mut table, &mut inp, &mut fresh) }
            .and_then(|()| run(gpu, &mut table, &inp));
        self.table = Some(table);
        match &r {
            Ok(_) => {
                for p in inp.params {
                    if let Some(st) = self.adamw.get_mut(p.name) {
                        st.step += 1;
                    }
                }
            }
            Err(_) => {
                for name in fresh {
                    self.momentum.remove(&name);
                }
            }
        }
        r
    }

    /// Moves the host state of the parameters in, creates what is missing and pushes one table
    /// row per parameter.
    ///
    /// # Safety
    /// As [`super::Optimizer::step_device`].
    unsafe fn fill(
        &mut self,
        gpu: &Gpu,
        table: &mut MultiTensor,
        inp: &mut StepInputs<'_, '_>,
        fresh: &mut Vec<String>,
    ) -> Result<()> {
        match inp.config {
            OptimizerConfig::Sgd(c) => {
                let hp = SgdHyper {
                    lr: inp.lr,
                    momentum: c.momentum,
                    dampening: c.dampening,
                    nesterov: c.nesterov,
                    weight_decay: c.weight_decay,
                };
                table.begin(MultiOptim::Sgd(hp))?;
                for (p, &decay) in inp.params.iter().zip(inp.decays) {
                    if let Some(h) = inp.host_momentum.remove(p.name) {
                        self.momentum.insert(p.name.to_string(), gpu.upload(&h)?);
                    }
                    let has_momentum = self.momentum.contains_key(p.name);
                    let state = if hp.momentum != 0.0 {
                        if !has_momentum {
                            // Written by this first step before it is ever read.
                            self.momentum
                                .insert(p.name.to_string(), gpu.alloc::<f32>(p.len)?);
                            fresh.push(p.name.to_string());
                        }
                        let b = self.momentum.get_mut(p.name).expect("present");
                        b.device_address_mut()
                    } else {
                        0
                    };
                    let t = TensorAddrs {
                        param: p.value,
                        grad: p.grad,
                        state: [state, 0],
                        len: p.len,
                    };
                    let seg = SgdSegment {
                        decay,
                        has_momentum,
                    };
                    // SAFETY: the caller's contract covers value and grad; the momentum buffer
                    // has p.len elements (checked against the host state before, created with
                    // it here) and lives in `self` past the launch.
                    unsafe { table.push_sgd(t, seg) }.map_err(|e| named(p.name, e))?;
                }
            }
            OptimizerConfig::AdamW(c) => {
                let hp = AdamWHyper {
                    lr: inp.lr,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                };
                table.begin(MultiOptim::AdamW(hp))?;
                for (p, &decay) in inp.params.iter().zip(inp.decays) {
                    if let Some(h) = inp.host_adamw.remove(p.name) {
                        let st = DeviceAdamW {
                            step: h.step,
                            exp_avg: gpu.upload(&h.exp_avg)?,
                            exp_avg_sq: gpu.upload(&h.exp_avg_sq)?,
                        };
                        self.adamw.insert(p.name.to_string(), st);
                    }
                    if !self.adamw.contains_key(p.name) {
                        // A fresh state (zero moments, step 0) is valid even if the step fails.
                        let st = DeviceAdamW {
                            step: 0,
                            exp_avg: gpu.zeros::<f32>(p.len)?,
                            exp_avg_sq: gpu.zeros::<f32>(p.len)?,
                        };
                        self.adamw.insert(p.name.to_string(), st);
                    }
                    let st = self.adamw.get_mut(p.name).expect("inserted above");
                    let t = TensorAddrs {
                        param: p.value,
                        grad: p.grad,
                        state: [
                            st.exp_avg.device_address_mut(),
                            st.exp_avg_sq.device_address_mut(),
                        ],
                        len: p.len,
                    };
                    let seg = AdamWSegment {
                        decay,
                        step: st.step + 1,
                    };
                    // SAFETY: as for SGD; both moments have p.len elements and live in `self`.
                    unsafe { table.push_adamw(t, seg) }.map_err(|e| named(p.name, e))?;
                }
            }
        }
        Ok(())
    }
}

/// A table error for parameter `name`, named.
fn named(name: &str, e: scalarize_kernels::KernelError) -> NnError {
    NnError::invalid(format!("optimizer update of `{name}`"), e.to_string())
}

/// The norm launch (when needed), the clip factor and the update launch of a filled table.
fn run(gpu: &Gpu, table: &mut MultiTensor, inp: &StepInputs<'_, '_>) -> Result<Option<f32>> {
    let norm = if inp.want_norm || inp.max_grad_norm.is_some() {
        Some(table.grad_sq_norm(gpu)?.sqrt())
    } else {
        None
    };
    let coef = match (inp.max_grad_norm, norm) {
        (Some(m), Some(n)) => clip_coef(n, m)?,
        _ => 1.0,
    };
    table.step(gpu, coef)?;
    Ok(norm.map(|n| n as f32))
}
