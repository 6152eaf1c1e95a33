//! Resizing: bilinear (half-pixel centres, no antialias, like OpenCV INTER_LINEAR and
//! PyTorch `align_corners=False`), area (exact box average, like OpenCV INTER_AREA) and nearest.

use crate::image::Image;

/// Interpolation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Bilinear with half-pixel centres; good for upsampling and mild downsampling.
    Bilinear,
    /// Exact area average; the right choice for downsampling (no aliasing).
    Area,
    /// Nearest neighbour (half-pixel centres); for label maps and invalid-value-coded depth.
    Nearest,
}

/// One output coordinate's source taps along an axis: (index, weight) pairs.
fn taps(src: usize, dst: usize, interp: Interp) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| match interp {
            Interp::Nearest => {
                let s = (((o as f64 + 0.5) * scale) as usize).min(src - 1);
                vec![(s, 1.0)]
            }
            Interp::Bilinear => {
                let s = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(src - 1);
                let i1 = (i0 + 1).min(src - 1);
                let f = (s - i0 as f64) as f32;
                if i1 == i0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            }
            Interp::Area => {
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut v = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < src {
                    let overlap = (b.min(i as f64 + 1.0) - a.max(i as f64)) / scale;
                    if overlap > 0.0 {
                        v.push((i, overlap as f32));
                    }
                    i += 1;
                }
                v
            }
        })
        .collect()
}

/// Resizes HWC f32 values (`h x w x c`) to `oh x ow`, separably (rows then columns).
pub fn resize_values(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    interp: Interp,
) -> Vec<f32> {
    if h == oh && w == ow {
        return src.to_vec();
    }
    if h == 0 || w == 0 {
        // Nothing to sample from: an empty source gives a zero image rather than a panic.
        return vec![0.0; oh * ow * c];
    }
    let ty = taps(h, oh, interp);
    let tx = taps(w, ow, interp);
    // Vertical pass: oh x w x c.
    let mut mid = vec![0f32; oh * w * c];
    for (oy, t) in ty.iter().enumerate() {
        let row = &mut mid[oy * w * c..(oy + 1) * w * c];
        for &(sy, wt) in t {
            for (m, s) in row.iter_mut().zip(&src[sy * w * c..(sy + 1) * w * c]) {
                *m += wt * s;
            }
        }
    }
    let mut out = vec![0f32; oh * ow * c];
    for oy in 0..oh {
        for (ox, t) in tx.iter().enumerate() {
            let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            for &(sx, wt) in t {
                let s = &mid[(oy * w + sx) * c..(oy * w + sx + 1) * c];
                for (a, b) in o.iter_mut().zip(s) {
                    *a += wt * b;
                }
            }
        }
    }
    out
}

/// Resizes an 8-bit image, rounding to nearest and clamping.
pub fn resize_image(img: &Image, oh: usize, ow: usize, interp: Interp) -> Image {
    if img.height == oh && img.width == ow {
        return img.clone();
    }
    let src: Vec<f32> = img.data.iter().map(|&v| v as f32).collect();
    let out = resize_values(&src, img.height, img.width, img.channels, oh, ow, interp);
    Image::new(
        oh,
        ow,
        img.channels,
        out.iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
    )
}

/// Resizes a label map with nearest neighbour (labels must never be blended).
pub fn resize_labels(src: &[u16], h: usize, w: usize, oh: usize, ow: usize) -> Vec<u16> {
    if h == 0 || w == 0 {
        return vec![u16::MAX; oh * ow];
    }
    let ty = taps(h, oh, Interp::Nearest);
    let tx = taps(w, ow, Interp::Nearest);
    let mut out = Vec::with_capacity(oh * ow);
    for t in &ty {
        for s in &tx {
            out.push(src[t[0].0 * w + s[0].0]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + 11) % 101) as f32).collect()
    }

    #[test]
    fn area_by_integer_factor_is_block_mean() {
        let (h, w, c) = (6, 9, 2);
        let src = pseudo(h * w * c);
        let out = resize_values(&src, h, w, c, 2, 3, Interp::Area);
        for oy in 0..2 {
            for ox in 0..3 {
                for ch in 0..c {
                    let mut s = 0.0f64;
                    for y in 0..3 {
                        for x in 0..3 {
                            s += src[((oy * 3 + y) * w + ox * 3 + x) * c + ch] as f64;
                        }
                    }
                    let got = out[(oy * 3 + ox) * c + ch] as f64;
                    assert!((got - s / 9.0).abs() < 1e-4, "{got} vs {}", s / 9.0);
                }
            }
        }
    }

    #[test]
    fn area_fractional_preserves_mean() {
        let (h, w) = (7, 5);
        let src = pseudo(h * w);
        let out = resize_values(&src, h, w, 1, 3, 2, Interp::Area);
        let m_in: f32 = src.iter().sum::<f32>() / (h * w) as f32;
        let m_out: f32 = out.iter().sum::<f32>() / 6.0;
        assert!((m_in - m_out).abs() < 1e-3, "{m_in} {m_out}");
    }

    #[test]
    fn bilinear_matches_naive_reference() {
        let (h, w, oh, ow) = (5, 4, 7, 9);
        let src = pseudo(h * w);
        let out = resize_values(&src, h, w, 1, oh, ow, Interp::Bilinear);
        let at = |y: usize, x: usize| src[y * w + x] as f64;
        for oy in 0..oh {
            for ox in 0..ow {
                let sy =
                    ((oy as f64 + 0.5) * h as f64 / oh as f64 - 0.5).clamp(0.0, (h - 1) as f64);
                let sx =
                    ((ox as f64 + 0.5) * w as f64 / ow as f64 - 0.5).clamp(0.0, (w - 1) as f64);
                let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (fy, fx) = (sy - y0 as f64, sx - x0 as f64);
                let want = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1))
                    + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1));
                let got = out[oy * ow + ox] as f64;
                assert!((got - want).abs() < 1e-3, "({oy},{ox}) {got} vs {want}");
            }
        }
    }

    #[test]
    fn nearest_labels_only_copy_values() {
        let src: Vec<u16> = (0..12).collect();
        let out = resize_labels(&src, 3, 4, 6, 8);
        assert_eq!(out[0], 0);
        assert_eq!(out[6 * 8 - 1], 11);
        assert!(out.iter().all(|v| src.contains(v)));
    }
}
