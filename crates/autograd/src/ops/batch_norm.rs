//! Batch normalisation over `[n, c, ...]` (statistics per channel over n and the spatial axes).

use scalarize_kernels::cpu;

use super::output;
use crate::error::{AutogradError, Result, invalid};
use crate::node::attach;
use crate::params::ParamStore;
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
        let hw = self.numel() / (n * c);
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
}
