//! Shape changes: reshape (free: shares storage), permute and transpose (copies).

use scalarize_kernels::{cpu, cuda};

use super::zeros;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::storage::Storage;
use crate::tensor::{Tensor, numel_of};

impl Tensor {
    /// The same values viewed with another shape of equal element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = numel_of("reshape", shape)?;
        if n != self.numel() {
            return Err(invalid(
                "reshape",
                format!(
                    "cannot view shape {:?} ({} elements) as {shape:?} ({n} elements)",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        let out = self.view_untracked(shape.to_vec());
        // The gradient is the cotangent itself, on whichever device it is.
        Ok(attach_any(
            "reshape",
            out,
            &[self],
            Box::new(|dy, _| {
                Ok(vec![Some(match dy {
                    Storage::Cpu(v) => Storage::Cpu(v.clone()),
                    Storage::Cuda(c) => gpu::grad(&c.gpu, gpu::copy(&c.gpu, &c.buf)?),
                })])
            }),
        ))
    }

    /// Merges the axes from `axis` on into one: `[a, b, c, d].flatten_from(1)` is `[a, b·c·d]`.
    pub fn flatten_from(&self, axis: usize) -> Result<Tensor> {
        if axis >= self.rank() {
            return Err(invalid(
                "flatten_from",
                format!("axis {axis} out of range for shape {:?}", self.shape()),
            ));
        }
        let mut shape = self.shape()[..axis].to_vec();
        shape.push(self.shape()[axis..].iter().product());
        self.reshape(&shape)
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        let valid = perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} axes of shape {:?}",
                    self.shape()
                ),
            ));
        }
        let in_shape = self.shape().to_vec();
        let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
        if let Some(g) = gpu::gpu_of("permute", &[self])? {
            let mut y = g.alloc::<f32>(self.numel())?;
            cuda::permute::permute(&g, gpu::buf(self)?, &in_shape, perm, &mut y)?;
            let inv = cuda::permute::inverse_perm(perm);
            let dy_shape = out_shape.clone();
            return Ok(attach_any(
                "permute",
                gpu::tensor(&g, y, out_shape),
                &[self],
                Box::new(move |dy, _| {
                    let dy = gpu::cotangent("permute", dy)?;
                    let g = &dy.gpu;
                    let mut dx = g.alloc::<f32>(dy.buf.len())?;
                    cuda::permute::permute(g, &dy.buf, &dy_shape, &inv, &mut dx)?;
                    Ok(vec![Some(gpu::grad(g, dx))])
                }),
            ));
        }
        let mut y = zeros(self.numel());
        cpu::permute(self.values()?, &in_shape, perm, &mut y)?;
        let inv = cpu::inverse_perm(perm);
        let dy_shape = out_shape.clone();
        Ok(attach(
            "permute",
            Tensor::from_parts(y, out_shape),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(dy.len());
                cpu::permute(dy, &dy_shape, &inv, &mut dx)?;
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Swaps axes `a` and `b`.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        if a >= self.rank() || b >= self.rank() {
            return Err(invalid(
                "transpose",
                format!("axes ({a}, {b}) out of range for shape {:?}", self.shape()),
            ));
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }
}
