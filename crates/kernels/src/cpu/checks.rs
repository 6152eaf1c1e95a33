//! Shape and length checks shared by the CPU kernels: every failure names the op and the shapes.

use crate::error::{KernelError, Result};
use std::fmt;

/// Element counts above this are split across rayon threads; below it the spawn costs more
/// than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Returns the product of `dims`, refusing a zero dimension ("empty") and overflow.
pub(crate) fn numel(op: &'static str, dims: &[(&str, usize)]) -> Result<usize> {
    let mut total: usize = 1;
    for &(name, d) in dims {
        if d == 0 {
            return Err(KernelError::new(
                op,
                format!(
                    "empty tensor: dimension `{name}` is 0 (shape {})",
                    show(dims)
                ),
            ));
        }
        total = total.checked_mul(d).ok_or_else(|| {
            KernelError::new(op, format!("shape {} has too many elements", show(dims)))
        })?;
    }
    Ok(total)
}

/// [`numel`] for device kernels, which index with i64: a count past `i64::MAX` is refused too.
pub(crate) fn numel_i64(op: &'static str, dims: &[(&str, usize)]) -> Result<usize> {
    let total = numel(op, dims)?;
    if i64::try_from(total).is_err() {
        return Err(KernelError::new(
            op,
            format!("shape {} has too many elements", show(dims)),
        ));
    }
    Ok(total)
}

/// How an op counts a shape's elements: [`numel`] on the CPU, [`numel_i64`] on the device;
/// the checks shared by an op and its CUDA twin take it so that each side keeps its limit.
pub(crate) type Numel = fn(&'static str, &[(&str, usize)]) -> Result<usize>;

/// Checks that buffer `name` has `expected` elements; `shape` describes the expected shape.
pub(crate) fn buf(
    op: &'static str,
    name: &str,
    got: usize,
    expected: usize,
    shape: fmt::Arguments<'_>,
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::new(
            op,
            format!("buffer `{name}` has {got} elements, expected {expected} (shape {shape})"),
        ))
    }
}

/// Counts `dims` with `count`, then checks that each of `bufs` (name, length) holds that many
/// elements (the shape shown as `[name=d, ...]`); returns the count.
pub(crate) fn shaped(
    op: &'static str,
    count: Numel,
    dims: &[(&str, usize)],
    bufs: &[(&str, usize)],
) -> Result<usize> {
    let total = count(op, dims)?;
    let shape = show(dims);
    for &(name, len) in bufs {
        buf(op, name, len, total, format_args!("{shape}"))?;
    }
    Ok(total)
}

/// Checks that two buffers have the same non-zero length.
pub(crate) fn same_len(op: &'static str, names: &[(&str, usize)]) -> Result<usize> {
    let Some(&(first, n)) = names.first() else {
        return Err(KernelError::new(op, "no buffers given"));
    };
    if n == 0 {
        return Err(KernelError::new(
            op,
            format!("empty tensor: `{first}` has 0 elements"),
        ));
    }
    for &(name, len) in &names[1..] {
        if len != n {
            return Err(KernelError::new(
                op,
                format!(
                    "buffer `{name}` has {len} elements, expected {n} (the length of `{first}`)"
                ),
            ));
        }
    }
    Ok(n)
}

fn show(dims: &[(&str, usize)]) -> String {
    let inner: Vec<String> = dims.iter().map(|(n, d)| format!("{n}={d}")).collect();
    format!("[{}]", inner.join(", "))
}
