//! Concatenation along one axis and its inverse, split. Part i is viewed as [outer, inner_i];
//! the result is [outer, Σ inner_i].

use super::checks::{Numel, buf, numel};
use crate::error::{KernelError, Result};

/// Checks the parts (lengths `lens`) against their inner sizes, counting with `count` (shared
/// with the CUDA twin); returns the total width Σ inner_i.
pub(crate) fn check_parts(
    op: &'static str,
    count: Numel,
    outer: usize,
    lens: &[usize],
    inners: &[usize],
) -> Result<usize> {
    if lens.len() != inners.len() {
        return Err(KernelError::new(
            op,
            format!("{} parts but {} inner sizes", lens.len(), inners.len()),
        ));
    }
    if inners.is_empty() {
        return Err(KernelError::new(op, "empty tensor: no parts given"));
    }
    let mut width = 0usize;
    for (i, (&len, &inner)) in lens.iter().zip(inners).enumerate() {
        let expected = count(op, &[("outer", outer), ("inner", inner)])?;
        buf(
            op,
            &format!("parts[{i}]"),
            len,
            expected,
            format_args!("[outer={outer}, inner={inner}]"),
        )?;
        width += inner;
    }
    Ok(width)
}

/// y [outer, Σ inner_i] = the parts [outer, inner_i] side by side.
pub fn concat(outer: usize, parts: &[&[f32]], inners: &[usize], y: &mut [f32]) -> Result<()> {
    const OP: &str = "concat";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let width = check_parts(OP, numel, outer, &lens, inners)?;
    buf(
        OP,
        "y",
        y.len(),
        outer * width,
        format_args!("[outer={outer}, {width}]"),
    )?;
    for (o, yr) in y.chunks_mut(width).enumerate() {
        let mut at = 0;
        for (p, &inner) in parts.iter().zip(inners) {
            yr[at..at + inner].copy_from_slice(&p[o * inner..(o + 1) * inner]);
            at += inner;
        }
    }
    Ok(())
}

/// The inverse of `concat` (and its backward): cuts x [outer, Σ inner_i] into the parts.
pub fn split(outer: usize, x: &[f32], inners: &[usize], parts: &mut [&mut [f32]]) -> Result<()> {
    const OP: &str = "split";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let width = check_parts(OP, numel, outer, &lens, inners)?;
    buf(
        OP,
        "x",
        x.len(),
        outer * width,
        format_args!("[outer={outer}, {width}]"),
    )?;
    for (o, xr) in x.chunks(width).enumerate() {
        let mut at = 0;
        for (p, &inner) in parts.iter_mut().zip(inners) {
            p[o * inner..(o + 1) * inner].copy_from_slice(&xr[at..at + inner]);
            at += inner;
        }
    }
    Ok(())
}
