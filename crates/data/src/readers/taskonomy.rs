//! Taskonomy (tiny split layout, one folder per building):
//!
//! ```text
//! {root}/{building}/rgb/point_{P}_view_{V}_domain_rgb.png
//! {root}/{building}/{task}/point_{P}_view_{V}_domain_{task}.png
//! ```
//!
//! Tasks and how their PNGs become targets (all resized to the RGB output size):
//! - `depth_euclidean`: 16-bit grey / 65535 (1.0 = the invalid/sky code), nearest (the
//!   invalid code must not be blended into valid depths), Dense 1 channel;
//! - `normal`: 8-bit RGB mapped to [-1, 1] (`v / 255 * 2 - 1`), bilinear, Dense 3 channels,
//!   x component negated by horizontal flips;
//! - `edge_texture`, `keypoints2d`: 16-bit grey / 65535, bilinear, Dense 1 channel;
//! - `segment_semantic`: grey labels, nearest, Segmentation with 17 classes (higher = ignore).
//!
//! A missing target file gives `None` for that task (masked out in batches), because real
//! Taskonomy buildings lack some targets; a missing RGB folder is an error.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::sample::{Dataset, DenseMap, LabelMap, Sample, Target, TaskKind, TaskSpec};
use crate::transforms::{Interp, resize_image, resize_labels, resize_values};

/// Dense tasks this reader knows.
pub const TASKS: [&str; 5] = [
    "depth_euclidean",
    "normal",
    "edge_texture",
    "keypoints2d",
    "segment_semantic",
];
/// Number of semantic classes in `segment_semantic`.
pub const SEMANTIC_CLASSES: usize = 17;

const LAYOUT: &str = "{root}/{building}/rgb/point_{P}_view_{V}_domain_rgb.png and {root}/{building}/{task}/point_{P}_view_{V}_domain_{task}.png";

/// A Taskonomy folder: chosen buildings, chosen tasks, fixed output size.
#[derive(Clone, Debug)]
pub struct Taskonomy {
    root: PathBuf,
    /// (building, "point_P_view_V") per sample.
    items: Vec<(String, String)>,
    tasks: Vec<String>,
    size: (usize, usize),
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e, LAYOUT))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e, LAYOUT))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

impl Taskonomy {
    /// Opens `root`. `buildings`: which ones (a split is a list of buildings), `None` = every
    /// sub-folder, sorted. `tasks`: names from [`TASKS`]. `size`: output (rows, cols).
    pub fn open(
        root: &Path,
        buildings: Option<&[&str]>,
        tasks: &[&str],
        size: (usize, usize),
    ) -> Result<Self> {
        for t in tasks {
            if !TASKS.contains(t) {
                return Err(DataError::Invalid(format!(
                    "unknown Taskonomy task {t:?}; known: {}",
                    TASKS.join(", ")
                )));
            }
        }
        let buildings: Vec<String> = match buildings {
            Some(b) => b.iter().map(|s| s.to_string()).collect(),
            None => list_dir(root)?
                .into_iter()
                .filter(|b| root.join(b).is_dir())
                .collect(),
        };
        let mut items = Vec::new();
        for b in &buildings {
            for name in list_dir(&root.join(b).join("rgb"))? {
                if let Some(stem) = name.strip_suffix("_domain_rgb.png") {
                    items.push((b.clone(), stem.to_string()));
                }
            }
        }
        Ok(Taskonomy {
            root: root.to_path_buf(),
            items,
            tasks: tasks.iter().map(|s| s.to_string()).collect(),
            size,
        })
    }

    /// Path of the file of `domain` ("rgb" or a task) for sample `index`.
    pub fn path(&self, index: usize, domain: &str) -> PathBuf {
        let (b, stem) = &self.items[index];
        self.root
            .join(b)
            .join(domain)
            .join(format!("{stem}_domain_{domain}.png"))
    }

    fn target(&self, index: usize, task: &str) -> Result<Option<Target>> {
        let path = self.path(index, task);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io(&path, e, LAYOUT)),
        };
        let img = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (oh, ow) = self.size;
        Ok(Some(match task {
            "segment_semantic" => {
                // 8-bit label PNGs are the norm; 16-bit ones are read as they are.
                let labels: Vec<u16> = match img {
                    image::DynamicImage::ImageLuma16(buf) => buf.into_raw(),
                    other => other
                        .into_luma8()
                        .into_raw()
                        .into_iter()
                        .map(u16::from)
                        .collect(),
                };
                Target::Segmentation(LabelMap {
                    height: oh,
                    width: ow,
                    labels: resize_labels(&labels, h, w, oh, ow),
                })
            }
            "normal" => {
                let v: Vec<f32> = img
                    .into_rgb8()
                    .into_raw()
                    .iter()
                    .map(|&v| v as f32 / 255.0 * 2.0 - 1.0)
                    .collect();
                let values = resize_values(&v, h, w, 3, oh, ow, Interp::Bilinear);
                Target::Dense(DenseMap {
                    height: oh,
                    width: ow,
                    channels: 3,
                    values,
                    flip_negates: Some(0),
                })
            }
            _ => {
                let v: Vec<f32> = img
                    .into_luma16()
                    .into_raw()
                    .iter()
                    .map(|&v| v as f32 / 65535.0)
                    .collect();
                let interp = if task == "depth_euclidean" {
                    Interp::Nearest
                } else {
                    Interp::Bilinear
                };
                let values = resize_values(&v, h, w, 1, oh, ow, interp);
                Target::Dense(DenseMap {
                    height: oh,
                    width: ow,
                    channels: 1,
                    values,
                    flip_negates: None,
                })
            }
        }))
    }
}

impl Dataset for Taskonomy {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        self.tasks
            .iter()
            .map(|t| TaskSpec {
                name: t.clone(),
                kind: match t.as_str() {
                    "segment_semantic" => TaskKind::Segmentation {
                        num_classes: SEMANTIC_CLASSES,
                    },
                    "normal" => TaskKind::Dense { channels: 3 },
                    _ => TaskKind::Dense { channels: 1 },
                },
            })
            .collect()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let path = self.path(index, "rgb");
        let img: Image = crate::transforms::read_image(&path, 3, LAYOUT)?;
        let (oh, ow) = self.size;
        let interp = if img.height >= oh && img.width >= ow {
            Interp::Area
        } else {
            Interp::Bilinear
        };
        let image = resize_image(&img, oh, ow, interp);
        let targets = self
            .tasks
            .iter()
            .map(|t| self.target(index, t))
            .collect::<Result<_>>()?;
        Ok(Sample { image, targets })
    }
}
