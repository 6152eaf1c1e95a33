//! Elementwise add / sub / mul / scale and broadcast bias additions.

use scalarize_kernels::cpu;

use super::{expect_same_shape, output};
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

impl Tensor {
    /// `self + other` (same shapes).
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("add", self, other)?;
        let mut y = output(self.numel());
        cpu::add(self.values(), other.values(), &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add",
            out,
            &[self, other],
            Box::new(|dy, needs| Ok(needs.iter().map(|&n| n.then(|| dy.to_vec())).collect())),
        ))
    }

    /// `self - other` (same shapes).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("sub", self, other)?;
        let mut y = output(self.numel());
        cpu::sub(self.values(), other.values(), &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "sub",
            out,
            &[self, other],
            Box::new(|dy, needs| {
                let da = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(dy.len());
                    cpu::scale(dy, -1.0, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![da, db])
            }),
        ))
    }

    /// Elementwise product `self ⊙ other` (same shapes).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("mul", self, other)?;
        let mut y = output(self.numel());
        cpu::mul(self.values(), other.values(), &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        let (a, b) = (self.detach(), other.detach());
        Ok(attach(
            "mul",
            out,
            &[self, other],
            Box::new(move |dy, needs| {
                let mut grads = vec![None, None];
                if needs[0] {
                    let mut g = output(dy.len());
                    cpu::mul(dy, b.values(), &mut g)?;
                    grads[0] = Some(g);
                }
                if needs[1] {
                    let mut g = output(dy.len());
                    cpu::mul(dy, a.values(), &mut g)?;
                    grads[1] = Some(g);
                }
                Ok(grads)
            }),
        ))
    }

    /// `s · self`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        let mut y = output(self.numel());
        cpu::scale(self.values(), s, &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "scale",
            out,
            &[self],
            Box::new(move |dy, _| {
                let mut g = output(dy.len());
                cpu::scale(dy, s, &mut g)?;
                Ok(vec![Some(g)])
            }),
        ))
    }

    /// Adds `bias` broadcast over the leading axes: `bias`'s shape, with leading 1s dropped,
    /// must equal the trailing dimensions of `self` (a per-feature bias `[D]` on `[.., D]`, or
    /// a position embedding `[1, T, D]` on `[B, T, D]`).
    pub fn add_bias(&self, bias: &Tensor) -> Result<Tensor> {
        let b_shape: &[usize] = {
            let s = bias.shape();
            let first = s.iter().position(|&d| d != 1).unwrap_or(s.len());
            &s[first..]
        };
        let fits = b_shape.len() <= self.rank() && self.shape().ends_with(b_shape);
        if !fits {
            return Err(invalid(
                "add_bias",
                format!(
                    "bias shape {:?} must match the trailing dimensions of input shape {:?}",
                    bias.shape(),
                    self.shape()
                ),
            ));
        }
        let dim = bias.numel();
        let rows = self.numel() / dim;
        let mut y = output(self.numel());
        cpu::add_bias_rows(rows, dim, self.values(), bias.values(), &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add_bias",
            out,
            &[self, bias],
            Box::new(move |dy, needs| {
                let dx = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(dim);
                    cpu::bias_grad_rows(rows, dim, dy, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![dx, db])
            }),
        ))
    }

    /// Adds a per-channel `bias` `[C]` to `self` `[N, C, ...]` (NCHW layout).
    pub fn add_channel_bias(&self, bias: &Tensor) -> Result<Tensor> {
        if self.rank() < 2 || bias.numel() != self.shape()[1] || bias.rank() != 1 {
            return Err(invalid(
                "add_channel_bias",
                format!(
                    "input shape {:?} and bias shape {:?}: expected input [N, C, ...] and bias [C]",
                    self.shape(),
                    bias.shape()
                ),
            ));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let hw = self.numel() / (n * c);
        let mut y = output(self.numel());
        cpu::add_bias_channels(n, c, hw, self.values(), bias.values(), &mut y)?;
        let out = Tensor::from_parts(y, self.shape().to_vec());
        Ok(attach(
            "add_channel_bias",
            out,
            &[self, bias],
            Box::new(move |dy, needs| {
                let dx = needs[0].then(|| dy.to_vec());
                let db = if needs[1] {
                    let mut g = output(c);
                    cpu::bias_grad_channels(n, c, hw, dy, &mut g)?;
                    Some(g)
                } else {
                    None
                };
                Ok(vec![dx, db])
            }),
        ))
    }
}
