//! The per-sample pipeline: resize, random crop with zero padding, horizontal flip,
//! per-channel normalisation and HWC u8 -> CHW f32, with every random choice a pure function
//! of (seed, epoch, source, index).

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::sample::{DenseMap, LabelMap, Sample, Target};
use crate::transforms::resize::{Interp, resize_image, resize_labels, resize_values};

/// Label written where a crop reaches into the padding of a segmentation map.
pub const IGNORE_LABEL: u16 = u16::MAX;

/// Augmentation settings for one source of a loader (default: none, output as input).
#[derive(Clone, Debug, Default)]
pub struct Augment {
    /// Resize every image first (rows, cols, method); dense targets follow with the method
    /// their task needs (nearest for labels).
    pub resize: Option<(usize, usize, Interp)>,
    /// Convert to this many channels first (1 -> 3 replicates grey; 3 -> 1 takes the mean).
    pub channels: Option<usize>,
    /// Zero padding on each side before the random crop.
    pub pad: usize,
    /// Random crop size (rows, cols); `None` keeps the (padded) size, i.e. no crop.
    pub crop: Option<(usize, usize)>,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    /// Per-channel mean of `v / 255` (empty: 0).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of `v / 255` (empty: 1).
    pub std: Vec<f32>,
}

/// Output of [`Augment::apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct Augmented {
    /// CHW f32 image.
    pub chw: Vec<f32>,
    /// (channels, rows, cols) of `chw`.
    pub shape: [usize; 3],
    /// Targets, with dense ones cropped and flipped like the image.
    pub targets: Vec<Option<Target>>,
}

/// Where output pixel (y, x) reads from: source row `y + dy - pad`, column via `flip`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    out_h: usize,
    out_w: usize,
    dy: usize,
    dx: usize,
    pad: usize,
    flip: bool,
}

impl Geometry {
    /// Source coordinate for output coordinate, or `None` inside the padding.
    #[inline]
    fn src(&self, o: usize, d: usize, n: usize) -> Option<usize> {
        (o + d).checked_sub(self.pad).filter(|&s| s < n)
    }
    #[inline]
    fn col(&self, x: usize) -> usize {
        if self.flip { self.out_w - 1 - x } else { x }
    }
}

impl Augment {
    /// Standard CIFAR training augmentation: pad 4, random 32x32 crop, flip, normalise.
    pub fn cifar_train(mean: [f32; 3], std: [f32; 3]) -> Self {
        Augment {
            pad: 4,
            crop: Some((32, 32)),
            flip: true,
            mean: mean.to_vec(),
            std: std.to_vec(),
            ..Default::default()
        }
    }

    /// Applies the pipeline to `sample`; the random draws depend only on the four words.
    pub fn apply(
        &self,
        sample: Sample,
        seed: u64,
        epoch: u64,
        source: usize,
        index: usize,
    ) -> Result<Augmented> {
        let Sample {
            mut image,
            mut targets,
        } = sample;
        if let Some(c) = self.channels {
            image = convert_channels(&image, c)?;
        }
        if let Some((h, w, interp)) = self.resize {
            image = resize_image(&image, h, w, interp);
            for t in targets.iter_mut().flatten() {
                resize_target(t, h, w, interp);
            }
        }
        let (h, w, c) = (image.height, image.width, image.channels);
        let (ph, pw) = (h + 2 * self.pad, w + 2 * self.pad);
        let (out_h, out_w) = self.crop.unwrap_or((ph, pw));
        if out_h > ph || out_w > pw || out_h == 0 || out_w == 0 {
            return Err(DataError::Invalid(format!(
                "crop {out_h}x{out_w} does not fit a {h}x{w} image padded by {}",
                self.pad
            )));
        }
        let mut rng = Rng::from_words(&[seed, epoch, source as u64, index as u64]);
        let dy = rng.below(ph - out_h + 1);
        let dx = rng.below(pw - out_w + 1);
        let flip = self.flip && rng.coin();
        let g = Geometry {
            out_h,
            out_w,
            dy,
            dx,
            pad: self.pad,
            flip,
        };

        let chw = self.normalise(&image, &g)?;
        for t in targets.iter_mut().flatten() {
            geometric_target(t, &g, h, w)?;
        }
        Ok(Augmented {
            chw,
            shape: [c, out_h, out_w],
            targets,
        })
    }

    /// Crop, flip and normalise into CHW: `v * scale_c + bias_c` with
    /// `scale_c = 1 / (255 std_c)`, `bias_c = -mean_c / std_c`.
    fn normalise(&self, img: &Image, g: &Geometry) -> Result<Vec<f32>> {
        let c = img.channels;
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != c {
                return Err(DataError::Invalid(format!(
                    "{name} has {} entries for a {c}-channel image",
                    v.len()
                )));
            }
        }
        let mut scale = vec![1.0 / 255.0; c];
        let mut bias = vec![0.0f32; c];
        for ch in 0..c {
            let m = self.mean.get(ch).copied().unwrap_or(0.0);
            let s = self.std.get(ch).copied().unwrap_or(1.0);
            scale[ch] = 1.0 / (255.0 * s);
            bias[ch] = -m / s;
        }
        let plane = g.out_h * g.out_w;
        let mut out = vec![0f32; c * plane];
        for ch in 0..c {
            out[ch * plane..(ch + 1) * plane].fill(bias[ch]);
        }
        // Only the rows and columns that land inside the image are written; padding keeps bias.
        for y in 0..g.out_h {
            let Some(sy) = g.src(y, g.dy, img.height) else {
                continue;
            };
            let row = &img.data[sy * img.width * c..(sy + 1) * img.width * c];
            for x in 0..g.out_w {
                let Some(sx) = g.src(g.col(x), g.dx, img.width) else {
                    continue;
                };
                let p = &row[sx * c..(sx + 1) * c];
                let o = y * g.out_w + x;
                for ch in 0..c {
                    out[ch * plane + o] = p[ch] as f32 * scale[ch] + bias[ch];
                }
            }
        }
        Ok(out)
    }
}

fn convert_channels(img: &Image, c: usize) -> Result<Image> {
    Ok(match (img.channels, c) {
        (a, b) if a == b => img.clone(),
        (1, 3) => Image::new(
            img.height,
            img.width,
            3,
            img.data.iter().flat_map(|&v| [v, v, v]).collect(),
        ),
        (3, 1) => Image::new(
            img.height,
            img.width,
            1,
            img.data
                .chunks_exact(3)
                .map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32 + 1) / 3) as u8)
                .collect(),
        ),
        (a, b) => {
            return Err(DataError::Invalid(format!(
                "cannot convert {a} channels to {b}"
            )));
        }
    })
}

fn resize_target(t: &mut Target, h: usize, w: usize, interp: Interp) {
    match t {
        Target::Dense(m) => {
            m.values = resize_values(&m.values, m.height, m.width, m.channels, h, w, interp);
            m.height = h;
            m.width = w;
        }
        Target::Segmentation(l) => {
            l.labels = resize_labels(&l.labels, l.height, l.width, h, w);
            l.height = h;
            l.width = w;
        }
        Target::Class(_) | Target::Attributes(_) => {}
    }
}

fn geometric_target(t: &mut Target, g: &Geometry, h: usize, w: usize) -> Result<()> {
    let check = |th: usize, tw: usize| {
        if (th, tw) == (h, w) {
            Ok(())
        } else {
            Err(DataError::Invalid(format!(
                "dense target is {th}x{tw} but its image is {h}x{w}"
            )))
        }
    };
    match t {
        Target::Dense(m) => {
            check(m.height, m.width)?;
            let c = m.channels;
            let mut out = vec![0f32; g.out_h * g.out_w * c];
            for y in 0..g.out_h {
                for x in 0..g.out_w {
                    if let (Some(sy), Some(sx)) = (g.src(y, g.dy, h), g.src(g.col(x), g.dx, w)) {
                        let o = (y * g.out_w + x) * c;
                        out[o..o + c]
                            .copy_from_slice(&m.values[(sy * w + sx) * c..(sy * w + sx + 1) * c]);
                        if let (true, Some(ch)) = (g.flip, m.flip_negates) {
                            out[o + ch] = -out[o + ch];
                        }
                    }
                }
            }
            *m = DenseMap {
                height: g.out_h,
                width: g.out_w,
                channels: c,
                values: out,
                flip_negates: m.flip_negates,
            };
        }
        Target::Segmentation(l) => {
            check(l.height, l.width)?;
            let mut out = vec![IGNORE_LABEL; g.out_h * g.out_w];
            for y in 0..g.out_h {
                for x in 0..g.out_w {
                    if let (Some(sy), Some(sx)) = (g.src(y, g.dy, h), g.src(g.col(x), g.dx, w)) {
                        out[y * g.out_w + x] = l.labels[sy * w + sx];
                    }
                }
            }
            *l = LabelMap {
                height: g.out_h,
                width: g.out_w,
                labels: out,
            };
        }
        Target::Class(_) | Target::Attributes(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(h: usize, w: usize) -> Sample {
        let data: Vec<u8> = (0..h * w * 3).map(|i| ((i * 31 + 7) % 251) as u8).collect();
        let seg = LabelMap {
            height: h,
            width: w,
            labels: (0..(h * w) as u16).collect(),
        };
        let normal = DenseMap {
            height: h,
            width: w,
            channels: 1,
            values: (0..h * w).map(|i| i as f32 + 1.0).collect(),
            flip_negates: Some(0),
        };
        Sample {
            image: Image::new(h, w, 3, data),
            targets: vec![
                Some(Target::Class(3)),
                Some(Target::Segmentation(seg)),
                Some(Target::Dense(normal)),
            ],
        }
    }

    /// Independent reference: pad explicitly, crop, flip, normalise, all in f64.
    #[test]
    fn crop_flip_normalise_match_reference_and_targets_follow() {
        let (h, w, pad, ch, cw) = (5, 7, 2, 4, 6);
        let aug = Augment {
            pad,
            crop: Some((ch, cw)),
            flip: true,
            mean: vec![0.4, 0.5, 0.6],
            std: vec![0.2, 0.25, 0.3],
            ..Default::default()
        };
        let mut flips = [false, false];
        for index in 0..40 {
            let s = sample(h, w);
            let out = aug.apply(s.clone(), 9, 1, 0, index).unwrap();
            // Recover dy, dx, flip from the segmentation map (labels are pixel ids).
            let Some(Target::Segmentation(seg)) = &out.targets[1] else {
                panic!()
            };
            let mut found = None;
            'search: for dy in 0..=(h + 2 * pad - ch) {
                for dx in 0..=(w + 2 * pad - cw) {
                    for flip in [false, true] {
                        let ok = (0..ch).all(|y| {
                            (0..cw).all(|x| {
                                let xx = if flip { cw - 1 - x } else { x };
                                let (py, px) = (y + dy, xx + dx);
                                let want = if py < pad || px < pad || py - pad >= h || px - pad >= w
                                {
                                    IGNORE_LABEL
                                } else {
                                    ((py - pad) * w + px - pad) as u16
                                };
                                seg.labels[y * cw + x] == want
                            })
                        });
                        if ok {
                            found = Some((dy, dx, flip));
                            break 'search;
                        }
                    }
                }
            }
            let (dy, dx, flip) = found.expect("segmentation map is some crop of the padded input");
            flips[flip as usize] = true;
            for c in 0..3 {
                for y in 0..ch {
                    for x in 0..cw {
                        let xx = if flip { cw - 1 - x } else { x };
                        let (py, px) = (y + dy, xx + dx);
                        let v = if py < pad || px < pad || py - pad >= h || px - pad >= w {
                            0.0
                        } else {
                            s_pixel(&s_image(h, w), w, py - pad, px - pad, c) as f64
                        };
                        let want = (v / 255.0 - aug.mean[c] as f64) / aug.std[c] as f64;
                        let got = out.chw[c * ch * cw + y * cw + x] as f64;
                        assert!((got - want).abs() < 1e-5);
                    }
                }
            }
            let Some(Target::Dense(n)) = &out.targets[2] else {
                panic!()
            };
            for (i, &l) in seg.labels.iter().enumerate() {
                let want = if l == IGNORE_LABEL {
                    0.0
                } else {
                    (l as f32 + 1.0) * if flip { -1.0 } else { 1.0 }
                };
                assert_eq!(n.values[i], want);
            }
            assert_eq!(out.targets[0], Some(Target::Class(3)));
            // Same words, same output; different epoch, some difference over the 40 indices.
            assert_eq!(aug.apply(s, 9, 1, 0, index).unwrap(), out);
        }
        assert!(flips[0] && flips[1], "both flip outcomes occur");
    }

    fn s_image(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    fn s_pixel(data: &[u8], w: usize, y: usize, x: usize, c: usize) -> u8 {
        data[(y * w + x) * 3 + c]
    }

    #[test]
    fn crop_too_large_is_an_error() {
        let aug = Augment {
            crop: Some((9, 9)),
            ..Default::default()
        };
        assert!(aug.apply(sample(4, 4), 0, 0, 0, 0).is_err());
    }
}
