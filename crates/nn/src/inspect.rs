//! The interop check's core (`scalarize inspect`): one training-mode forward and backward of
//! the weighted task loss on a batch from a file, with every logit, loss and gradient written
//! under its name, so another framework can be compared tensor by tensor.
//!
//! Batch file (safetensors): `images` F32 `[N, C, H, W]` and per head `t` a target
//! `labels.{t}`: I64 `[N]` (classifier), F32 `[N, A]` (binary attributes), I64 `[N, H, W]`
//! (dense, per-pixel classes) or F32 `[N, K, H, W]` (dense, regression with MSE).
//!
//! Output file: `logits.{t}` (the head output), `loss.{t}` (F32 scalar, shape `[]`), `loss`
//! (the weighted total), `grad.{name}` for every trainable parameter and `state.{name}` for
//! every BN running statistic after the forward; metadata `model`, `heads` and `weights`.

use std::collections::BTreeMap;
use std::path::Path;

use scalarize_autograd::Tensor;

use crate::checkpoint::{
    StTensor, TensorData, TensorRef, read_safetensors, write_safetensors_atomic,
};
use crate::error::{NnError, Result};
use crate::layout::InitOptions;
use crate::loss::{Target, head_loss, weighted_sum};
use crate::model::{Model, Routing};
use crate::spec::{HeadSpec, HeadsSpec, ModelSpec};

/// What [`inspect`] computed (also written to the output file).
#[derive(Clone, Debug, PartialEq)]
pub struct InspectReport {
    /// Mean loss of each head.
    pub losses: Vec<f32>,
    /// The task weights used.
    pub weights: Vec<f32>,
    /// `sum_t weights[t] * losses[t]`.
    pub total: f32,
    /// Number of gradient tensors written.
    pub num_grads: usize,
}

fn batch_err(path: &Path, msg: String) -> NnError {
    NnError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    }
}

fn target_for(
    path: &Path,
    t: usize,
    head: &HeadSpec,
    n: usize,
    hw: (usize, usize),
    tensor: &StTensor,
) -> Result<Target> {
    let key = format!("labels.{t}");
    let (h, w) = hw;
    let got = format!("{} {:?}", tensor.data.dtype_name(), tensor.shape);
    let target = match (head, &tensor.data) {
        (HeadSpec::Classifier { .. }, TensorData::I64(v)) if tensor.shape == [n] => {
            Target::Classes(v.clone())
        }
        (HeadSpec::Binary { attributes }, TensorData::F32(v))
            if tensor.shape == [n, *attributes] =>
        {
            Target::Attributes(v.clone())
        }
        (HeadSpec::Dense { .. }, TensorData::I64(v)) if tensor.shape == [n, h, w] => {
            Target::DenseClasses(v.clone())
        }
        (HeadSpec::Dense { channels }, TensorData::F32(v))
            if tensor.shape == [n, *channels, h, w] =>
        {
            Target::DenseValues(v.clone())
        }
        _ => {
            let want = match head {
                HeadSpec::Classifier { .. } => format!("I64 [{n}]"),
                HeadSpec::Binary { attributes } => format!("F32 [{n}, {attributes}]"),
                HeadSpec::Dense { channels } => {
                    format!("I64 [{n}, {h}, {w}] or F32 [{n}, {channels}, {h}, {w}]")
                }
            };
            return Err(batch_err(
                path,
                format!("`{key}` for head {t} (`{head}`) is {got}, expected {want}"),
            ));
        }
    };
    Ok(target)
}

/// Runs the interop check: builds `model`/`heads`, loads `checkpoint`, reads `batch`, runs one
/// training-mode forward and backward of `sum_t p_t * loss_t` (`weights` default uniform) and
/// writes logits, losses and gradients to `out` (atomically).
pub fn inspect(
    model: &str,
    heads: &str,
    checkpoint: &Path,
    batch: &Path,
    out: &Path,
    weights: Option<&[f32]>,
) -> Result<InspectReport> {
    let spec = ModelSpec::parse(model)?;
    let heads = HeadsSpec::parse(heads)?;
    let t_count = heads.len();
    let weights: Vec<f32> = match weights {
        Some(w) if w.len() == t_count => w.to_vec(),
        Some(w) => {
            return Err(NnError::invalid(
                "inspect",
                format!("{} weights given for {t_count} heads", w.len()),
            ));
        }
        None => vec![1.0 / t_count as f32; t_count],
    };
    let mut m = Model::new(spec, heads, InitOptions::default(), 0)?;
    m.load(checkpoint)?;
    m.set_train(true);

    let mut file = read_safetensors(batch)?;
    let images = match file.tensors.remove("images") {
        Some(StTensor {
            shape,
            data: TensorData::F32(v),
        }) if shape.len() == 4 => Tensor::new(v, &shape)?,
        Some(t) => {
            return Err(batch_err(
                batch,
                format!(
                    "`images` is {} {:?}, expected F32 [N, C, H, W]",
                    t.data.dtype_name(),
                    t.shape
                ),
            ));
        }
        None => return Err(batch_err(batch, "no `images` tensor".into())),
    };
    let (n, hw) = (images.shape()[0], (images.shape()[2], images.shape()[3]));
    let mut targets = Vec::with_capacity(t_count);
    for (t, head) in m.heads().0.iter().enumerate() {
        let tensor = file
            .tensors
            .get(&format!("labels.{t}"))
            .ok_or_else(|| batch_err(batch, format!("no `labels.{t}` for head {t} (`{head}`)")))?;
        targets.push(target_for(batch, t, head, n, hw, tensor)?);
    }

    let fwd = m.forward(&images, &Routing::AllHeads)?;
    let mut losses = Vec::with_capacity(t_count);
    for (o, target) in fwd.outputs.iter().zip(&targets) {
        losses.push(head_loss(&m.heads().0[o.head], &o.output, target)?);
    }
    let total = weighted_sum(&losses, &weights)?;
    let grads = total.backward()?;

    let loss_values: Vec<f32> = losses
        .iter()
        .map(|l| l.item())
        .collect::<std::result::Result<_, _>>()?;
    let total_value = total.item()?;
    let logits: Vec<(Vec<usize>, Vec<f32>)> = fwd
        .outputs
        .iter()
        .map(|o| (o.output.shape().to_vec(), o.output.to_vec()))
        .collect();
    let grad_values: Vec<(String, Vec<usize>, Vec<f32>)> = m
        .store()
        .trainable()
        .map(|e| {
            let g = grads
                .get(e.tensor())
                .map(|g| g.to_vec())
                .unwrap_or_else(|| vec![0.0; e.tensor().numel()]);
            (format!("grad.{}", e.name()), e.tensor().shape().to_vec(), g)
        })
        .collect();

    // BN running statistics after the training-mode forward (momentum 0.1), as PyTorch's
    // buffers are after the same forward.
    let buffer_values: Vec<(String, Vec<usize>, Vec<f32>)> = m
        .store()
        .buffers()
        .map(|e| {
            (
                format!("state.{}", e.name()),
                e.tensor().shape().to_vec(),
                e.tensor().to_vec(),
            )
        })
        .collect();
    let mut tensors: Vec<(String, Vec<usize>, TensorRef<'_>)> = Vec::new();
    for (t, (shape, v)) in logits.iter().enumerate() {
        tensors.push((format!("logits.{t}"), shape.clone(), TensorRef::F32(v)));
        tensors.push((
            format!("loss.{t}"),
            Vec::new(),
            TensorRef::F32(std::slice::from_ref(&loss_values[t])),
        ));
    }
    tensors.push((
        "loss".into(),
        Vec::new(),
        TensorRef::F32(std::slice::from_ref(&total_value)),
    ));
    for (name, shape, v) in grad_values.iter().chain(&buffer_values) {
        tensors.push((name.clone(), shape.clone(), TensorRef::F32(v)));
    }
    let meta = BTreeMap::from([
        ("model".to_string(), m.spec().to_string()),
        ("heads".to_string(), m.heads().to_string()),
        (
            "weights".to_string(),
            weights
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    write_safetensors_atomic(out, &tensors, &meta)?;
    Ok(InspectReport {
        losses: loss_values,
        weights,
        total: total_value,
        num_grads: grad_values.len(),
    })
}
