//! Summary statistics of a data set (the normalisation constants a loader needs).

use crate::error::Result;
use crate::sample::Dataset;

/// Per-channel mean and standard deviation of `v / 255`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Standard deviation per channel (population form).
    pub std: Vec<f64>,
    /// Images they were computed over.
    pub images: usize,
}

/// Statistics over at most `max_images` evenly spaced images of `ds` (decoding each);
/// `None` for an empty data set or `max_images = 0`.
pub fn channel_stats(ds: &dyn Dataset, max_images: usize) -> Result<Option<ChannelStats>> {
    let n = ds.len().min(max_images);
    if n == 0 {
        return Ok(None);
    }
    let (mut sum, mut sq, mut count) = (Vec::new(), Vec::new(), 0u64);
    for k in 0..n {
        let s = ds.get(k * ds.len() / n)?;
        let c = s.image.channels;
        sum.resize(c, 0f64);
        sq.resize(c, 0f64);
        for px in s.image.data.chunks_exact(c) {
            for (ch, &v) in px.iter().enumerate() {
                let v = v as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
        count += (s.image.height * s.image.width) as u64;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / count as f64 - m * m).max(0.0).sqrt())
        .collect();
    Ok(Some(ChannelStats {
        mean,
        std,
        images: n,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{InMemory, TaskSpec};

    #[test]
    fn known_mean_and_std() {
        // Two 1x2 grey images: values 0, 255 and 255, 255 -> mean 0.75, std sqrt(0.1875).
        let ds = InMemory {
            height: 1,
            width: 2,
            channels: 1,
            pixels: vec![0, 255, 255, 255],
            task_specs: vec![TaskSpec::class("digit", 10)],
            labels: vec![vec![0, 1]],
        };
        let s = channel_stats(&ds, 10).unwrap().unwrap();
        assert_eq!(s.images, 2);
        assert!((s.mean[0] - 0.75).abs() < 1e-12);
        assert!((s.std[0] - 0.1875f64.sqrt()).abs() < 1e-12);
        assert_eq!(channel_stats(&ds, 0).unwrap(), None);
    }
}
