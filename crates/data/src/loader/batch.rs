//! A materialised batch: CHW f32 images and one target tensor plus mask per task.

use crate::error::{DataError, Result};
use crate::sample::{Target, TaskKind, TaskSpec};
use crate::transforms::Augmented;

/// The targets of one task over a batch; `mask[i]` is false where sample i has no target
/// (its source lacks the task), and the target slot then holds zeros.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskBatch {
    /// Class indices, `[B]`.
    Class {
        /// Labels.
        labels: Vec<u32>,
        /// Presence per sample.
        mask: Vec<bool>,
    },
    /// Binary attributes, `[B, width]` row-major.
    Attributes {
        /// 0/1 values.
        values: Vec<u8>,
        /// Attributes per sample.
        width: usize,
        /// Presence per sample.
        mask: Vec<bool>,
    },
    /// Dense maps, `[B, channels, height, width]` (CHW like the images).
    Dense {
        /// Values.
        values: Vec<f32>,
        /// `[channels, height, width]`.
        shape: [usize; 3],
        /// Presence per sample.
        mask: Vec<bool>,
    },
    /// Label maps, `[B, height, width]`; 65535 marks padding (ignore).
    Segmentation {
        /// Labels.
        labels: Vec<u16>,
        /// `[height, width]`.
        shape: [usize; 2],
        /// Presence per sample.
        mask: Vec<bool>,
    },
}

impl TaskBatch {
    /// The presence mask.
    pub fn mask(&self) -> &[bool] {
        match self {
            TaskBatch::Class { mask, .. }
            | TaskBatch::Attributes { mask, .. }
            | TaskBatch::Dense { mask, .. }
            | TaskBatch::Segmentation { mask, .. } => mask,
        }
    }
}

/// A batch of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[B, C, H, W]` f32, row-major.
    pub images: Vec<f32>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
    /// Source (domain) of each sample.
    pub sources: Vec<usize>,
    /// Index of each sample within its source.
    pub indices: Vec<usize>,
    /// One entry per loader task.
    pub targets: Vec<TaskBatch>,
    /// Samples skipped under `skip_corrupt`: (source, index, error message).
    pub skipped: Vec<(usize, usize, String)>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// True for a batch whose samples were all skipped.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// Collates augmented samples (with their union-task targets) into a batch.
pub(crate) fn collate(
    tasks: &[TaskSpec],
    items: Vec<(usize, usize, Augmented)>,
    skipped: Vec<(usize, usize, String)>,
) -> Result<Batch> {
    let b = items.len();
    let img_shape = items.first().map(|(_, _, a)| a.shape).unwrap_or([0, 0, 0]);
    let mut images = Vec::with_capacity(b * img_shape.iter().product::<usize>());
    let mut targets: Vec<TaskBatch> = tasks
        .iter()
        .map(|t| match &t.kind {
            TaskKind::Class { .. } => TaskBatch::Class {
                labels: Vec::new(),
                mask: Vec::new(),
            },
            TaskKind::Attributes { names } => TaskBatch::Attributes {
                values: Vec::new(),
                width: names.len(),
                mask: Vec::new(),
            },
            TaskKind::Dense { channels } => TaskBatch::Dense {
                values: Vec::new(),
                shape: [*channels, img_shape[1], img_shape[2]],
                mask: Vec::new(),
            },
            TaskKind::Segmentation { .. } => TaskBatch::Segmentation {
                labels: Vec::new(),
                shape: [img_shape[1], img_shape[2]],
                mask: Vec::new(),
            },
        })
        .collect();
    let mut sources = Vec::with_capacity(b);
    let mut indices = Vec::with_capacity(b);
    for (s, i, a) in items {
        if a.shape != img_shape {
            return Err(DataError::Invalid(format!(
                "sample {i} of source {s} has shape {:?}, batch has {img_shape:?}; resize sources to one size",
                a.shape
            )));
        }
        images.extend_from_slice(&a.chw);
        let shape_err = |what: &str| {
            DataError::Invalid(format!(
                "sample {i} of source {s}: {what} does not match its task"
            ))
        };
        for (t, target) in a.targets.into_iter().enumerate() {
            match (&mut targets[t], target) {
                (TaskBatch::Class { labels, mask }, Some(Target::Class(c))) => {
                    labels.push(c);
                    mask.push(true);
                }
                (TaskBatch::Class { labels, mask }, None) => {
                    labels.push(0);
                    mask.push(false);
                }
                (
                    TaskBatch::Attributes {
                        values,
                        width,
                        mask,
                    },
                    Some(Target::Attributes(v)),
                ) if v.len() == *width => {
                    values.extend_from_slice(&v);
                    mask.push(true);
                }
                (
                    TaskBatch::Attributes {
                        values,
                        width,
                        mask,
                    },
                    None,
                ) => {
                    values.extend(std::iter::repeat_n(0, *width));
                    mask.push(false);
                }
                (
                    TaskBatch::Dense {
                        values,
                        shape,
                        mask,
                    },
                    Some(Target::Dense(m)),
                ) if [m.channels, m.height, m.width] == *shape => {
                    let plane = m.height * m.width;
                    for c in 0..m.channels {
                        values.extend((0..plane).map(|p| m.values[p * m.channels + c]));
                    }
                    mask.push(true);
                }
                (
                    TaskBatch::Dense {
                        values,
                        shape,
                        mask,
                    },
                    None,
                ) => {
                    values.extend(std::iter::repeat_n(0.0, shape.iter().product()));
                    mask.push(false);
                }
                (
                    TaskBatch::Segmentation {
                        labels,
                        shape,
                        mask,
                    },
                    Some(Target::Segmentation(l)),
                ) if [l.height, l.width] == *shape => {
                    labels.extend_from_slice(&l.labels);
                    mask.push(true);
                }
                (
                    TaskBatch::Segmentation {
                        labels,
                        shape,
                        mask,
                    },
                    None,
                ) => {
                    labels.extend(std::iter::repeat_n(0, shape[0] * shape[1]));
                    mask.push(false);
                }
                _ => return Err(shape_err(&tasks[t].name)),
            }
        }
        sources.push(s);
        indices.push(i);
    }
    Ok(Batch {
        images,
        shape: [b, img_shape[0], img_shape[1], img_shape[2]],
        sources,
        indices,
        targets,
        skipped,
    })
}
