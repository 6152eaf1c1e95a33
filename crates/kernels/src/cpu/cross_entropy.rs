//! Cross-entropy with logits (softmax over classes, integer targets, ignore_index) and
//! binary cross-entropy with logits (sigmoid, float targets).

use super::checks::{Numel, buf, numel, same_len};
use super::softmax::per_row;
use crate::error::{KernelError, Result};

/// Checks every target against `classes` (or `ignore_index`) and returns how many rows count;
/// the CUDA side calls it on the host before its one upload of the targets.
pub(crate) fn check_targets(
    op: &'static str,
    classes: usize,
    targets: &[i64],
    ignore_index: i64,
) -> Result<usize> {
    let mut valid = 0;
    for (row, &t) in targets.iter().enumerate() {
        if t == ignore_index {
            continue;
        }
        if t < 0 || t as u64 >= classes as u64 {
            return Err(KernelError::new(
                op,
                format!(
                    "target {t} of row {row} is outside [0, {classes}) and is not ignore_index {ignore_index}"
                ),
            ));
        }
        valid += 1;
    }
    Ok(valid)
}

/// Checks logits [rows, classes], targets [rows] and the output `(name, length, per_row)`
/// ([rows] when `per_row`, else [rows, classes]), counting with `count` (shared with the CUDA
/// twin).
pub(crate) fn check_ce(
    op: &'static str,
    count: Numel,
    rows: usize,
    classes: usize,
    logits_len: usize,
    targets_len: usize,
    (out_name, out_len, out_per_row): (&str, usize, bool),
) -> Result<()> {
    let total = count(op, &[("rows", rows), ("classes", classes)])?;
    let shape = format_args!("[rows={rows}, classes={classes}]");
    buf(op, "logits", logits_len, total, shape)?;
    buf(
        op,
        "targets",
        targets_len,
        rows,
        format_args!("[rows={rows}]"),
    )?;
    if out_per_row {
        buf(op, out_name, out_len, rows, format_args!("[rows={rows}]"))
    } else {
        buf(op, out_name, out_len, total, shape)
    }
}

/// Max-subtracted log-sum-exp of a row.
fn log_sum_exp(row: &[f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f32 = row.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

/// losses[r] = −log softmax(logits[r])[targets[r]] (0 for rows whose target is
/// `ignore_index`); returns the number of rows that were not ignored.
pub fn cross_entropy_forward(
    rows: usize,
    classes: usize,
    logits: &[f32],
    targets: &[i64],
    ignore_index: i64,
    losses: &mut [f32],
) -> Result<usize> {
    const OP: &str = "cross_entropy_forward";
    let out = ("losses", losses.len(), true);
    check_ce(OP, numel, rows, classes, logits.len(), targets.len(), out)?;
    let valid = check_targets(OP, classes, targets, ignore_index)?;
    for (r, l) in losses.iter_mut().enumerate() {
        let t = targets[r];
        if t == ignore_index {
            *l = 0.0;
            continue;
        }
        let row = &logits[r * classes..(r + 1) * classes];
        let lse = log_sum_exp(row);
        *l = lse - row[t as usize];
    }
    Ok(valid)
}

/// dlogits = scale·(softmax − onehot(target)), zero rows for ignored targets (overwritten).
/// For mean reduction pass scale = dL/valid.
pub fn cross_entropy_backward(
    rows: usize,
    classes: usize,
    logits: &[f32],
    targets: &[i64],
    ignore_index: i64,
    scale: f32,
    dlogits: &mut [f32],
) -> Result<()> {
    const OP: &str = "cross_entropy_backward";
    let out = ("dlogits", dlogits.len(), false);
    check_ce(OP, numel, rows, classes, logits.len(), targets.len(), out)?;
    check_targets(OP, classes, targets, ignore_index)?;
    per_row(dlogits, classes, |dr, r| {
        let t = targets[r];
        if t == ignore_index {
            dr.fill(0.0);
            return;
        }
        let row = &logits[r * classes..(r + 1) * classes];
        let lse = log_sum_exp(row);
        for (d, &v) in dr.iter_mut().zip(row) {
            *d = scale * (v - lse).exp();
        }
        dr[t as usize] -= scale;
    });
    Ok(())
}

/// Elementwise BCE with logits: losses = max(x, 0) − x·t + log(1 + e^{−|x|}).
pub fn bce_with_logits_forward(x: &[f32], targets: &[f32], losses: &mut [f32]) -> Result<()> {
    same_len(
        "bce_with_logits_forward",
        &[
            ("x", x.len()),
            ("targets", targets.len()),
            ("losses", losses.len()),
        ],
    )?;
    for ((l, &v), &t) in losses.iter_mut().zip(x).zip(targets) {
        *l = v.max(0.0) - v * t + (-v.abs()).exp().ln_1p();
    }
    Ok(())
}

/// Backward of BCE with logits: dx = scale·(σ(x) − t) (overwritten).
pub fn bce_with_logits_backward(
    x: &[f32],
    targets: &[f32],
    scale: f32,
    dx: &mut [f32],
) -> Result<()> {
    same_len(
        "bce_with_logits_backward",
        &[("x", x.len()), ("targets", targets.len()), ("dx", dx.len())],
    )?;
    for ((d, &v), &t) in dx.iter_mut().zip(x).zip(targets) {
        *d = scale * (sigmoid(v) - t);
    }
    Ok(())
}

/// Numerically stable logistic function.
fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}
