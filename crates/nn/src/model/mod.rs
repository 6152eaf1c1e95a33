//! Multi-head models: a ResNet or ViT backbone and one head per task, with their parameters in
//! an autograd [`ParamStore`] under the checkpoint names.

pub mod heads;
pub mod resnet;
pub mod routing;
pub mod vit;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use std::sync::Arc;

use scalarize_autograd::{Device, Gradients, ParamStore, Tensor};
use scalarize_kernels::cuda::{Gpu, GpuBuffer};

use crate::checkpoint::{LoadedCheckpoint, load_checkpoint, read_checkpoint_meta, save_checkpoint};
use crate::error::{NnError, Result};
use crate::init::init_values;
use crate::layout::{InitOptions, Layout, ParamKind};
use crate::optim::{DeviceParam, Optimizer, clip_grad_norm};
use crate::spec::{Family, HeadsSpec, ModelSpec};

pub use routing::{Routing, Segment};

/// What the backbone produced for a batch.
#[derive(Clone, Debug)]
pub struct Features {
    /// The shared representation `[n, F]`: global-average-pooled map (ResNet) or the class
    /// token's output (ViT). Linear heads read it.
    pub pooled: Tensor,
    /// The spatial feature map `[n, F, h/stride, w/stride]`, kept only when a dense head exists.
    pub map: Option<Tensor>,
    /// Input height and width (dense heads upsample to it).
    pub input_hw: (usize, usize),
}

/// One head's output on a run of rows.
#[derive(Clone, Debug)]
pub struct HeadOutput {
    /// Head index.
    pub head: usize,
    /// Rows of the batch this output covers.
    pub rows: Range<usize>,
    /// Logits `[rows, C]` / `[rows, A]`, or a dense map `[rows, K, h, w]`.
    pub output: Tensor,
}

/// A forward pass: backbone features and head outputs.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// Backbone features (use `features.pooled` as the shared representation).
    pub features: Features,
    /// Head outputs in routing order (for [`Routing::AllHeads`]: one per head, in head order).
    pub outputs: Vec<HeadOutput>,
}

/// A backbone with task heads and its parameters.
#[derive(Clone, Debug)]
pub struct Model {
    spec: ModelSpec,
    heads: HeadsSpec,
    layout: Layout,
    index: HashMap<String, usize>,
    store: ParamStore,
    train: bool,
    bn_momentum: f32,
}

impl Model {
    /// A freshly initialised model (seeded, reproducible), in training mode.
    pub fn new(spec: ModelSpec, heads: HeadsSpec, opts: InitOptions, seed: u64) -> Result<Self> {
        if heads.is_empty() {
            return Err(NnError::invalid("model", "at least one head is needed"));
        }
        let layout = Layout::new(&spec, &heads, opts);
        let mut store = ParamStore::new();
        for p in &layout.params {
            let t = Tensor::new(init_values(p, seed), &p.shape)?;
            if p.kind.trainable() {
                store.add_parameter(&p.name, t)?;
            } else {
                store.add_buffer(&p.name, t)?;
            }
        }
        let index = layout
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        Ok(Model {
            spec,
            heads,
            layout,
            index,
            store,
            train: true,
            bn_momentum: 0.1,
        })
    }

    /// Parses `model` and `heads` specs and builds the model.
    pub fn from_specs(model: &str, heads: &str, opts: InitOptions, seed: u64) -> Result<Self> {
        Model::new(
            ModelSpec::parse(model)?,
            HeadsSpec::parse(heads)?,
            opts,
            seed,
        )
    }

    /// Builds the model a checkpoint was written for (from its metadata) and loads it.
    pub fn from_checkpoint(path: &Path) -> Result<(Self, LoadedCheckpoint)> {
        let meta = read_checkpoint_meta(path)?;
        if meta.model.is_empty() || meta.heads.is_empty() {
            return Err(NnError::Checkpoint {
                path: path.to_path_buf(),
                msg: "no `model`/`heads` metadata: build the model from specs and call load".into(),
            });
        }
        let mut m = Model::from_specs(&meta.model, &meta.heads, InitOptions::default(), 0)?;
        let ck = m.load(path)?;
        Ok((m, ck))
    }

    /// The backbone spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The heads.
    pub fn heads(&self) -> &HeadsSpec {
        &self.heads
    }

    /// The parameter layout (names, shapes, kinds, init rules), in store order.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The parameters and buffers.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Mutable parameters and buffers (e.g. to freeze some).
    pub fn store_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// Training mode (BN batch statistics, running statistics updated) or evaluation mode (BN
    /// running statistics). Wrap evaluation in `scalarize_autograd::no_grad()` to record nothing.
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// True in training mode.
    pub fn is_train(&self) -> bool {
        self.train
    }

    /// BN running-statistics momentum (PyTorch's default 0.1).
    pub fn set_bn_momentum(&mut self, momentum: f32) {
        self.bn_momentum = momentum;
    }

    /// The kind of tensor `name`.
    pub fn kind_of(&self, name: &str) -> Option<ParamKind> {
        self.index.get(name).map(|&i| self.layout.params[i].kind)
    }

    fn check_images(&self, images: &Tensor) -> Result<(usize, usize, usize)> {
        let s = images.shape();
        let bad = |msg: String| Err(NnError::invalid(format!("forward of `{}`", self.spec), msg));
        if s.len() != 4 || s[0] == 0 || s[1] != self.spec.in_channels {
            return bad(format!(
                "images have shape {s:?}, expected [n >= 1, {}, h, w]",
                self.spec.in_channels
            ));
        }
        match self.spec.family {
            Family::Vit { .. } if s[2] != self.spec.resolution || s[3] != self.spec.resolution => {
                return bad(format!(
                    "images are {}x{}, this ViT was built for {r}x{r} (option r{r})",
                    s[2],
                    s[3],
                    r = self.spec.resolution
                ));
            }
            Family::ResNet { .. } if !s[2].is_multiple_of(8) || !s[3].is_multiple_of(8) => {
                return bad(format!(
                    "images are {}x{}, a ResNet needs sides divisible by 8",
                    s[2], s[3]
                ));
            }
            _ => {}
        }
        Ok((s[0], s[2], s[3]))
    }

    /// Runs the backbone on `images` `[n, c, h, w]`.
    pub fn forward_features(&mut self, images: &Tensor) -> Result<Features> {
        let (n, h, w) = self.check_images(images)?;
        let keep_map = self.heads.has_dense();
        match self.spec.family {
            Family::ResNet { .. } => {
                let map = resnet::resnet_forward(
                    &mut self.store,
                    &self.spec,
                    images,
                    self.train,
                    self.bn_momentum,
                )?;
                Ok(Features {
                    pooled: map.global_avg_pool()?,
                    map: keep_map.then_some(map),
                    input_hw: (h, w),
                })
            }
            Family::Vit { size, patch, .. } => {
                let tokens = vit::vit_forward(&self.store, &self.spec, images)?;
                let d = size.dim();
                let pooled = tokens.narrow(1, 0, 1)?.reshape(&[n, d])?;
                let map = if keep_map {
                    let (gh, gw) = (h / patch, w / patch);
                    Some(
                        tokens
                            .narrow(1, 1, gh * gw)?
                            .permute(&[0, 2, 1])?
                            .reshape(&[n, d, gh, gw])?,
                    )
                } else {
                    None
                };
                Ok(Features {
                    pooled,
                    map,
                    input_hw: (h, w),
                })
            }
        }
    }

    /// Runs the heads on `features` of a batch of `n` rows, routed by `routing`.
    pub fn forward_heads(&self, features: &Features, routing: &Routing) -> Result<Vec<HeadOutput>> {
        let n = features.pooled.shape()[0];
        let mut outputs = Vec::new();
        for (head, rows) in routing.plan(n, self.heads.len())? {
            let whole = rows.start == 0 && rows.end == n;
            let cut = |t: &Tensor| -> Result<Tensor> {
                Ok(if whole {
                    t.clone()
                } else {
                    t.narrow(0, rows.start, rows.len())?
                })
            };
            let pooled = cut(&features.pooled)?;
            let map = features.map.as_ref().map(&cut).transpose()?;
            let output = heads::head_forward(
                &self.store,
                head,
                &self.heads.0[head],
                &pooled,
                map.as_ref(),
                features.input_hw,
            )?;
            outputs.push(HeadOutput { head, rows, output });
        }
        Ok(outputs)
    }

    /// Backbone then heads.
    pub fn forward(&mut self, images: &Tensor, routing: &Routing) -> Result<ForwardOutput> {
        let features = self.forward_features(images)?;
        let outputs = self.forward_heads(&features, routing)?;
        Ok(ForwardOutput { features, outputs })
    }

    /// All trainable parameters' gradients in store order (zeros where backward did not reach).
    pub fn flat_grads(&self, grads: &Gradients) -> Vec<f32> {
        self.store.flat_grads(grads)
    }

    /// Applies one optimizer update from a flat gradient in store order (e.g. an MTO method's
    /// combined gradient); every trainable parameter is updated. Drop the forward graph
    /// first, or the parameters are copied.
    pub fn step_flat(&mut self, opt: &mut Optimizer, flat: &[f32], lr: f32) -> Result<()> {
        let expected = self.store.num_trainable_elements();
        if flat.len() != expected {
            return Err(NnError::invalid(
                "optimizer step",
                format!(
                    "flat gradient has {} elements, the trainable parameters {expected}",
                    flat.len()
                ),
            ));
        }
        if matches!(self.device(), Device::Cuda(_)) {
            // The combined direction comes from the host (the MTO methods' T x T algebra): one
            // upload, then the device step (no norm needed: step_flat does not clip).
            let Some(gpu) = self.gpu() else {
                return Ok(());
            };
            let d = gpu.upload(flat)?;
            self.step_flat_on_device(&gpu, opt, &d, lr, None, false)?;
            return Ok(());
        }
        let names: Vec<String> = self
            .store
            .trainable()
            .map(|e| e.name().to_string())
            .collect();
        let mut offset = 0;
        for name in names {
            let kind = self.kind_of(&name).unwrap_or(ParamKind::Weight);
            let value = self.store.values_mut(&name)?;
            let len = value.len();
            opt.update(&name, kind, value, &flat[offset..offset + len], lr)?;
            offset += len;
        }
        Ok(())
    }

    /// [`Model::step_flat`] for a model on a GPU with the direction already on its device:
    /// `flat` holds every trainable parameter's update direction in store order (the layout of
    /// [`Model::flat_grads`]). The global norm of `flat` is clipped to `max_grad_norm` if given,
    /// as [`Model::step`] does; returns the norm before clipping.
    pub fn step_flat_device(
        &mut self,
        opt: &mut Optimizer,
        flat: &GpuBuffer<f32>,
        lr: f32,
        max_grad_norm: Option<f32>,
    ) -> Result<f32> {
        let expected = self.store.num_trainable_elements();
        if flat.len() != expected {
            return Err(NnError::invalid(
                "optimizer step",
                format!(
                    "flat direction has {} elements, the trainable parameters {expected}",
                    flat.len()
                ),
            ));
        }
        if !matches!(self.device(), Device::Cuda(_)) {
            return Err(NnError::invalid(
                "optimizer step",
                format!(
                    "step_flat_device needs a model on a GPU, this one is on {}",
                    self.device()
                ),
            ));
        }
        let Some(gpu) = self.gpu() else {
            if let Some(m) = max_grad_norm {
                crate::optim::clip_coef(0.0, m)?;
            }
            return Ok(0.0);
        };
        let norm = self.step_flat_on_device(&gpu, opt, flat, lr, max_grad_norm, true)?;
        Ok(norm.unwrap_or(0.0))
    }

    /// The handle of the model's device (that of its first trainable parameter), None for a
    /// model without trainable parameters on the device.
    fn gpu(&self) -> Option<Arc<Gpu>> {
        let e = self.store.trainable().next()?;
        e.tensor().cuda().map(|c| c.gpu.clone())
    }

    /// The device values of trainable parameter `name` (its address for the multi-tensor
    /// table, its length), checked to be on the handle `gpu`.
    fn device_value(&mut self, gpu: &Arc<Gpu>, name: &str) -> Result<(u64, usize)> {
        let value = self.store.cuda_mut(name)?;
        if !Arc::ptr_eq(&value.gpu, gpu) {
            return Err(NnError::invalid(
                "optimizer step",
                format!("parameter `{name}` is on another device handle than the model's first"),
            ));
        }
        Ok((value.buf.device_address_mut(), value.buf.len()))
    }

    /// The device step from a flat direction already on `gpu`.
    fn step_flat_on_device(
        &mut self,
        gpu: &Arc<Gpu>,
        opt: &mut Optimizer,
        flat: &GpuBuffer<f32>,
        lr: f32,
        max_grad_norm: Option<f32>,
        want_norm: bool,
    ) -> Result<Option<f32>> {
        let names: Vec<String> = self
            .store
            .trainable()
            .map(|e| e.name().to_string())
            .collect();
        let base = flat.device_address();
        let mut addrs = Vec::with_capacity(names.len());
        let mut offset = 0usize;
        for name in &names {
            let (value, len) = self.device_value(gpu, name)?;
            addrs.push((
                value,
                len,
                base + (offset * std::mem::size_of::<f32>()) as u64,
            ));
            offset += len;
        }
        // The kernel reads the slices through raw addresses: they must tile `flat` exactly.
        if offset != flat.len() {
            return Err(NnError::invalid(
                "optimizer step",
                format!(
                    "flat direction has {} elements, the trainable parameters {offset}",
                    flat.len()
                ),
            ));
        }
        let params: Vec<DeviceParam<'_>> = names
            .iter()
            .zip(addrs)
            .map(|(name, (value, len, grad))| DeviceParam {
                name,
                kind: self.kind_of(name).unwrap_or(ParamKind::Weight),
                value,
                len,
                grad,
                grad_len: len,
            })
            .collect();
        // SAFETY: each value address is that of a distinct parameter buffer of the store,
        // uniquely owned (cuda_mut copies shared storage) and kept alive by `&mut self` until
        // this call returns; each grad address is a slice of `flat` within its length
        // (offsets sum to flat.len(), checked by the caller), borrowed for the call.
        unsafe { opt.step_device(gpu, &params, lr, max_grad_norm, want_norm) }
    }

    /// Applies one optimizer update from backward's gradients, clipping the global gradient
    /// norm to `max_grad_norm` if given; returns the norm before clipping. As in PyTorch with
    /// `zero_grad(set_to_none=True)`, parameters backward did not reach (e.g. the head of a
    /// domain absent from the batch) are skipped: no weight decay, no momentum step.
    pub fn step(
        &mut self,
        opt: &mut Optimizer,
        grads: &Gradients,
        lr: f32,
        max_grad_norm: Option<f32>,
    ) -> Result<f32> {
        if matches!(self.device(), Device::Cuda(_)) {
            return self.step_device(opt, grads, lr, max_grad_norm);
        }
        let mut present: Vec<(String, Vec<f32>)> = self
            .reached(grads)
            .into_iter()
            .map(|(name, g)| (name, g.to_vec()))
            .collect();
        let norm = {
            let mut views: Vec<&mut [f32]> = present.iter_mut().map(|(_, g)| &mut g[..]).collect();
            match max_grad_norm {
                Some(m) => clip_grad_norm(&mut views, m)?,
                None => crate::optim::global_grad_norm(&views) as f32,
            }
        };
        for (name, g) in &present {
            let kind = self.kind_of(name).unwrap_or(ParamKind::Weight);
            let value = self.store.values_mut(name)?;
            opt.update(name, kind, value, g, lr)?;
        }
        Ok(norm)
    }

    /// The trainable parameters backward reached, in store order, with their gradients.
    fn reached<'g>(&self, grads: &'g Gradients) -> Vec<(String, &'g Tensor)> {
        self.store
            .trainable()
            .filter_map(|e| grads.get(e.tensor()).map(|g| (e.name().to_string(), g)))
            .collect()
    }

    /// Copies every parameter and BN statistic from `other` (PBT's in-memory exploit); the
    /// two models must have the same layout.
    pub fn copy_state_from(&mut self, other: &Model) -> Result<()> {
        if self.layout != other.layout {
            return Err(NnError::invalid(
                "copy_state_from",
                format!(
                    "models differ: `{}` heads `{}` vs `{}` heads `{}`",
                    self.spec, self.heads, other.spec, other.heads
                ),
            ));
        }
        for p in &self.layout.params {
            let v = other.store.get(&p.name)?.to_host()?;
            self.store.set_values(&p.name, &v)?;
        }
        Ok(())
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.store.device()
    }

    /// Moves parameters and BN statistics to `device` (`Device::Cuda(i)`: GPU i, or the CPU
    /// emulator with `SCALARIZE_CUDA_EMULATOR=1`).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        Ok(self.store.to_device(device)?)
    }

    /// Moves parameters and BN statistics to the device of `gpu` (that handle and stream).
    pub fn to_gpu(&mut self, gpu: &Arc<Gpu>) -> Result<()> {
        Ok(self.store.to_gpu(gpu)?)
    }

    /// [`Model::step`] for a model on a GPU: device gradients, one norm launch, one update
    /// launch for all parameters (the optimizer's multi-tensor step).
    fn step_device(
        &mut self,
        opt: &mut Optimizer,
        grads: &Gradients,
        lr: f32,
        max_grad_norm: Option<f32>,
    ) -> Result<f32> {
        let present = self.reached(grads);
        let Some(gpu) = self.gpu() else {
            if let Some(m) = max_grad_norm {
                crate::optim::clip_coef(0.0, m)?;
            }
            return Ok(0.0);
        };
        let mut addrs = Vec::with_capacity(present.len());
        for (name, g) in &present {
            let c = g
                .cuda()
                .filter(|c| Arc::ptr_eq(&c.gpu, &gpu))
                .ok_or_else(|| {
                    NnError::invalid(
                        "optimizer step",
                        format!(
                            "gradient of `{name}` is on {}, not the model's device handle",
                            g.device()
                        ),
                    )
                })?;
            let (value, len) = self.device_value(&gpu, name)?;
            addrs.push((value, len, c.buf.device_address(), c.buf.len()));
        }
        let params: Vec<DeviceParam<'_>> = present
            .iter()
            .zip(addrs)
            .map(|((name, _), (value, len, grad, grad_len))| DeviceParam {
                name,
                kind: self.kind_of(name).unwrap_or(ParamKind::Weight),
                value,
                len,
                grad,
                grad_len,
            })
            .collect();
        // SAFETY: each value address is that of a distinct parameter buffer of the store,
        // uniquely owned (cuda_mut copies storage shared with a gradient or a graph) and kept
        // alive by `&mut self` until this call returns; each grad address is a whole gradient
        // buffer held by `present` for the call (lengths checked by the optimizer).
        let norm = unsafe { opt.step_device(&gpu, &params, lr, max_grad_norm, true) }?;
        Ok(norm.unwrap_or(0.0))
    }

    /// Saves parameters, BN statistics, optimizer state and `step` atomically.
    pub fn save(
        &self,
        path: &Path,
        opt: Option<&Optimizer>,
        step: u64,
        extra: &BTreeMap<String, String>,
    ) -> Result<()> {
        // Device values are read back; the checkpoint is written from host copies.
        let owned: Vec<Vec<f32>> = match self.device() {
            Device::Cpu => Vec::new(),
            Device::Cuda(_) => self
                .layout
                .params
                .iter()
                .map(|p| self.store.get(&p.name).and_then(|t| t.to_host()))
                .collect::<std::result::Result<_, _>>()?,
        };
        let values: Vec<&[f32]> = if owned.is_empty() {
            self.layout
                .params
                .iter()
                .map(|p| self.store.values(&p.name))
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            owned.iter().map(Vec::as_slice).collect()
        };
        let host_opt = opt.cloned();
        let opt = host_opt.as_ref();
        save_checkpoint(
            path,
            &self.spec.to_string(),
            &self.heads.to_string(),
            &self.layout,
            &values,
            opt,
            step,
            extra,
        )
    }

    /// Loads parameters and BN statistics from `path` (validated against this model's layout;
    /// nothing changes on error). The returned checkpoint gives the step and optimizer.
    pub fn load(&mut self, path: &Path) -> Result<LoadedCheckpoint> {
        let mut ck = load_checkpoint(path, &self.layout)?;
        for (p, v) in self.layout.params.iter().zip(&ck.values) {
            self.store.set_values(&p.name, v)?;
        }
        ck.values = Vec::new();
        Ok(ck)
    }
}

#[cfg(test)]
mod tests;
