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

/// An axis' taps flattened: output `o` reads `weights[o*k .. o*k+k]` at `start[o] ..`.
struct FlatTaps {
    start: Vec<usize>,
    weights: Vec<f32>,
    k: usize,
}

fn flat_taps(src: usize, dst: usize, interp: Interp) -> FlatTaps {
    let lists = taps(src, dst, interp);
    let k = lists
        .iter()
        .map(|t| t.last().map_or(1, |l| l.0 + 1) - t.first().map_or(0, |f| f.0))
        .max()
        .unwrap_or(1);
    let mut start = Vec::with_capacity(dst);
    let mut weights = vec![0f32; dst * k];
    for (o, t) in lists.iter().enumerate() {
        // Shift windows that would run past the end; the extra taps get weight 0.
        let s = t.first().map_or(0, |f| f.0).min(src.saturating_sub(k));
        for &(i, wt) in t {
            weights[o * k + i - s] += wt;
        }
        start.push(s);
    }
    FlatTaps { start, weights, k }
}

/// Separable resize, one output row at a time (vertical taps into a row buffer, then
/// horizontal taps), with the channel count a compile-time constant for the common cases.
fn resize_core<T: Copy + Into<f32>, const C: usize>(
    src: &[T],
    w: usize,
    oh: usize,
    ow: usize,
    ty: &FlatTaps,
    tx: &FlatTaps,
) -> Vec<f32> {
    let wc = w * C;
    let mut row = vec![0f32; wc];
    let mut out = vec![0f32; oh * ow * C];
    for oy in 0..oh {
        row.fill(0.0);
        let sy = ty.start[oy];
        for j in 0..ty.k {
            let wt = ty.weights[oy * ty.k + j];
            if wt == 0.0 {
                continue;
            }
            let s = &src[(sy + j) * wc..(sy + j + 1) * wc];
            for (m, &v) in row.iter_mut().zip(s) {
                *m += wt * v.into();
            }
        }
        let orow = &mut out[oy * ow * C..(oy + 1) * ow * C];
        for (ox, o) in orow.chunks_exact_mut(C).enumerate() {
            let sx = tx.start[ox];
            let ws = &tx.weights[ox * tx.k..(ox + 1) * tx.k];
            let mut acc = [0f32; C];
            for (j, &wt) in ws.iter().enumerate() {
                let p = &row[(sx + j) * C..(sx + j + 1) * C];
                for ch in 0..C {
                    acc[ch] += wt * p[ch];
                }
            }
            o.copy_from_slice(&acc);
        }
    }
    out
}

/// Dispatches on the channel count (1, 2, 3, 4 specialised; others go through a per-channel split).
fn resize_any<T: Copy + Into<f32>>(
    src: &[T],
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    interp: Interp,
) -> Vec<f32> {
    if h == 0 || w == 0 || c == 0 {
        // Nothing to sample from: an empty source gives a zero image rather than a panic.
        return vec![0.0; oh * ow * c];
    }
    let ty = flat_taps(h, oh, interp);
    let tx = flat_taps(w, ow, interp);
    match c {
        1 => resize_core::<T, 1>(src, w, oh, ow, &ty, &tx),
        2 => resize_core::<T, 2>(src, w, oh, ow, &ty, &tx),
        3 => resize_core::<T, 3>(src, w, oh, ow, &ty, &tx),
        4 => resize_core::<T, 4>(src, w, oh, ow, &ty, &tx),
        _ => {
            let mut out = vec![0f32; oh * ow * c];
            for ch in 0..c {
                let plane: Vec<f32> = src.iter().skip(ch).step_by(c).map(|&v| v.into()).collect();
                let r = resize_core::<f32, 1>(&plane, w, oh, ow, &ty, &tx);
                for (i, v) in r.into_iter().enumerate() {
                    out[i * c + ch] = v;
                }
            }
            out
        }
    }
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
    resize_any(src, h, w, c, oh, ow, interp)
}

/// Resizes an 8-bit image, rounding to nearest and clamping.
pub fn resize_image(img: &Image, oh: usize, ow: usize, interp: Interp) -> Image {
    if img.height == oh && img.width == ow {
        return img.clone();
    }
    let out = resize_any(
        &img.data,
        img.height,
        img.width,
        img.channels,
        oh,
        ow,
        interp,
    );
    Image::new(
        oh,
        ow,
        img.channels,
        out.iter()
            .map(|v| (v + 0.5).clamp(0.0, 255.0) as u8)
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
    fn u8_path_many_channels_and_f32_path_agree() {
        for c in [1usize, 3, 5] {
            let (h, w) = (9, 11);
            let data: Vec<u8> = (0..h * w * c).map(|i| ((i * 53 + 7) % 256) as u8).collect();
            let img = Image::new(h, w, c, data.clone());
            let f: Vec<f32> = data.iter().map(|&v| v as f32).collect();
            for interp in [Interp::Bilinear, Interp::Area, Interp::Nearest] {
                for (oh, ow) in [(4, 5), (13, 7), (9, 3)] {
                    let a = resize_image(&img, oh, ow, interp);
                    let b = resize_values(&f, h, w, c, oh, ow, interp);
                    for (x, y) in a.data.iter().zip(&b) {
                        assert!(
                            (*x as f32 - y).abs() <= 0.5 + 1e-3,
                            "{c} {interp:?} {x} {y}"
                        );
                    }
                    // Channel ch of the result equals resizing channel ch alone.
                    for ch in 0..c {
                        let plane: Vec<f32> = f.iter().skip(ch).step_by(c).copied().collect();
                        let r = resize_values(&plane, h, w, 1, oh, ow, interp);
                        for (i, v) in r.iter().enumerate() {
                            assert!((b[i * c + ch] - v).abs() < 1e-3);
                        }
                    }
                }
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
