//! Concatenation, narrowing and splitting along one axis (cls-token selection, routing
//! sub-batches of different domains to different heads).

use scalarize_kernels::cpu;

use super::{expect_axis, split_at_axis, zeros};
use crate::error::{Result, invalid};
use crate::node::attach;
use crate::tensor::Tensor;

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
        let x = self.values()?;
        let mut y = Vec::with_capacity(outer * block);
        for o in 0..outer {
            y.extend_from_slice(&x[o * row + off..o * row + off + block]);
        }
        let mut shape = self.shape().to_vec();
        shape[axis] = len;
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
