//! MultiMNIST, generated deterministically from an MNIST-layout data set: two digits on a
//! 36x36 canvas, the "left" one at offset (0..=4, 0..=4) from the top-left corner and the
//! "right" one at (4..=8, 4..=8), combined by pixel-wise maximum (Sabour et al. 2017; the MTO
//! literature's two-task benchmark, tasks "left" and "right"). Sample `i` uses source digit
//! `i mod n` on the left and a digit chosen from (seed, i) on the right; an optional resize
//! (area) brings the canvas to e.g. 28x28.

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::sample::{Dataset, InMemory, Sample, Target, TaskSpec};
use crate::transforms::{Interp, resize_image};

/// Canvas side.
pub const CANVAS: usize = 36;

/// Two overlaid digits per sample, two classification tasks.
#[derive(Clone, Debug)]
pub struct MultiMnist {
    source: InMemory,
    len: usize,
    seed: u64,
    size: Option<usize>,
}

impl MultiMnist {
    /// `source`: 28x28 grey images with a digit task (e.g. [`crate::readers::mnist::open`]);
    /// `len`: number of samples; `size`: resize the 36x36 canvas to `size x size`.
    pub fn new(source: InMemory, len: usize, seed: u64, size: Option<usize>) -> Result<Self> {
        if source.channels != 1
            || source.height != 28
            || source.width != 28
            || source.labels.is_empty()
        {
            return Err(DataError::Invalid(format!(
                "MultiMNIST needs labelled 28x28 grey digits, got {}x{}x{}",
                source.height, source.width, source.channels
            )));
        }
        if Dataset::len(&source) == 0 && len > 0 {
            return Err(DataError::Invalid("MultiMNIST source is empty".into()));
        }
        Ok(MultiMnist {
            source,
            len,
            seed,
            size,
        })
    }

    /// (left index, right index, left offset, right offset) of sample `index`.
    pub fn layout(&self, index: usize) -> (usize, usize, (usize, usize), (usize, usize)) {
        let n = Dataset::len(&self.source);
        let mut rng = Rng::from_words(&[self.seed, index as u64, 0x4D4D]);
        let right = rng.below(n);
        let l = (rng.below(5), rng.below(5));
        let r = (4 + rng.below(5), 4 + rng.below(5));
        (index % n, right, l, r)
    }
}

impl Dataset for MultiMnist {
    fn len(&self) -> usize {
        self.len
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec::class("left", 10), TaskSpec::class("right", 10)]
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let (a, b, (ly, lx), (ry, rx)) = self.layout(index);
        let mut canvas = Image::zeros(CANVAS, CANVAS, 1);
        for (src, oy, ox) in [(a, ly, lx), (b, ry, rx)] {
            let px = self.source.pixels_of(src);
            for y in 0..28 {
                for x in 0..28 {
                    let o = &mut canvas.data[(y + oy) * CANVAS + x + ox];
                    *o = (*o).max(px[y * 28 + x]);
                }
            }
        }
        if let Some(s) = self.size {
            canvas = resize_image(&canvas, s, s, Interp::Area);
        }
        let targets = vec![
            Some(Target::Class(self.source.labels[0][a])),
            Some(Target::Class(self.source.labels[0][b])),
        ];
        Ok(Sample {
            image: canvas,
            targets,
        })
    }

    fn class_of(&self, index: usize) -> Option<u32> {
        Some(self.source.labels[0][self.layout(index).0])
    }
}
