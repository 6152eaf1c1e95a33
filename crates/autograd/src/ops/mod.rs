//! The recorded ops, one concept per file. Each computes its forward with a kernel from
//! `scalarize_kernels::cpu` and records a hand-written backward that calls kernels too.

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod upsample;
pub mod weighted_loss;

use crate::error::{Result, invalid};
use crate::tensor::Tensor;

/// A zero-filled buffer, for kernels that accumulate into their output. The first call tunes
/// the allocator to keep freed buffers for reuse (see
/// `scalarize_kernels::cpu::keep_freed_buffers`).
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    scalarize_kernels::cpu::keep_freed_buffers();
    crate::pool::fresh(n)
}

/// A buffer for a kernel that overwrites every element (recycled; see [`crate::pool`]).
pub(crate) use crate::pool::for_overwrite as output;

/// Requires `t` to have exactly `rank` dimensions.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() == rank {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!(
                "{what} has shape {:?} (rank {}), expected rank {rank}",
                t.shape(),
                t.rank()
            ),
        ))
    }
}

/// Requires `a` and `b` to have the same shape.
pub(crate) fn expect_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!(
                "shapes {:?} and {:?} differ, expected equal shapes",
                a.shape(),
                b.shape()
            ),
        ))
    }
}

/// Requires `axis < rank`.
pub(crate) fn expect_axis(op: &'static str, t: &Tensor, axis: usize) -> Result<()> {
    if axis < t.rank() {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!("axis {axis} out of range for shape {:?}", t.shape()),
        ))
    }
}

/// (outer, len, inner) view of `shape` around `axis`.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}
