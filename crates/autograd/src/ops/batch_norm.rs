//! Batch normalisation over `[n, c, ...]` (statistics per channel over n and the spatial axes).

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::output;
use crate::error::{AutogradError, Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::params::ParamStore;
use crate::storage::Storage;
use crate::tensor::Tensor;

/// How batch norm normalises.
#[derive(Debug)]
pub enum BatchNormMode<'a> {
    /// Training: normalise with the batch statistics and fold them into the running
    /// statistics, `running = (1 − momentum)·running + momentum·batch` (unbiased variance).
    Train {
        /// Running mean `[c]`, updated in place.
        running_mean: &'a mut [f32],
        /// Running variance `[c]`, updated in place.
        running_var: &'a mut [f32],
        /// PyTorch's momentum (default 0.1).
        momentum: f32,
    },
    /// Training statistics without touching any running statistics.
    TrainNoRunning,
    /// Evaluation: normalise with the running statistics.
    Eval {
        /// Running mean `[c]`.
        running_mean: &'a [f32],
        /// Running variance `[c]`.
        running_var: &'a [f32],
    },
}

/// What follows the batch norm in the same kernel (training mode; eval mode composes the
/// separate ops): saves a pass over the activations, a buffer, and a tape node per op.
#[derive(Clone, Copy, Debug)]
pub enum BnEpilogue<'a> {
    /// Plain batch norm.
    None,
    /// max(bn(x), 0).
    Relu,
    /// max(bn(x) + residual, 0), the end of a ResNet block; residual has x's shape.
    AddRelu(&'a Tensor),
}

impl Tensor {
    /// Batch norm of `self` `[n, c, ...]` with per-channel `gamma` and `beta` `[c]`.
    pub fn batch_norm(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        mode: BatchNormMode<'_>,
        eps: f32,
    ) -> Result<Tensor> {
        self.batch_norm_with(gamma, beta, mode, eps, BnEpilogue::None)
    }

    /// Batch norm followed by `epilogue` (see [`BnEpilogue`]).
    pub fn batch_norm_with(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        mode: BatchNormMode<'_>,
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        let dims = self.bn_dims(gamma, beta, epilogue)?;
        let (n, c, hw) = dims;
        if let Some(g) = gpu::gpu_of("batch_norm", &bn_inputs(self, gamma, beta, epilogue))? {
            let mode = match mode {
                BatchNormMode::Train {
                    running_mean,
                    running_var,
                    momentum,
                } => GpuMode::TrainHost {
                    mean: running_mean,
                    var: running_var,
                    momentum,
                },
                BatchNormMode::TrainNoRunning => GpuMode::TrainNoRunning,
                BatchNormMode::Eval {
                    running_mean,
                    running_var,
                } => GpuMode::EvalHost {
                    mean: running_mean,
                    var: running_var,
                },
            };
            return self.bn_gpu(g, gamma, beta, mode, dims, eps, epilogue);
        }
        match mode {
            BatchNormMode::Train {
                running_mean,
                running_var,
                momentum,
            } => {
                let (y, mean, invstd) = self.bn_train(gamma, beta, (n, c, hw), eps, epilogue)?;
                cpu::batch_norm_update_running(
                    c,
                    n * hw,
                    &mean,
                    &invstd,
                    eps,
                    momentum,
                    running_mean,
                    running_var,
                )?;
                Ok(self.bn_record_train(gamma, beta, y, (mean, invstd), (n, c, hw), epilogue))
            }
            BatchNormMode::TrainNoRunning => {
                let (y, mean, invstd) = self.bn_train(gamma, beta, (n, c, hw), eps, epilogue)?;
                Ok(self.bn_record_train(gamma, beta, y, (mean, invstd), (n, c, hw), epilogue))
            }
            BatchNormMode::Eval {
                running_mean,
                running_var,
            } => {
                let y = self.bn_eval(gamma, beta, running_mean, running_var, (n, c, hw), eps)?;
                match epilogue {
                    BnEpilogue::None => Ok(y),
                    BnEpilogue::Relu => y.relu(),
                    BnEpilogue::AddRelu(r) => y.add(r)?.relu(),
                }
            }
        }
    }

    /// Checks the shapes and returns (n, c, hw).
    fn bn_dims(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        epilogue: BnEpilogue<'_>,
    ) -> Result<(usize, usize, usize)> {
        let c = if self.rank() >= 2 { self.shape()[1] } else { 0 };
        if c == 0 || gamma.shape() != [c] || beta.shape() != [c] {
            return Err(invalid(
                "batch_norm",
                format!(
                    "input {:?}, gamma {:?}, beta {:?}: expected input [n, c, ...], gamma [c], beta [c]",
                    self.shape(),
                    gamma.shape(),
                    beta.shape()
                ),
            ));
        }
        if let BnEpilogue::AddRelu(r) = epilogue
            && r.shape() != self.shape()
        {
            return Err(invalid(
                "batch_norm",
                format!(
                    "residual has shape {:?}, expected the input's shape {:?}",
                    r.shape(),
                    self.shape()
                ),
            ));
        }
        let n = self.shape()[0];
        Ok((n, c, self.numel() / (n * c)))
    }

    fn bn_train(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        (n, c, hw): (usize, usize, usize),
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let mut y = output(self.numel());
        let mut mean = output(c);
        let mut invstd = output(c);
        let (x, g, b) = (self.values()?, gamma.values()?, beta.values()?);
        let (ym, mm, im) = (&mut y, &mut mean, &mut invstd);
        match epilogue {
            BnEpilogue::None => cpu::batch_norm_forward_train(n, c, hw, x, g, b, eps, ym, mm, im),
            BnEpilogue::Relu => {
                cpu::batch_norm_relu_forward_train(n, c, hw, x, g, b, eps, ym, mm, im)
            }
            BnEpilogue::AddRelu(r) => cpu::batch_norm_add_relu_forward_train(
                n,
                c,
                hw,
                x,
                r.values()?,
                g,
                b,
                eps,
                ym,
                mm,
                im,
            ),
        }?;
        Ok((y, mean, invstd))
    }

    fn bn_record_train(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        y: Vec<f32>,
        (mean, invstd): (Vec<f32>, Vec<f32>),
        (n, c, hw): (usize, usize, usize),
        epilogue: BnEpilogue<'_>,
    ) -> Tensor {
        let (x, g) = (self.detach(), gamma.detach());
        let out = Tensor::from_parts(y, self.shape().to_vec());
        // What the backward needs besides x: the ReLU gate is recomputed from x and beta;
        // after a residual add it is read from the output (y > 0 where the ReLU passed).
        enum Saved {
            Plain,
            Relu(Tensor),
            AddRelu(Tensor),
        }
        let saved = match epilogue {
            BnEpilogue::None => Saved::Plain,
            BnEpilogue::Relu => Saved::Relu(beta.detach()),
            BnEpilogue::AddRelu(_) => Saved::AddRelu(out.detach()),
        };
        let backward = Box::new(move |dy: &[f32], needs: &[bool]| {
            let mut dx = output(dy.len());
            let mut dgamma = output(c);
            let mut dbeta = output(c);
            let stats = (&mean[..], &invstd[..]);
            let mut dres = None;
            match &saved {
                Saved::Plain => cpu::batch_norm_backward(
                    n,
                    c,
                    hw,
                    x.values()?,
                    dy,
                    g.values()?,
                    stats.0,
                    stats.1,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?,
                Saved::AddRelu(y) => {
                    let mut dr = output(dy.len());
                    cpu::batch_norm_add_relu_backward(
                        n,
                        c,
                        hw,
                        x.values()?,
                        y.values()?,
                        dy,
                        g.values()?,
                        stats.0,
                        stats.1,
                        &mut dx,
                        &mut dr,
                        &mut dgamma,
                        &mut dbeta,
                    )?;
                    dres = needs[3].then_some(dr);
                }
                Saved::Relu(b) => cpu::batch_norm_relu_backward(
                    n,
                    c,
                    hw,
                    x.values()?,
                    dy,
                    (g.values()?, b.values()?),
                    stats.0,
                    stats.1,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?,
            }
            let mut grads = vec![
                needs[0].then_some(dx),
                needs[1].then_some(dgamma),
                needs[2].then_some(dbeta),
            ];
            if needs.len() == 4 {
                grads.push(dres);
            }
            Ok(grads)
        });
        match epilogue {
            BnEpilogue::None => attach("batch_norm_train", out, &[self, gamma, beta], backward),
            BnEpilogue::Relu => {
                attach("batch_norm_relu_train", out, &[self, gamma, beta], backward)
            }
            BnEpilogue::AddRelu(r) => {
                let inputs = [self, gamma, beta, r];
                attach("batch_norm_add_relu_train", out, &inputs, backward)
            }
        }
    }

    fn bn_eval(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &[f32],
        running_var: &[f32],
        (n, c, hw): (usize, usize, usize),
        eps: f32,
    ) -> Result<Tensor> {
        let mut y = output(self.numel());
        cpu::batch_norm_forward_eval(
            n,
            c,
            hw,
            self.values()?,
            gamma.values()?,
            beta.values()?,
            running_mean,
            running_var,
            eps,
            &mut y,
        )?;
        let (x, g) = (self.detach(), gamma.detach());
        let (rm, rv) = (running_mean.to_vec(), running_var.to_vec());
        // Eval mode is an affine map per channel; its backward reuses the eval kernel:
        // dx = bn_eval(dy; gamma, beta = 0, mean = 0), x̂ = bn_eval(x; gamma = 1, beta = 0).
        Ok(attach(
            "batch_norm_eval",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self, gamma, beta],
            Box::new(move |dy, needs| {
                let zero_c = vec![0.0; c];
                let mut grads = vec![None, None, None];
                if needs[0] {
                    let mut dx = output(dy.len());
                    cpu::batch_norm_forward_eval(
                        n,
                        c,
                        hw,
                        dy,
                        g.values()?,
                        &zero_c,
                        &zero_c,
                        &rv,
                        eps,
                        &mut dx,
                    )?;
                    grads[0] = Some(dx);
                }
                if needs[1] {
                    let ones = vec![1.0; c];
                    let mut xhat = output(dy.len());
                    cpu::batch_norm_forward_eval(
                        n,
                        c,
                        hw,
                        x.values()?,
                        &ones,
                        &zero_c,
                        &rm,
                        &rv,
                        eps,
                        &mut xhat,
                    )?;
                    let mut prod = output(dy.len());
                    cpu::mul(dy, &xhat, &mut prod)?;
                    let mut dgamma = output(c);
                    cpu::bias_grad_channels(n, c, hw, &prod, &mut dgamma)?;
                    grads[1] = Some(dgamma);
                }
                if needs[2] {
                    let mut dbeta = output(c);
                    cpu::bias_grad_channels(n, c, hw, dy, &mut dbeta)?;
                    grads[2] = Some(dbeta);
                }
                Ok(grads)
            }),
        ))
    }
}

/// The running statistics as the device path takes them.
enum GpuMode<'a> {
    /// [`BatchNormMode::Train`]'s host slices: updated on the host from the c batch
    /// statistics read back, so they stay where the caller keeps them.
    TrainHost {
        mean: &'a mut [f32],
        var: &'a mut [f32],
        momentum: f32,
    },
    /// Device running statistics (a [`ParamStore`] on the device), updated on the device.
    TrainDevice {
        mean: &'a mut GpuBuffer<f32>,
        var: &'a mut GpuBuffer<f32>,
        momentum: f32,
    },
    /// Batch statistics only.
    TrainNoRunning,
    /// [`BatchNormMode::Eval`]'s host slices (uploaded).
    EvalHost { mean: &'a [f32], var: &'a [f32] },
    /// Device copies of the running statistics, owned by the backward.
    EvalDevice {
        mean: GpuBuffer<f32>,
        var: GpuBuffer<f32>,
    },
}

/// The op's tensor inputs: x, gamma, beta and the residual of an add+ReLU epilogue.
fn bn_inputs<'a>(
    x: &'a Tensor,
    gamma: &'a Tensor,
    beta: &'a Tensor,
    epilogue: BnEpilogue<'a>,
) -> Vec<&'a Tensor> {
    let mut inputs = vec![x, gamma, beta];
    if let BnEpilogue::AddRelu(r) = epilogue {
        inputs.push(r);
    }
    inputs
}

/// Batch norm on the device.
impl Tensor {
    #[allow(clippy::too_many_arguments)]
    fn bn_gpu(
        &self,
        g: Arc<Gpu>,
        gamma: &Tensor,
        beta: &Tensor,
        mode: GpuMode<'_>,
        dims: (usize, usize, usize),
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        let stats = match mode {
            GpuMode::EvalHost { mean, var } => {
                // The device kernel does not read the variances back to check them: check
                // the host copies before the upload, as the CPU would.
                cuda::batch_norm::check_running_var("batch_norm (eval)", var, eps)?;
                (g.upload(mean)?, g.upload(var)?)
            }
            GpuMode::EvalDevice { mean, var } => (mean, var),
            train => return self.bn_gpu_train(g, gamma, beta, train, dims, eps, epilogue),
        };
        self.bn_gpu_eval(g, gamma, beta, stats, dims, eps, epilogue)
    }

    #[allow(clippy::too_many_arguments)]
    fn bn_gpu_train(
        &self,
        g: Arc<Gpu>,
        gamma: &Tensor,
        beta: &Tensor,
        mode: GpuMode<'_>,
        (n, c, hw): (usize, usize, usize),
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        use cuda::batch_norm as bn;
        let (x, gm, bt) = (gpu::buf(self)?, gpu::buf(gamma)?, gpu::buf(beta)?);
        let mut y = g.alloc::<f32>(self.numel())?;
        let mut mean = g.alloc::<f32>(c)?;
        let mut invstd = g.alloc::<f32>(c)?;
        let (ym, mm, im) = (&mut y, &mut mean, &mut invstd);
        match epilogue {
            BnEpilogue::None => {
                bn::batch_norm_forward_train(&g, n, c, hw, x, gm, bt, eps, ym, mm, im)
            }
            BnEpilogue::Relu => {
                bn::batch_norm_relu_forward_train(&g, n, c, hw, x, gm, bt, eps, ym, mm, im)
            }
            BnEpilogue::AddRelu(r) => bn::batch_norm_add_relu_forward_train(
                &g,
                n,
                c,
                hw,
                x,
                gpu::buf(r)?,
                gm,
                bt,
                eps,
                ym,
                mm,
                im,
            ),
        }?;
        match mode {
            GpuMode::TrainHost {
                mean: rm,
                var: rv,
                momentum,
            } => {
                let (bm, bi) = (g.download(&mean)?, g.download(&invstd)?);
                cpu::batch_norm_update_running(c, n * hw, &bm, &bi, eps, momentum, rm, rv)?;
            }
            GpuMode::TrainDevice {
                mean: rm,
                var: rv,
                momentum,
            } => {
                bn::batch_norm_update_running(&g, c, n * hw, &mean, &invstd, eps, momentum, rm, rv)?
            }
            _ => {}
        }
        let out = gpu::tensor(&g, y, self.shape().to_vec());
        let (x, gm) = (self.detach(), gamma.detach());
        // As on the host: the ReLU gate is recomputed from x and beta; after a residual add
        // it is read from the output.
        enum Saved {
            Plain,
            Relu(Tensor),
            AddRelu(Tensor),
        }
        let (op, saved) = match epilogue {
            BnEpilogue::None => ("batch_norm_train", Saved::Plain),
            BnEpilogue::Relu => ("batch_norm_relu_train", Saved::Relu(beta.detach())),
            BnEpilogue::AddRelu(_) => ("batch_norm_add_relu_train", Saved::AddRelu(out.detach())),
        };
        let backward = Box::new(move |dy: &Storage, needs: &[bool]| {
            let dy = gpu::cotangent(op, dy)?;
            let (g, d) = (&dy.gpu, &dy.buf);
            let (xb, gb) = (gpu::buf(&x)?, gpu::buf(&gm)?);
            let mut dx = g.alloc::<f32>(d.len())?;
            let mut dgamma = g.alloc::<f32>(c)?;
            let mut dbeta = g.alloc::<f32>(c)?;
            let (ds, dg, db) = (&mut dx, &mut dgamma, &mut dbeta);
            let mut dres = None;
            match &saved {
                Saved::Plain => {
                    bn::batch_norm_backward(g, n, c, hw, xb, d, gb, &mean, &invstd, ds, dg, db)?
                }
                Saved::Relu(b) => bn::batch_norm_relu_backward(
                    g,
                    n,
                    c,
                    hw,
                    xb,
                    d,
                    (gb, gpu::buf(b)?),
                    &mean,
                    &invstd,
                    ds,
                    dg,
                    db,
                )?,
                Saved::AddRelu(y) => {
                    let mut dr = g.alloc::<f32>(d.len())?;
                    bn::batch_norm_add_relu_backward(
                        g,
                        n,
                        c,
                        hw,
                        xb,
                        gpu::buf(y)?,
                        d,
                        gb,
                        &mean,
                        &invstd,
                        ds,
                        &mut dr,
                        dg,
                        db,
                    )?;
                    dres = needs[3].then(|| gpu::grad(g, dr));
                }
            }
            let mut grads = vec![
                needs[0].then(|| gpu::grad(g, dx)),
                needs[1].then(|| gpu::grad(g, dgamma)),
                needs[2].then(|| gpu::grad(g, dbeta)),
            ];
            if needs.len() == 4 {
                grads.push(dres);
            }
            Ok(grads)
        });
        Ok(attach_any(
            op,
            out,
            &bn_inputs(self, gamma, beta, epilogue),
            backward,
        ))
    }

    /// Eval mode on the device: the fused ReLU kernel for [`BnEpilogue::Relu`]; the residual
    /// add and ReLU compose the device ops, as on the host.
    #[allow(clippy::too_many_arguments)]
    fn bn_gpu_eval(
        &self,
        g: Arc<Gpu>,
        gamma: &Tensor,
        beta: &Tensor,
        (rm, rv): (GpuBuffer<f32>, GpuBuffer<f32>),
        (n, c, hw): (usize, usize, usize),
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        use cuda::batch_norm as bn;
        let relu = matches!(epilogue, BnEpilogue::Relu);
        let forward = if relu {
            bn::batch_norm_relu_forward_eval
        } else {
            bn::batch_norm_forward_eval
        };
        let mut y = g.alloc::<f32>(self.numel())?;
        let (x, gm, bt) = (gpu::buf(self)?, gpu::buf(gamma)?, gpu::buf(beta)?);
        forward(&g, n, c, hw, x, gm, bt, &rm, &rv, eps, &mut y)?;
        let out = gpu::tensor(&g, y, self.shape().to_vec());
        let (x, gm) = (self.detach(), gamma.detach());
        let gate = relu.then(|| out.detach());
        let op = if relu {
            "batch_norm_relu_eval"
        } else {
            "batch_norm_eval"
        };
        // The host's backward on device buffers: dx = bn_eval(dy; gamma, beta = 0, mean = 0),
        // x̂ = bn_eval(x; gamma = 1, beta = 0).
        let y = attach_any(
            op,
            out,
            &[self, gamma, beta],
            Box::new(move |dy: &Storage, needs: &[bool]| {
                let dy = gpu::cotangent(op, dy)?;
                let g = &dy.gpu;
                // After the fused ReLU the cotangent flows where y > 0, i.e. where bn(x) > 0.
                let gated = match &gate {
                    Some(y) => {
                        let mut t = g.alloc::<f32>(dy.buf.len())?;
                        cuda::activation::relu_backward(g, gpu::buf(y)?, &dy.buf, &mut t)?;
                        Some(t)
                    }
                    None => None,
                };
                let d = gated.as_ref().unwrap_or(&dy.buf);
                let zeros = g.zeros::<f32>(c)?;
                let mut grads = vec![None, None, None];
                if needs[0] {
                    let mut dx = g.alloc::<f32>(d.len())?;
                    let gb = gpu::buf(&gm)?;
                    bn::batch_norm_forward_eval(
                        g, n, c, hw, d, gb, &zeros, &zeros, &rv, eps, &mut dx,
                    )?;
                    grads[0] = Some(gpu::grad(g, dx));
                }
                if needs[1] {
                    // Uploaded once per device and channel count, not in every backward.
                    let ones = g.constant("ones", &[c], || vec![1.0f32; c])?;
                    let mut xhat = g.alloc::<f32>(d.len())?;
                    let xb = gpu::buf(&x)?;
                    bn::batch_norm_forward_eval(
                        g, n, c, hw, xb, &ones, &zeros, &rm, &rv, eps, &mut xhat,
                    )?;
                    let mut prod = g.alloc::<f32>(d.len())?;
                    cuda::elementwise::mul(g, d, &xhat, &mut prod)?;
                    let mut dgamma = g.alloc::<f32>(c)?;
                    cuda::elementwise::bias_grad_channels(g, n, c, hw, &prod, &mut dgamma)?;
                    grads[1] = Some(gpu::grad(g, dgamma));
                }
                if needs[2] {
                    let mut dbeta = g.alloc::<f32>(c)?;
                    cuda::elementwise::bias_grad_channels(g, n, c, hw, d, &mut dbeta)?;
                    grads[2] = Some(gpu::grad(g, dbeta));
                }
                Ok(grads)
            }),
        );
        match epilogue {
            BnEpilogue::AddRelu(r) => y.add(r)?.relu(),
            _ => Ok(y),
        }
    }
}

impl ParamStore {
    /// Batch norm with the PyTorch-named entries `{prefix}.weight`, `.bias`, `.running_mean`
    /// and `.running_var` of this store; `train` uses batch statistics and updates the
    /// running ones (momentum), otherwise the running statistics are used.
    pub fn batch_norm(
        &mut self,
        prefix: &str,
        x: &Tensor,
        train: bool,
        momentum: f32,
        eps: f32,
    ) -> Result<Tensor> {
        self.batch_norm_with(prefix, x, train, momentum, eps, BnEpilogue::None)
    }

    /// [`ParamStore::batch_norm`] followed by `epilogue` (see [`BnEpilogue`]).
    pub fn batch_norm_with(
        &mut self,
        prefix: &str,
        x: &Tensor,
        train: bool,
        momentum: f32,
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        let gamma = self.get(&format!("{prefix}.weight"))?.clone();
        let beta = self.get(&format!("{prefix}.bias"))?.clone();
        let (mean_name, var_name) = (
            format!("{prefix}.running_mean"),
            format!("{prefix}.running_var"),
        );
        let (mean_t, var_t) = (self.get(&mean_name)?, self.get(&var_name)?);
        if mean_t.cuda().is_some() || var_t.cuda().is_some() {
            let stats = (mean_t.clone(), var_t.clone());
            let names = (mean_name.as_str(), var_name.as_str());
            let (gamma, beta) = (&gamma, &beta);
            return self.bn_device_stats(
                prefix,
                x,
                (gamma, beta),
                names,
                stats,
                train,
                momentum,
                eps,
                epilogue,
            );
        }
        if train {
            let (running_mean, running_var) = self.values_mut_pair(&mean_name, &var_name)?;
            x.batch_norm_with(
                &gamma,
                &beta,
                BatchNormMode::Train {
                    running_mean,
                    running_var,
                    momentum,
                },
                eps,
                epilogue,
            )
        } else {
            let running_mean = self.values(&mean_name)?;
            let running_var = self.values(&var_name)?;
            if running_mean.len() != gamma.numel() || running_var.len() != gamma.numel() {
                return Err(AutogradError::Param(format!(
                    "`{prefix}` running statistics have {} and {} elements, expected {}",
                    running_mean.len(),
                    running_var.len(),
                    gamma.numel()
                )));
            }
            x.batch_norm_with(
                &gamma,
                &beta,
                BatchNormMode::Eval {
                    running_mean,
                    running_var,
                },
                eps,
                epilogue,
            )
        }
    }

    /// [`ParamStore::batch_norm_with`] when the running statistics live on a device: x must
    /// be there too; training updates device copies that replace the store's entries (so a
    /// live graph sharing the old buffers keeps them, as with `values_mut`).
    #[allow(clippy::too_many_arguments)]
    fn bn_device_stats(
        &mut self,
        prefix: &str,
        x: &Tensor,
        (gamma, beta): (&Tensor, &Tensor),
        (mean_name, var_name): (&str, &str),
        (mean_t, var_t): (Tensor, Tensor),
        train: bool,
        momentum: f32,
        eps: f32,
        epilogue: BnEpilogue<'_>,
    ) -> Result<Tensor> {
        let dims = x.bn_dims(gamma, beta, epilogue)?;
        let mut inputs = bn_inputs(x, gamma, beta, epilogue);
        inputs.extend([&mean_t, &var_t]);
        let g = gpu::gpu_of("batch_norm", &inputs)?.ok_or_else(|| {
            AutogradError::Device(format!(
                "internal: `{prefix}` running statistics are not on a device"
            ))
        })?;
        let (rm, rv) = (
            gpu::copy(&g, gpu::buf(&mean_t)?)?,
            gpu::copy(&g, gpu::buf(&var_t)?)?,
        );
        if !train {
            if rm.len() != gamma.numel() || rv.len() != gamma.numel() {
                return Err(AutogradError::Param(format!(
                    "`{prefix}` running statistics have {} and {} elements, expected {}",
                    rm.len(),
                    rv.len(),
                    gamma.numel()
                )));
            }
            let mode = GpuMode::EvalDevice { mean: rm, var: rv };
            return x.bn_gpu(g, gamma, beta, mode, dims, eps, epilogue);
        }
        let (mut rm, mut rv) = (rm, rv);
        let mode = GpuMode::TrainDevice {
            mean: &mut rm,
            var: &mut rv,
            momentum,
        };
        let y = x.bn_gpu(g.clone(), gamma, beta, mode, dims, eps, epilogue)?;
        self.replace_untracked(mean_name, gpu::tensor(&g, rm, mean_t.shape().to_vec()))?;
        self.replace_untracked(var_name, gpu::tensor(&g, rv, var_t.shape().to_vec()))?;
        Ok(y)
    }
}
