//! Batch normalisation over `[n, c, ...]` (statistics per channel over n and the spatial axes).

use scalarize_kernels::cpu;

use super::zeros;
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

impl Tensor {
    /// Batch norm of `self` `[n, c, ...]` with per-channel `gamma` and `beta` `[c]`.
    pub fn batch_norm(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        mode: BatchNormMode<'_>,
        eps: f32,
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
        let n = self.shape()[0];
        let hw = self.numel() / (n * c);
        match mode {
            BatchNormMode::Train {
                running_mean,
                running_var,
                momentum,
            } => {
                let (y, mean, invstd) = self.bn_train(gamma, beta, n, c, hw, eps)?;
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
                Ok(self.bn_record_train(gamma, beta, y, mean, invstd, (n, c, hw)))
            }
            BatchNormMode::TrainNoRunning => {
                let (y, mean, invstd) = self.bn_train(gamma, beta, n, c, hw, eps)?;
                Ok(self.bn_record_train(gamma, beta, y, mean, invstd, (n, c, hw)))
            }
            BatchNormMode::Eval {
                running_mean,
                running_var,
            } => self.bn_eval(gamma, beta, running_mean, running_var, (n, c, hw), eps),
        }
    }

    fn bn_train(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        n: usize,
        c: usize,
        hw: usize,
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let mut y = zeros(self.numel());
        let mut mean = zeros(c);
        let mut invstd = zeros(c);
        cpu::batch_norm_forward_train(
            n,
            c,
            hw,
            self.values(),
            gamma.values(),
            beta.values(),
            eps,
            &mut y,
            &mut mean,
            &mut invstd,
        )?;
        Ok((y, mean, invstd))
    }

    fn bn_record_train(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        y: Vec<f32>,
        mean: Vec<f32>,
        invstd: Vec<f32>,
        (n, c, hw): (usize, usize, usize),
    ) -> Tensor {
        let (x, g) = (self.detach(), gamma.detach());
        attach(
            "batch_norm_train",
            Tensor::from_parts(y, self.shape().to_vec()),
            &[self, gamma, beta],
            Box::new(move |dy, needs| {
                let mut dx = zeros(dy.len());
                let mut dgamma = zeros(c);
                let mut dbeta = zeros(c);
                cpu::batch_norm_backward(
                    n,
                    c,
                    hw,
                    x.values(),
                    dy,
                    g.values(),
                    &mean,
                    &invstd,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?;
                Ok(vec![
                    needs[0].then_some(dx),
                    needs[1].then_some(dgamma),
                    needs[2].then_some(dbeta),
                ])
            }),
        )
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
        let mut y = zeros(self.numel());
        cpu::batch_norm_forward_eval(
            n,
            c,
            hw,
            self.values(),
            gamma.values(),
            beta.values(),
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
                let zero_c = zeros(c);
                let mut grads = vec![None, None, None];
                if needs[0] {
                    let mut dx = zeros(dy.len());
                    cpu::batch_norm_forward_eval(
                        n,
                        c,
                        hw,
                        dy,
                        g.values(),
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
                    let mut xhat = zeros(dy.len());
                    cpu::batch_norm_forward_eval(
                        n,
                        c,
                        hw,
                        x.values(),
                        &ones,
                        &zero_c,
                        &rm,
                        &rv,
                        eps,
                        &mut xhat,
                    )?;
                    let mut prod = zeros(dy.len());
                    cpu::mul(dy, &xhat, &mut prod)?;
                    let mut dgamma = zeros(c);
                    cpu::bias_grad_channels(n, c, hw, &prod, &mut dgamma)?;
                    grads[1] = Some(dgamma);
                }
                if needs[2] {
                    let mut dbeta = zeros(c);
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
        let gamma = self.get(&format!("{prefix}.weight"))?.clone();
        let beta = self.get(&format!("{prefix}.bias"))?.clone();
        let (mean_name, var_name) = (
            format!("{prefix}.running_mean"),
            format!("{prefix}.running_var"),
        );
        if train {
            let (running_mean, running_var) = self.values_mut_pair(&mean_name, &var_name)?;
            x.batch_norm(
                &gamma,
                &beta,
                BatchNormMode::Train {
                    running_mean,
                    running_var,
                    momentum,
                },
                eps,
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
            x.batch_norm(
                &gamma,
                &beta,
                BatchNormMode::Eval {
                    running_mean,
                    running_var,
                },
                eps,
            )
        }
    }
}
