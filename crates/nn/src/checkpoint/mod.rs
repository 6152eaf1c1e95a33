//! Safetensors checkpoints: every parameter and BN running statistic under its PyTorch-style
//! name, the optimizer state as `optim.momentum.{p}` / `optim.exp_avg.{p}` /
//! `optim.exp_avg_sq.{p}`, and in the header metadata the format tag, model spec, heads,
//! step, optimizer config (JSON) and any caller entries.
//!
//! Loading validates the file against the model's [`Layout`] and reports *all* missing,
//! extra, wrongly shaped and wrongly typed tensors in one error naming the file. A file
//! without scalarize metadata (e.g. a PyTorch `state_dict` saved with `safetensors.torch`)
//! loads too, with step 0 and no optimizer state; its BN `num_batches_tracked` counters are
//! ignored.

pub mod io;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layout::Layout;
use crate::optim::{
    EXP_AVG_PREFIX, EXP_AVG_SQ_PREFIX, MOMENTUM_PREFIX, Optimizer, OptimizerConfig,
};
pub use io::{StFile, StTensor, TensorData, TensorRef, read_safetensors, write_safetensors_atomic};

/// Value of the `format` metadata entry.
pub const FORMAT: &str = "scalarize-checkpoint-v1";
/// Metadata keys written by [`save_checkpoint`]; caller entries may not use them.
pub const RESERVED_KEYS: [&str; 5] = ["format", "model", "heads", "step", "optimizer"];

/// The optimizer part of the metadata (JSON under the `optimizer` key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerMeta {
    /// Optimizer kind and hyperparameters.
    pub config: OptimizerConfig,
    /// Whether biases, norms and embeddings skip weight decay.
    pub no_decay_norm_bias: bool,
    /// Per-parameter AdamW step counts (empty for SGD).
    #[serde(default)]
    pub param_steps: BTreeMap<String, u64>,
}

/// What the header metadata says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMeta {
    /// Canonical model spec (empty if the file did not say).
    pub model: String,
    /// Canonical heads spec (empty if the file did not say).
    pub heads: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// Optimizer, if its state was saved.
    pub optimizer: Option<OptimizerMeta>,
    /// Other entries (caller metadata such as PBT hyperparameters).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    fn from_map(path: &Path, map: &BTreeMap<String, String>) -> Result<Self> {
        let err = |msg: String| NnError::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        if let Some(f) = map.get("format")
            && f != FORMAT
        {
            return Err(err(format!(
                "metadata format is `{f}`, this version reads `{FORMAT}`"
            )));
        }
        let step = match map.get("step") {
            None => 0,
            Some(s) => s
                .parse()
                .map_err(|_| err(format!("metadata `step` is `{s}`, expected an integer")))?,
        };
        let optimizer = match map.get("optimizer") {
            None => None,
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| err(format!("metadata `optimizer` is not valid: {e}")))?,
            ),
        };
        let extra = map
            .iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(CheckpointMeta {
            model: map.get("model").cloned().unwrap_or_default(),
            heads: map.get("heads").cloned().unwrap_or_default(),
            step,
            optimizer,
            extra,
        })
    }
}

/// Saves a checkpoint atomically. `values[i]` holds the values of `layout.params[i]`.
#[allow(clippy::too_many_arguments)]
pub fn save_checkpoint(
    path: &Path,
    model: &str,
    heads: &str,
    layout: &Layout,
    values: &[&[f32]],
    optimizer: Option<&Optimizer>,
    step: u64,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let err = |msg: String| NnError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if values.len() != layout.params.len() {
        return Err(err(format!(
            "{} value buffers given for {} tensors",
            values.len(),
            layout.params.len()
        )));
    }
    if let Some(k) = extra.keys().find(|k| RESERVED_KEYS.contains(&k.as_str())) {
        return Err(err(format!(
            "caller metadata may not use the reserved key `{k}`"
        )));
    }
    let mut tensors: Vec<(String, Vec<usize>, TensorRef<'_>)> = Vec::new();
    for (p, v) in layout.params.iter().zip(values) {
        tensors.push((p.name.clone(), p.shape.clone(), TensorRef::F32(v)));
    }
    let mut meta = extra.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("model".into(), model.into());
    meta.insert("heads".into(), heads.into());
    meta.insert("step".into(), step.to_string());
    if let Some(opt) = optimizer {
        for (name, v) in opt.state_tensors() {
            let param = name
                .strip_prefix(MOMENTUM_PREFIX)
                .or_else(|| name.strip_prefix(EXP_AVG_SQ_PREFIX))
                .or_else(|| name.strip_prefix(EXP_AVG_PREFIX))
                .unwrap_or(&name);
            let shape = match layout.get(param) {
                Some(p) if p.numel() == v.len() => p.shape.clone(),
                _ => {
                    return Err(err(format!(
                        "optimizer state `{name}` does not match any parameter of the model"
                    )));
                }
            };
            tensors.push((name, shape, TensorRef::F32(v)));
        }
        let om = OptimizerMeta {
            config: *opt.config(),
            no_decay_norm_bias: opt.no_decay_norm_bias(),
            param_steps: opt.param_steps(),
        };
        meta.insert(
            "optimizer".into(),
            serde_json::to_string(&om).map_err(|e| err(e.to_string()))?,
        );
    }
    write_safetensors_atomic(path, &tensors, &meta)
}

/// A checkpoint validated against a layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedCheckpoint {
    /// Header metadata.
    pub meta: CheckpointMeta,
    /// Values of `layout.params[i]`, in layout order.
    pub values: Vec<Vec<f32>>,
    /// Optimizer state tensors by name (`optim.*`).
    pub optimizer_tensors: BTreeMap<String, Vec<f32>>,
}

impl LoadedCheckpoint {
    /// Rebuilds the saved optimizer with its state (`None` if none was saved).
    pub fn optimizer(&self) -> Result<Option<Optimizer>> {
        let Some(om) = &self.meta.optimizer else {
            return Ok(None);
        };
        let mut opt = Optimizer::new(om.config, om.no_decay_norm_bias)?;
        opt.load_state(&self.optimizer_tensors, &om.param_steps)?;
        Ok(Some(opt))
    }
}

/// Reads only the metadata (e.g. to build the model a checkpoint was written for).
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    let file = read_safetensors(path)?;
    CheckpointMeta::from_map(path, &file.metadata)
}

/// Loads a checkpoint for `layout`; the error lists every missing, extra, wrongly shaped and
/// wrongly typed tensor.
pub fn load_checkpoint(path: &Path, layout: &Layout) -> Result<LoadedCheckpoint> {
    let mut file = read_safetensors(path)?;
    let meta = CheckpointMeta::from_map(path, &file.metadata)?;
    let mut missing = Vec::new();
    let mut bad_shape = Vec::new();
    let mut bad_dtype = Vec::new();
    let mut values = Vec::with_capacity(layout.params.len());
    for p in &layout.params {
        match file.tensors.remove(&p.name) {
            None => missing.push(p.name.clone()),
            Some(t) if t.shape != p.shape => bad_shape.push(format!(
                "`{}` has shape {:?}, expected {:?}",
                p.name, t.shape, p.shape
            )),
            Some(StTensor {
                data: TensorData::F32(v),
                ..
            }) => values.push(v),
            Some(t) => bad_dtype.push(format!(
                "`{}` is {}, expected F32",
                p.name,
                t.data.dtype_name()
            )),
        }
    }
    let mut extra = Vec::new();
    let mut optimizer_tensors = BTreeMap::new();
    for (name, t) in file.tensors {
        let param = name
            .strip_prefix(MOMENTUM_PREFIX)
            .or_else(|| name.strip_prefix(EXP_AVG_SQ_PREFIX))
            .or_else(|| name.strip_prefix(EXP_AVG_PREFIX));
        // PyTorch's BN counter buffer: unused here (momentum is fixed), so a torch
        // state_dict loads as is.
        if let Some(bn) = name.strip_suffix(".num_batches_tracked")
            && layout.get(&format!("{bn}.running_mean")).is_some()
        {
            continue;
        }
        let target = param
            .and_then(|p| layout.get(p))
            .filter(|p| p.kind.trainable());
        match (target, t.data) {
            (None, _) => extra.push(format!("`{name}`")),
            (Some(p), _) if t.shape != p.shape => bad_shape.push(format!(
                "`{name}` has shape {:?}, expected {:?}",
                t.shape, p.shape
            )),
            (Some(_), TensorData::F32(v)) => {
                optimizer_tensors.insert(name, v);
            }
            (Some(_), d) => bad_dtype.push(format!("`{name}` is {}, expected F32", d.dtype_name())),
        }
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing tensor(s): {}",
            missing.len(),
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{} unexpected tensor(s): {}",
            extra.len(),
            extra.join(", ")
        ));
    }
    if !bad_shape.is_empty() {
        problems.push(format!("wrong shapes: {}", bad_shape.join(", ")));
    }
    if !bad_dtype.is_empty() {
        problems.push(format!("wrong dtypes: {}", bad_dtype.join(", ")));
    }
    if !problems.is_empty() {
        let model = if meta.model.is_empty() {
            String::new()
        } else {
            format!(
                " (written for model `{}` heads `{}`)",
                meta.model, meta.heads
            )
        };
        return Err(NnError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("does not match the model{model}: {}", problems.join("; ")),
        });
    }
    Ok(LoadedCheckpoint {
        meta,
        values,
        optimizer_tensors,
    })
}

#[cfg(test)]
mod tests;
