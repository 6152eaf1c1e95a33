//! Samples, targets, task descriptions and the `Dataset` trait every reader implements.

use crate::error::Result;
use crate::image::Image;

/// What kind of target a task has; all samples of a task agree on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// A class index in `0..num_classes`.
    Class {
        /// Number of classes.
        num_classes: usize,
    },
    /// A vector of binary attributes (0/1), e.g. CelebA.
    Attributes {
        /// Attribute names, in vector order.
        names: Vec<String>,
    },
    /// A dense real-valued map with `channels` channels at the image's resolution.
    Dense {
        /// Channels per pixel.
        channels: usize,
    },
    /// A dense class-label map (semantic segmentation).
    Segmentation {
        /// Number of classes; labels `>= num_classes` are "ignore".
        num_classes: usize,
    },
}

/// A task's name and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Task name, unique within a data set ("digit", "attributes", "depth_euclidean", ...).
    pub name: String,
    /// Target kind.
    pub kind: TaskKind,
}

impl TaskSpec {
    /// Shorthand for a classification task.
    pub fn class(name: &str, num_classes: usize) -> Self {
        TaskSpec {
            name: name.to_string(),
            kind: TaskKind::Class { num_classes },
        }
    }
}

/// A dense real-valued target, HWC f32.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
    /// `height * width * channels` values, HWC.
    pub values: Vec<f32>,
    /// Channel whose sign flips under a horizontal flip (the x component of surface normals).
    pub flip_negates: Option<usize>,
}

/// A dense class-label map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` labels.
    pub labels: Vec<u16>,
}

/// One target of one sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Class index.
    Class(u32),
    /// Binary attributes (0/1).
    Attributes(Vec<u8>),
    /// Dense real-valued map.
    Dense(DenseMap),
    /// Dense label map.
    Segmentation(LabelMap),
}

/// An image and one optional target per task of its data set (`None`: no label for that task).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The input image, HWC u8.
    pub image: Image,
    /// One entry per [`Dataset::tasks`] entry, same order.
    pub targets: Vec<Option<Target>>,
}

/// Random-access data set. Implementations must be cheap to share between threads.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The tasks every sample carries targets for.
    fn tasks(&self) -> Vec<TaskSpec>;
    /// Sample `index` (`index < len()`); decoding errors name the file.
    fn get(&self, index: usize) -> Result<Sample>;
    /// The class label of `index` for task 0 without decoding the image, when cheap (for stats).
    fn class_of(&self, index: usize) -> Option<u32> {
        let _ = index;
        None
    }
}

/// Fixed-size images held in memory with one class label per task (CIFAR, MNIST, STL-10, digits).
#[derive(Clone, Debug)]
pub struct InMemory {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels.
    pub channels: usize,
    /// All images, HWC, concatenated.
    pub pixels: Vec<u8>,
    /// Tasks; each is a class task.
    pub task_specs: Vec<TaskSpec>,
    /// `labels[t][i]`: class of sample i for task t (`u32::MAX` = unlabelled).
    pub labels: Vec<Vec<u32>>,
}

impl InMemory {
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The image of sample `index` without copying.
    pub fn pixels_of(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Keeps the samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> InMemory {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.pixels_of(i));
        }
        InMemory {
            pixels,
            labels: self
                .labels
                .iter()
                .map(|l| indices.iter().map(|&i| l[i]).collect())
                .collect(),
            task_specs: self.task_specs.clone(),
            ..*self
        }
    }

    /// Relabels task 0 through `map` (old class -> new class or `None` to drop the sample),
    /// e.g. the CIFAR-10/STL-10 shared classes in [`crate::readers::cifar_stl`].
    pub fn remap_classes(&self, map: &[Option<u32>], num_classes: usize) -> InMemory {
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| {
                map.get(self.labels[0][i] as usize)
                    .copied()
                    .flatten()
                    .is_some()
            })
            .collect();
        let mut out = self.select(&keep);
        for l in &mut out.labels[0] {
            *l = map[*l as usize].unwrap_or(u32::MAX);
        }
        out.task_specs[0].kind = TaskKind::Class { num_classes };
        out
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels
            .first()
            .map_or(self.pixels.len() / self.image_len().max(1), |l| l.len())
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        self.task_specs.clone()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let image = Image::new(
            self.height,
            self.width,
            self.channels,
            self.pixels_of(index).to_vec(),
        );
        let targets = self
            .labels
            .iter()
            .map(|l| (l[index] != u32::MAX).then_some(Target::Class(l[index])))
            .collect();
        Ok(Sample { image, targets })
    }

    fn class_of(&self, index: usize) -> Option<u32> {
        self.labels
            .first()
            .map(|l| l[index])
            .filter(|&c| c != u32::MAX)
    }
}
