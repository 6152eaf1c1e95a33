//! Matrix products: 2-D with optional transposes, and batched (attention).

use std::sync::Arc;

use scalarize_kernels::cpu;
use scalarize_kernels::cuda::{Gemm, Gpu, GpuBuffer, gemm};

use super::output;
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// `batch` device products C = op(A)·op(B) of sizes (m, k, n), contiguous matrices, into a
/// fresh buffer.
#[allow(clippy::too_many_arguments)]
fn gemm_on_gpu(
    g: &Gpu,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: &GpuBuffer<f32>,
    trans_a: bool,
    b: &GpuBuffer<f32>,
    trans_b: bool,
) -> Result<GpuBuffer<f32>> {
    let mut c = g.alloc::<f32>(batch * m * n)?;
    let p = Gemm::new(m, k, n).trans(trans_a, trans_b).batched(batch);
    gemm(g, &p, (a, 0), (b, 0), (&mut c, 0))?;
    Ok(c)
}

/// The device twin of [`matmul_grads`]: the same four products, each one batched GEMM.
#[allow(clippy::too_many_arguments)]
fn matmul_grads_on_gpu(
    g: &Arc<Gpu>,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: &GpuBuffer<f32>,
    trans_a: bool,
    b: &GpuBuffer<f32>,
    trans_b: bool,
    dc: &GpuBuffer<f32>,
    needs: &[bool],
) -> Result<Vec<Option<Storage>>> {
    let mut grads = vec![None, None];
    if needs[0] {
        let da = if trans_a {
            // A stored [k, m]: dA = op(B)·dCᵀ.
            gemm_on_gpu(g, batch, (k, n, m), b, trans_b, dc, true)?
        } else {
            // dA = dC·op(B)ᵀ.
            gemm_on_gpu(g, batch, (m, n, k), dc, false, b, !trans_b)?
        };
        grads[0] = Some(gpu::grad(g, da));
    }
    if needs[1] {
        let db = if trans_b {
            // B stored [n, k]: dB = dCᵀ·op(A).
            gemm_on_gpu(g, batch, (n, m, k), dc, true, a, trans_a)?
        } else {
            // dB = op(A)ᵀ·dC.
            gemm_on_gpu(g, batch, (k, m, n), a, !trans_a, dc, false)?
        };
        grads[1] = Some(gpu::grad(g, db));
    }
    Ok(grads)
}

/// Gradients of C = op(A)·op(B) for stored A and B, each product done by the kernel; `batch`
/// independent products of the given sizes (batch 1 for plain matmul).
#[allow(clippy::too_many_arguments)]
fn matmul_grads(
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    dc: &[f32],
    needs: &[bool],
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut grads = vec![None, None];
    if needs[0] {
        let mut da = output(batch * m * k);
        if trans_a {
            // A stored [k, m]: dA = op(B)·dCᵀ.
            cpu::matmul_batched(batch, k, n, m, b, trans_b, dc, true, &mut da, 1.0, 0.0)?;
        } else {
            // dA = dC·op(B)ᵀ.
            cpu::matmul_batched(batch, m, n, k, dc, false, b, !trans_b, &mut da, 1.0, 0.0)?;
        }
        grads[0] = Some(da);
    }
    if needs[1] {
        let mut db = output(batch * k * n);
        if trans_b {
            // B stored [n, k]: dB = dCᵀ·op(A).
            cpu::matmul_batched(batch, n, m, k, dc, true, a, trans_a, &mut db, 1.0, 0.0)?;
        } else {
            // dB = op(A)ᵀ·dC.
            cpu::matmul_batched(batch, k, m, n, a, !trans_a, dc, false, &mut db, 1.0, 0.0)?;
        }
        grads[1] = Some(db);
    }
    Ok(grads)
}

/// (rows, cols) of op(X) for a matrix stored as `shape` (last two axes).
fn op_dims(shape: &[usize], trans: bool) -> (usize, usize) {
    let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if trans { (c, r) } else { (r, c) }
}

impl Tensor {
    /// Matrix product of `[m, k]` and `[k, n]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_t(other, false, false)
    }

    /// `op(self)·op(other)` for 2-D tensors, where `op` transposes when its flag is set
    /// (e.g. `x.matmul_t(w, false, true)` is x·Wᵀ).
    pub fn matmul_t(&self, other: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        if self.rank() != 2 || other.rank() != 2 {
            return Err(invalid(
                "matmul",
                format!(
                    "shapes {:?} and {:?}: expected two rank-2 tensors",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        self.matmul_impl("matmul", other, trans_a, trans_b, 1, Vec::new())
    }

    /// Batched product: `[.., m, k]` times `[.., k, n]` with equal leading dimensions, with
    /// optional transposes of the last two axes of either operand (attention: q·kᵀ, p·v).
    pub fn bmm_t(&self, other: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let ok = self.rank() >= 3
            && other.rank() == self.rank()
            && self.shape()[..self.rank() - 2] == other.shape()[..other.rank() - 2];
        if !ok {
            return Err(invalid(
                "bmm",
                format!(
                    "shapes {:?} and {:?}: expected equal ranks of at least 3 with equal leading (batch) dimensions",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        let lead = self.shape()[..self.rank() - 2].to_vec();
        let batch = lead.iter().product();
        self.matmul_impl("bmm", other, trans_a, trans_b, batch, lead)
    }

    /// Batched product without transposes.
    pub fn bmm(&self, other: &Tensor) -> Result<Tensor> {
        self.bmm_t(other, false, false)
    }

    fn matmul_impl(
        &self,
        op: &'static str,
        other: &Tensor,
        trans_a: bool,
        trans_b: bool,
        batch: usize,
        lead: Vec<usize>,
    ) -> Result<Tensor> {
        let (m, k) = op_dims(self.shape(), trans_a);
        let (k2, n) = op_dims(other.shape(), trans_b);
        if k != k2 {
            return Err(invalid(
                op,
                format!(
                    "shapes {:?}{} and {:?}{}: inner dimensions {k} and {k2} differ",
                    self.shape(),
                    if trans_a { "ᵀ" } else { "" },
                    other.shape(),
                    if trans_b { "ᵀ" } else { "" },
                ),
            ));
        }
        let mut shape = lead;
        shape.extend([m, n]);
        if let Some(g) = gpu::gpu_of(op, &[self, other])? {
            let y = gemm_on_gpu(
                &g,
                batch,
                (m, k, n),
                gpu::buf(self)?,
                trans_a,
                gpu::buf(other)?,
                trans_b,
            )?;
            let (a, b) = (self.detach(), other.detach());
            return Ok(attach_any(
                op,
                gpu::tensor(&g, y, shape),
                &[self, other],
                Box::new(move |dy, needs| {
                    let dy = gpu::cotangent(op, dy)?;
                    matmul_grads_on_gpu(
                        &dy.gpu,
                        batch,
                        (m, k, n),
                        gpu::buf(&a)?,
                        trans_a,
                        gpu::buf(&b)?,
                        trans_b,
                        &dy.buf,
                        needs,
                    )
                }),
            ));
        }
        let mut y = output(batch * m * n);
        cpu::matmul_batched(
            batch,
            m,
            k,
            n,
            self.values()?,
            trans_a,
            other.values()?,
            trans_b,
            &mut y,
            1.0,
            0.0,
        )?;
        let (a, b) = (self.detach(), other.detach());
        Ok(attach(
            op,
            Tensor::from_parts(y, shape),
            &[self, other],
            Box::new(move |dy, needs| {
                matmul_grads(
                    batch,
                    (m, k, n),
                    a.values()?,
                    trans_a,
                    b.values()?,
                    trans_b,
                    dy,
                    needs,
                )
            }),
        ))
    }
}
