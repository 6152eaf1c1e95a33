//! Gradient-conflict metrics per layer segment and for the whole backbone, from Gram matrices.

use serde::{Deserialize, Serialize};

use crate::error::{MtoError, Result};
use crate::gram::{SegmentedGram, task_gram};
use crate::input::TaskGradients;

/// Conflict metrics of one group of parameters (a segment or the whole backbone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupConflict {
    /// Segment name (or `"total"`), when names were given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Each task's gradient norm `|g_t|`.
    pub norms: Vec<f64>,
    /// Pairwise cosines for pairs i < j in row-major order ((0,1), (0,2), ..., (1,2), ...);
    /// 0 when either gradient is zero.
    pub cosines: Vec<f64>,
    /// Fraction of task pairs with negative cosine (0 when T = 1).
    pub conflict_fraction: f64,
    /// Pairwise gradient-magnitude similarity `2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)` (Yu et al.
    /// 2020), same pair order; 1 when both gradients are zero.
    pub magnitude_similarity: Vec<f64>,
}

/// One step's conflict measurements: a line of the time series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Training step.
    pub step: u64,
    /// Number of tasks T.
    pub tasks: usize,
    /// Per segment (layer), in segment order.
    pub segments: Vec<GroupConflict>,
    /// The whole shared backbone.
    pub total: GroupConflict,
}

impl GroupConflict {
    /// Metrics of one T x T Gram matrix.
    pub fn from_matrix(k: &[f64], t: usize, name: Option<String>) -> Self {
        let norms: Vec<f64> = (0..t).map(|i| k[i * t + i].max(0.0).sqrt()).collect();
        let mut cosines = Vec::with_capacity(t * (t.saturating_sub(1)) / 2);
        let mut mags = Vec::with_capacity(cosines.capacity());
        for i in 0..t {
            for j in i + 1..t {
                let d = norms[i] * norms[j];
                cosines.push(if d > 0.0 {
                    (k[i * t + j] / d).clamp(-1.0, 1.0)
                } else {
                    0.0
                });
                let s = norms[i] * norms[i] + norms[j] * norms[j];
                mags.push(if s > 0.0 { 2.0 * d / s } else { 1.0 });
            }
        }
        let conflict_fraction = if cosines.is_empty() {
            0.0
        } else {
            cosines.iter().filter(|&&c| c < 0.0).count() as f64 / cosines.len() as f64
        };
        Self {
            name,
            norms,
            cosines,
            conflict_fraction,
            magnitude_similarity: mags,
        }
    }
}

impl ConflictRecord {
    /// Metrics from precomputed Gram matrices; `names` (one per segment) label the segments.
    pub fn from_gram(step: u64, gram: &SegmentedGram, names: Option<&[String]>) -> Result<Self> {
        if let Some(n) = names
            && n.len() != gram.segments.len()
        {
            return Err(MtoError::invalid(
                "conflict_record",
                format!(
                    "{} segment names for {} segments",
                    n.len(),
                    gram.segments.len()
                ),
            ));
        }
        let t = gram.t;
        let segments = gram
            .segments
            .iter()
            .enumerate()
            .map(|(l, k)| GroupConflict::from_matrix(k, t, names.map(|n| n[l].clone())))
            .collect();
        let total = GroupConflict::from_matrix(&gram.total, t, names.map(|_| "total".to_string()));
        Ok(Self {
            step,
            tasks: t,
            segments,
            total,
        })
    }

    /// Metrics of per-task gradients (computes their Gram matrices).
    pub fn measure(step: u64, grads: &TaskGradients, names: Option<&[String]>) -> Result<Self> {
        Self::from_gram(step, &task_gram(grads)?, names)
    }

    /// One JSON line (no trailing newline) for a `.jsonl` time series.
    pub fn to_json_line(&self) -> String {
        // Serialising plain numbers and strings cannot fail; non-finite values become null.
        serde_json::to_string(self).unwrap_or_default()
    }
}
