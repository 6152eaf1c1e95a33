//! The optimizer's state in device memory, for models that live on a GPU: the same SGD and
//! AdamW updates as the host code, run by the fused kernels of `scalarize_kernels::cuda::optim`
//! (bit-compatible with the host arithmetic), one launch per parameter tensor.
//!
//! The host maps of [`super::Optimizer`] stay the canonical resting state (checkpoints, clones):
//! a parameter's host state moves to the device on its first device update, and
//! [`super::Optimizer::to_host`] brings all of it back.

use std::collections::BTreeMap;
use std::sync::Arc;

use scalarize_kernels::cuda::optim::{
    AdamWHyper, AdamWSegment, FlatSegments, SgdHyper, SgdSegment, adamw_step, sgd_step,
};
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use crate::error::Result;

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
    /// One single-tensor segment table per length (reused every step).
    segments: BTreeMap<usize, FlatSegments>,
}

impl DeviceState {
    /// True when nothing is held on the device.
    pub(crate) fn is_empty(&self) -> bool {
        self.momentum.is_empty() && self.adamw.is_empty()
    }

    /// SGD on one parameter; `host` is the host momentum of this parameter, moved in if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sgd(
        &mut self,
        gpu: &Arc<Gpu>,
        name: &str,
        hp: SgdHyper,
        decay: bool,
        host: Option<Vec<f32>>,
        value: &mut GpuBuffer<f32>,
        grad: &GpuBuffer<f32>,
    ) -> Result<()> {
        self.gpu = Some(gpu.clone());
        if let Some(h) = host {
            self.momentum.insert(name.to_string(), gpu.upload(&h)?);
        }
        let len = value.len();
        if hp.momentum == 0.0 {
            let segs = segments(&mut self.segments, gpu, len)?;
            let seg = SgdSegment {
                active: true,
                decay,
                has_momentum: false,
            };
            sgd_step(gpu, &hp, segs, &[seg], value, grad, None)?;
            return Ok(());
        }
        let has_momentum = self.momentum.contains_key(name);
        let mut buf = match self.momentum.remove(name) {
            Some(b) => b,
            // Written by the first step before it is ever read.
            None => gpu.alloc::<f32>(len)?,
        };
        let seg = SgdSegment {
            active: true,
            decay,
            has_momentum,
        };
        let segs = segments(&mut self.segments, gpu, len)?;
        let r = sgd_step(gpu, &hp, segs, &[seg], value, grad, Some(&mut buf));
        if r.is_ok() || has_momentum {
            self.momentum.insert(name.to_string(), buf);
        }
        Ok(r?)
    }

    /// AdamW on one parameter; `host` is its host state, moved in if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adamw(
        &mut self,
        gpu: &Arc<Gpu>,
        name: &str,
        hp: AdamWHyper,
        decay: bool,
        host: Option<super::AdamWState>,
        value: &mut GpuBuffer<f32>,
        grad: &GpuBuffer<f32>,
    ) -> Result<()> {
        self.gpu = Some(gpu.clone());
        let len = value.len();
        if let Some(h) = host {
            let st = DeviceAdamW {
                step: h.step,
                exp_avg: gpu.upload(&h.exp_avg)?,
                exp_avg_sq: gpu.upload(&h.exp_avg_sq)?,
            };
            self.adamw.insert(name.to_string(), st);
        }
        if !self.adamw.contains_key(name) {
            let st = DeviceAdamW {
                step: 0,
                exp_avg: gpu.zeros::<f32>(len)?,
                exp_avg_sq: gpu.zeros::<f32>(len)?,
            };
            self.adamw.insert(name.to_string(), st);
        }
        let segs = segments(&mut self.segments, gpu, len)?;
        let st = self.adamw.get_mut(name).expect("inserted above");
        let seg = AdamWSegment {
            active: true,
            decay,
            step: st.step + 1,
        };
        adamw_step(
            gpu,
            &hp,
            segs,
            &[seg],
            value,
            grad,
            &mut st.exp_avg,
            &mut st.exp_avg_sq,
        )?;
        st.step += 1;
        Ok(())
    }
}

/// The single-tensor segment table for `len` elements, built once per length.
fn segments<'a>(
    cache: &'a mut BTreeMap<usize, FlatSegments>,
    gpu: &Gpu,
    len: usize,
) -> Result<&'a FlatSegments> {
    Ok(match cache.entry(len) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(FlatSegments::from_lens(gpu, &[len])?)
        }
    })
}
