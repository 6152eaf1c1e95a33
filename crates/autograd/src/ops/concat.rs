//! Concatenation, narrowing and splitting along one axis (cls-token selection, routing
//! sub-batches of different domains to different heads).

use std::sync::Arc;

use scalarize_kernels::cuda::{Gpu, GpuBuffer};
use scalarize_kernels::{cpu, cuda};

use super::{expect_axis, split_at_axis, zeros};
use crate::error::{Result, invalid};
use crate::gpu;
use crate::node::{attach, attach_any};
use crate::tensor::Tensor;

/// `concat` on the device: one strided copy per part; the backward cuts the cotangent back
/// into the parts that need a gradient.
fn concat_on_gpu(
    parts: &[&Tensor],
    g: Arc<Gpu>,
    outer: usize,
    inners: Vec<usize>,
    shape: Vec<usize>,
) -> Result<Tensor> {
    let bufs: Vec<&GpuBuffer<f32>> = parts.iter().map(|p| gpu::buf(p)).collect::<Result<_>>()?;
    let mut y = g.alloc::<f32>(outer * inners.iter().sum::<usize>())?;
    cuda::concat::concat(&g, outer, &bufs, &inners, &mut y)?;
    Ok(attach_any(
        "concat",
        gpu::tensor(&g, y, shape),
        parts,
        Box::new(move |dy, needs| {
            let dy = gpu::cotangent("concat", dy)?;
            let g = &dy.gpu;
            if needs.iter().all(|&n| n) {
                // Every part: one split writes them all.
                let mut grads: Vec<GpuBuffer<f32>> = inners
                    .iter()
                    .map(|&i| g.alloc::<f32>(outer * i))
                    .collect::<std::result::Result<_, _>>()?;
                {
                    let mut views: Vec<&mut GpuBuffer<f32>> = grads.iter_mut().collect();
                    cuda::concat::split(g, outer, &dy.buf, &inners, &mut views)?;
                }
                return Ok(grads.into_iter().map(|b| Some(gpu::grad(g, b))).collect());
            }
            // Only some parts: slice out just those.
            let width: usize = inners.iter().sum();
            let mut start = 0;
            let mut out = Vec::with_capacity(inners.len());
            for (&inner, &need) in inners.iter().zip(needs) {
                out.push(if need {
                    let mut b = g.alloc::<f32>(outer * inner)?;
                    cuda::concat::narrow(g, outer, width, start, inner, &dy.buf, &mut b)?;
                    Some(gpu::grad(g, b))
                } else {
                    None
                });
                start += inner;
            }
            Ok(out)
        }),
    ))
}

/// Maximal runs of consecutive indices: (first index, position in `indices`, length).
fn runs(indices: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (k, &i) in indices.iter().enumerate() {
        match out.last_mut() {
            Some((first, _, len)) if *first + *len == i => *len += 1,
            _ => out.push((i, k, 1)),
        }
    }
    out
}

/// `select_rows` on the device: one device copy per run of consecutive indices. The backward
/// writes each row's first use with copies, then adds later uses (repeated indices) one
/// occurrence at a time, in index order like the CPU.
fn select_rows_on_gpu(x: &Tensor, g: Arc<Gpu>, indices: &[usize], row: usize) -> Result<Tensor> {
    let rows = x.shape()[0];
    let xb = gpu::buf(x)?;
    let mut y = g.alloc::<f32>(indices.len() * row)?;
    for (first, at, len) in runs(indices) {
        g.copy(xb, first * row, &mut y, at * row, len * row)?;
    }
    let mut shape = x.shape().to_vec();
    shape[0] = indices.len();
    // Occurrence layers: layer j holds (k, i) for the j-th use of source row i.
    let mut seen = vec![0usize; rows];
    let mut layers: Vec<Vec<(usize, usize)>> = Vec::new();
    for (k, &i) in indices.iter().enumerate() {
        let j = seen[i];
        seen[i] += 1;
        if layers.len() == j {
            layers.push(Vec::new());
        }
        layers[j].push((k, i));
    }
    Ok(attach_any(
        "select_rows",
        gpu::tensor(&g, y, shape),
        &[x],
        Box::new(move |dy, _| {
            let dy = gpu::cotangent("select_rows", dy)?;
            let g = &dy.gpu;
            let mut dx = g.zeros::<f32>(rows * row)?;
            for (j, layer) in layers.iter().enumerate() {
                if j == 0 {
                    let (src, dst): (Vec<usize>, Vec<usize>) = layer.iter().copied().unzip();
                    // Runs consecutive on both sides become one copy.
                    let mut k = 0;
                    while k < layer.len() {
                        let mut len = 1;
                        while k + len < layer.len()
                            && src[k + len] == src[k] + len
                            && dst[k + len] == dst[k] + len
                        {
                            len += 1;
                        }
                        g.copy(&dy.buf, src[k] * row, &mut dx, dst[k] * row, len * row)?;
                        k += len;
                    }
                    continue;
                }
                // Gather the repeated rows' cotangents and current sums, add, scatter back.
                let m = layer.len() * row;
                let (mut add, mut acc) = (g.alloc::<f32>(m)?, g.alloc::<f32>(m)?);
                for (p, &(k, i)) in layer.iter().enumerate() {
                    g.copy(&dy.buf, k * row, &mut add, p * row, row)?;
                    g.copy(&dx, i * row, &mut acc, p * row, row)?;
                }
                cuda::elementwise::axpy_acc(g, 1.0, &add, &mut acc)?;
                for (p, &(_, i)) in layer.iter().enumerate() {
                    g.copy(&acc, p * row, &mut dx, i * row, row)?;
                }
            }
            Ok(vec![Some(gpu::grad(g, dx))])
        }),
    ))
}

impl Tensor {
    /// Joins `parts` along `axis`; all other dimensions must agree.
    pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| invalid("concat", "no tensor given, expected at least one"))?;
        expect_axis("concat", first, axis)?;
        for (i, p) in parts.iter().enumerate() {
            let same_rank = p.rank() == first.rank();
            let same_other = same_rank
                && p.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same_other {
                return Err(invalid(
                    "concat",
                    format!(
                        "part {i} has shape {:?}, expected shape {:?} except along axis {axis}",
                        p.shape(),
                        first.shape()
                    ),
                ));
            }
        }
        let (outer, _, inner) = split_at_axis(first.shape(), axis);
        let inners: Vec<usize> = parts.iter().map(|p| p.shape()[axis] * inner).collect();
        if let Some(g) = gpu::gpu_of("concat", parts)? {
            let mut shape = first.shape().to_vec();
            shape[axis] = parts.iter().map(|p| p.shape()[axis]).sum();
            return concat_on_gpu(parts, g, outer, inners, shape);
        }
        let slices: Vec<&[f32]> = parts.iter().map(|p| p.values()).collect::<Result<_>>()?;
        let total: usize = parts.iter().map(|p| p.numel()).sum();
        let mut y = zeros(total);
        cpu::concat(outer, &slices, &inners, &mut y)?;
        let mut shape = first.shape().to_vec();
        shape[axis] = parts.iter().map(|p| p.shape()[axis]).sum();
        Ok(attach(
            "concat",
            Tensor::from_parts(y, shape),
            parts,
            Box::new(move |dy, needs| {
                let mut bufs: Vec<Vec<f32>> = inners.iter().map(|&i| zeros(outer * i)).collect();
                {
                    let mut views: Vec<&mut [f32]> =
                        bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                    cpu::split(outer, dy, &inners, &mut views)?;
                }
                Ok(bufs
                    .into_iter()
                    .zip(needs)
                    .map(|(b, &n)| n.then_some(b))
                    .collect())
            }),
        ))
    }

    /// The slice `start..start + len` along `axis` (a copy).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        expect_axis("narrow", self, axis)?;
        let (outer, full, inner) = split_at_axis(self.shape(), axis);
        if len == 0 || start.checked_add(len).is_none_or(|end| end > full) {
            return Err(invalid(
                "narrow",
                format!(
                    "range {start}..{} along axis {axis} of shape {:?}: expected a non-empty range within 0..{full}",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        // Pure data movement: one contiguous block per outer index.
        let (row, block, off) = (full * inner, len * inner, start * inner);
        let mut shape = self.shape().to_vec();
        shape[axis] = len;
        if let Some(g) = gpu::gpu_of("narrow", &[self])? {
            let mut y = g.alloc::<f32>(outer * block)?;
            cuda::concat::narrow(&g, outer, row, off, block, gpu::buf(self)?, &mut y)?;
            return Ok(attach_any(
                "narrow",
                gpu::tensor(&g, y, shape),
                &[self],
                Box::new(move |dy, _| {
                    let dy = gpu::cotangent("narrow", dy)?;
                    let g = &dy.gpu;
                    let mut dx = g.zeros::<f32>(outer * row)?;
                    cuda::concat::narrow_backward(g, outer, row, off, block, &dy.buf, &mut dx)?;
                    Ok(vec![Some(gpu::grad(g, dx))])
                }),
            ));
        }
        let x = self.values()?;
        let mut y = Vec::with_capacity(outer * block);
        for o in 0..outer {
            y.extend_from_slice(&x[o * row + off..o * row + off + block]);
        }
        Ok(attach(
            "narrow",
            Tensor::from_parts(y, shape),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(outer * row);
                for o in 0..outer {
                    dx[o * row + off..o * row + off + block]
                        .copy_from_slice(&dy[o * block..(o + 1) * block]);
                }
                Ok(vec![Some(dx)])
            }),
        ))
    }

    /// Cuts `self` along `axis` into consecutive pieces of the given sizes (which must add up
    /// to the axis length).
    pub fn split(&self, axis: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        expect_axis("split", self, axis)?;
        let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
        if total != Some(self.shape()[axis]) || sizes.contains(&0) {
            return Err(invalid(
                "split",
                format!(
                    "sizes {sizes:?} along axis {axis} of shape {:?}: expected non-zero sizes summing to {}",
                    self.shape(),
                    self.shape()[axis]
                ),
            ));
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(axis, start, s)?);
            start += s;
        }
        Ok(out)
    }

    /// Rows `indices` of `self` along axis 0, in that order, repeats allowed (routing samples
    /// of one domain or task that are not contiguous in the batch). Pure data movement; the
    /// backward adds each output row's gradient back to its source row.
    pub fn select_rows(&self, indices: &[usize]) -> Result<Tensor> {
        if self.rank() == 0 || indices.is_empty() {
            return Err(invalid(
                "select_rows",
                format!(
                    "{} indices into shape {:?}: expected at least one index and rank >= 1",
                    indices.len(),
                    self.shape()
                ),
            ));
        }
        let rows = self.shape()[0];
        if let Some(&bad) = indices.iter().find(|&&i| i >= rows) {
            return Err(invalid(
                "select_rows",
                format!(
                    "index {bad} out of range for shape {:?} (rows 0..{rows})",
                    self.shape()
                ),
            ));
        }
        let row = self.numel() / rows;
        if let Some(g) = gpu::gpu_of("select_rows", &[self])? {
            return select_rows_on_gpu(self, g, indices, row);
        }
        let x = self.values()?;
        let mut y = Vec::with_capacity(indices.len() * row);
        for &i in indices {
            y.extend_from_slice(&x[i * row..(i + 1) * row]);
        }
        let mut shape = self.shape().to_vec();
        shape[0] = indices.len();
        let idx = indices.to_vec();
        Ok(attach(
            "select_rows",
            Tensor::from_parts(y, shape),
            &[self],
            Box::new(move |dy, _| {
                let mut dx = zeros(rows * row);
                for (k, &i) in idx.iter().enumerate() {
                    cpu::axpy_acc(
                        1.0,
                        &dy[k * row..(k + 1) * row],
                        &mut dx[i * row..(i + 1) * row],
                    )?;
                }
                Ok(vec![Some(dx)])
            }),
        ))
    }
}
