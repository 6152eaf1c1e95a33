//! 2-D convolution (NCHW, any kernel size, one stride and one padding for both axes) as
//! im2col + GEMM over chunks of images, the chunks spread over rayon threads.

use super::checks::{buf, numel};
use super::gemm::gemm_serial;
use crate::error::{KernelError, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Output pixels per GEMM below which several images are packed into one product (a product
/// with few columns runs far below the machine's peak). 64 (one microkernel tile of rows)
/// measured better than 128, 256 or 512 on the ResNet-26 benchmark: batching costs a gather
/// and a scatter of every image.
const MIN_COLS: usize = 64;

/// Shape of a 2-D convolution: input [n, c_in, h, w], weight [c_out, c_in, kh, kw].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
}

impl Conv2dShape {
    /// Output height, (h + 2·pad − kh) / stride + 1 (meaningful once `validate` passed).
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad).saturating_sub(self.kh) / self.stride.max(1) + 1
    }

    /// Output width, (w + 2·pad − kw) / stride + 1 (meaningful once `validate` passed).
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad).saturating_sub(self.kw) / self.stride.max(1) + 1
    }

    /// Checks that no dimension is zero and that the kernel fits the padded input.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("conv2d")
    }

    /// `validate` under the name `op` (the entry points' own names, CPU and CUDA).
    pub(crate) fn validate_for(&self, op: &'static str) -> Result<()> {
        numel(
            op,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
                ("c_out", self.c_out),
                ("kh", self.kh),
                ("kw", self.kw),
                ("stride", self.stride),
            ],
        )?;
        if self.kh > self.h + 2 * self.pad || self.kw > self.w + 2 * self.pad {
            return Err(KernelError::new(
                op,
                format!(
                    "kernel {}x{} is larger than the padded input {}x{} (shape {self:?})",
                    self.kh,
                    self.kw,
                    self.h + 2 * self.pad,
                    self.w + 2 * self.pad
                ),
            ));
        }
        // Every buffer size must fit in usize.
        numel(
            op,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
            ],
        )?;
        numel(
            op,
            &[
                ("n", self.n),
                ("c_out", self.c_out),
                ("out_h", self.out_h()),
                ("out_w", self.out_w()),
            ],
        )?;
        numel(
            op,
            &[
                ("c_in·kh·kw", self.c_in * self.kh * self.kw),
                ("n·out_h·out_w", self.n * self.out_h() * self.out_w()),
            ],
        )?;
        Ok(())
    }

    fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }

    fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }

    /// Rows of the im2col matrix: c_in·kh·kw.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// A 1x1, stride-1, unpadded conv reads each image directly as its im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Images per GEMM: enough for MIN_COLS columns, but leave work for every thread.
    fn images_per_chunk(&self) -> usize {
        let ohw = self.out_h() * self.out_w();
        let want = MIN_COLS.div_ceil(ohw);
        let per_thread = self.n.div_ceil(rayon::current_num_threads().max(1));
        want.min(per_thread).max(1)
    }

    /// The buffer checks of the entry points (CPU and CUDA, each with its own op name), in
    /// order: x and w, `y` (y or dy) [n, c_out, out_h, out_w], then whichever of dx, dw and
    /// `bias` (bias or dbias) [c_out] are given.
    pub(crate) fn check_bufs(
        &self,
        op: &'static str,
        (x, w): (usize, usize),
        (y_name, y): (&str, usize),
        (dx, dw): (Option<usize>, Option<usize>),
        bias: Option<(&str, usize)>,
    ) -> Result<()> {
        let s = self;
        let check_x = |name, len| {
            buf(
                op,
                name,
                len,
                s.x_len(),
                format_args!("[n={}, c_in={}, h={}, w={}]", s.n, s.c_in, s.h, s.w),
            )
        };
        let check_w = |name, len| {
            buf(
                op,
                name,
                len,
                s.w_len(),
                format_args!(
                    "[c_out={}, c_in={}, kh={}, kw={}]",
                    s.c_out, s.c_in, s.kh, s.kw
                ),
            )
        };
        check_x("x", x)?;
        check_w("w", w)?;
        buf(
            op,
            y_name,
            y,
            s.y_len(),
            format_args!(
                "[n={}, c_out={}, out_h={}, out_w={}]",
                s.n,
                s.c_out,
                s.out_h(),
                s.out_w()
            ),
        )?;
        if let Some(len) = dx {
            check_x("dx", len)?;
        }
        if let Some(len) = dw {
            check_w("dw", len)?;
        }
        if let Some((name, len)) = bias {
            buf(op, name, len, s.c_out, format_args!("[c_out={}]", s.c_out))?;
        }
        Ok(())
    }
}

/// Per-thread buffers reused across calls, so that a training step does not allocate, zero and
/// page-fault a fresh im2col matrix for every convolution.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    tmp: Vec<f32>,
    dyc: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (a fresh set if they are already in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => f(&mut sc),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// The first `n` elements of `v`, growing it (never shrinking) as needed.
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        // A fresh buffer (old scratch contents are never read), advised before first touch.
        let fresh = vec![0.0; n];
        super::alloc::advise_huge_pages(&fresh);
        *v = fresh;
    }
    &mut v[..n]
}

/// `im2col_body`, compiled for AVX-512 when the CPU has it (the crate's baseline is SSE2, and
/// the strided gathers and border fills are most of the copy's cost).
fn im2col(s: &Conv2dShape, x: &[f32], nb: usize, col: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU has the features (checked just above).
        unsafe { wide::im2col(s, x, nb, col) };
        return;
    }
    im2col_body(s, x, nb, col)
}

/// `col2im_body`, compiled for AVX-512 when the CPU has it.
fn col2im(s: &Conv2dShape, col: &[f32], nb: usize, dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU has the features (checked just above).
        unsafe { wide::col2im(s, col, nb, dx) };
        return;
    }
    col2im_body(s, col, nb, dx)
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::Conv2dShape;

    #[target_feature(enable = "avx512f")]
    pub(super) fn im2col(s: &Conv2dShape, x: &[f32], nb: usize, col: &mut [f32]) {
        super::im2col_body(s, x, nb, col)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn col2im(s: &Conv2dShape, col: &[f32], nb: usize, dx: &mut [f32]) {
        super::col2im_body(s, col, nb, dx)
    }
}

/// For kernel column `kj`: the output columns `lo..hi` whose input column is inside the image.
fn valid_range(kj: usize, pad: usize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let lo = if kj >= pad {
        0
    } else {
        (pad - kj).div_ceil(stride)
    };
    let hi = if size + pad > kj {
        ((size + pad - kj - 1) / stride + 1).min(out)
    } else {
        0
    };
    let lo = lo.min(out);
    (lo, hi.max(lo))
}

/// One product on the calling thread over strided views, dst (+)= lhs·rhs: `(m, n, depth)`,
/// then each operand as (buffer, row stride, column stride), element (i, j) at i·rs + j·cs.
/// Unlike `gemm_serial` the caller picks the layout, and with it which operand the `gemm`
/// crate packs (the left one when its columns are not contiguous) and which dimension its
/// microkernel vectorises (the rows of dst).
fn gemm_strided(
    (m, n, depth): (usize, usize, usize),
    (dst, d_rs, d_cs): (&mut [f32], usize, usize),
    accumulate: bool,
    (lhs, l_rs, l_cs): (&[f32], usize, usize),
    (rhs, r_rs, r_cs): (&[f32], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, d_rs, d_cs) < dst.len());
    if depth == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * d_rs + j * d_cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last(m, depth, l_rs, l_cs) < lhs.len());
    assert!(last(depth, n, r_rs, r_cs) < rhs.len());
    // SAFETY: every index the product touches is below the asserted maxima, and `dst` is a
    // unique borrow distinct from `lhs` and `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            depth,
            dst.as_mut_ptr(),
            d_cs as isize,
            d_rs as isize,
            accumulate,
            lhs.as_ptr(),
            l_cs as isize,
            l_rs as isize,
            rhs.as_ptr(),
            r_cs as isize,
            r_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Writes the im2col matrix [c_in·kh·kw, nb·oh·ow] of `nb` images `x` into `col`.
#[inline(always)]
fn im2col_body(s: &Conv2dShape, x: &[f32], nb: usize, col: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (ohw, hw) = (oh * ow, s.h * s.w);
    let p = nb * ohw;
    for ci in 0..s.c_in {
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let r = (ci * s.kh + ki) * s.kw + kj;
                let row = &mut col[r * p..(r + 1) * p];
                let (lo, hi) = valid_range(kj, s.pad, s.stride, s.w, ow);
                if s.stride == 1 && ow == s.w {
                    let (oy0, oy1) = valid_range(ki, s.pad, 1, s.h, oh);
                    for img in 0..nb {
                        let plane = &x[(img * s.c_in + ci) * hw..][..hw];
                        let dst = &mut row[img * ohw..][..ohw];
                        shifted_copy(plane, dst, (ki, kj), s.pad, ow, (oy0, oy1), (lo, hi));
                    }
                    continue;
                }
                for img in 0..nb {
                    let plane = &x[(img * s.c_in + ci) * hw..][..hw];
                    for oy in 0..oh {
                        let dst = &mut row[img * ohw + oy * ow..][..ow];
                        let iy = oy * s.stride + ki;
                        if iy < s.pad || iy - s.pad >= s.h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[(iy - s.pad) * s.w..][..s.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        if lo < hi {
                            // ix = ox·stride + kj − pad, non-negative for ox ≥ lo.
                            let first = lo * s.stride + kj - s.pad;
                            if s.stride == 1 {
                                dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                            } else {
                                gather(&mut dst[lo..hi], &src[first..], s.stride);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One im2col row of one image for a stride-1 conv whose output width equals the input width:
/// the row is the input plane shifted by (ki − pad)·w + (kj − pad), so it is one contiguous
/// copy, then zeros where the window hangs over the border (rows outside `oy0..oy1`, columns
/// outside `lo..hi`, which the shift wrapped around from the neighbouring row).
fn shifted_copy(
    plane: &[f32],
    dst: &mut [f32],
    (ki, kj): (usize, usize),
    pad: usize,
    ow: usize,
    (oy0, oy1): (usize, usize),
    (lo, hi): (usize, usize),
) {
    let (a, b) = (oy0 * ow, oy1 * ow);
    dst[..a].fill(0.0);
    dst[b..].fill(0.0);
    if a < b {
        let shift = (ki * ow + kj) as isize - (pad * ow + pad) as isize;
        let sa = (a as isize + shift).max(0) as usize;
        let sb = ((b as isize + shift).max(0) as usize).min(plane.len());
        let (da, db) = (
            (sa as isize - shift) as usize,
            (sb as isize - shift) as usize,
        );
        if da < db {
            dst[da..db].copy_from_slice(&plane[sa..sb]);
            dst[a..da].fill(0.0);
            dst[db..b].fill(0.0);
        } else {
            dst[a..b].fill(0.0);
        }
        for oy in oy0..oy1 {
            let r = &mut dst[oy * ow..(oy + 1) * ow];
            for v in &mut r[..lo] {
                *v = 0.0;
            }
            for v in &mut r[hi..] {
                *v = 0.0;
            }
        }
    }
}

/// dst[i] = src[i·stride], with stride 2 (the ResNet downsampling) as a constant so that it
/// vectorises.
#[inline(always)]
fn gather(dst: &mut [f32], src: &[f32], stride: usize) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    if stride == 2 {
        for (d, pair) in dst[..last].iter_mut().zip(src.chunks_exact(2)) {
            *d = pair[0];
        }
    } else {
        for (d, v) in dst[..last].iter_mut().zip(src.iter().step_by(stride)) {
            *d = *v;
        }
    }
    dst[last] = src[last * stride];
}

/// dst[i·stride] += src[i] (the adjoint of `gather`).
#[inline(always)]
fn scatter_add(dst: &mut [f32], src: &[f32], stride: usize) {
    let Some(last) = src.len().checked_sub(1) else {
        return;
    };
    if stride == 2 {
        for (pair, v) in dst.chunks_exact_mut(2).zip(&src[..last]) {
            pair[0] += *v;
        }
    } else {
        for (d, v) in dst.iter_mut().step_by(stride).zip(&src[..last]) {
            *d += *v;
        }
    }
    dst[last * stride] += src[last];
}

/// Adds the im2col-shaped gradient `col` back onto the `nb` images `dx` (which the caller
/// zeroed first).
#[inline(always)]
fn col2im_body(s: &Conv2dShape, col: &[f32], nb: usize, dx: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (ohw, hw) = (oh * ow, s.h * s.w);
    let p = nb * ohw;
    for img in 0..nb {
        for ci in 0..s.c_in {
            let plane = &mut dx[(img * s.c_in + ci) * hw..][..hw];
            for ki in 0..s.kh {
                for kj in 0..s.kw {
                    let r = (ci * s.kh + ki) * s.kw + kj;
                    let row = &col[r * p + img * ohw..][..ohw];
                    let (lo, hi) = valid_range(kj, s.pad, s.stride, s.w, ow);
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * s.stride + kj - s.pad;
                    for oy in 0..oh {
                        let iy = oy * s.stride + ki;
                        if iy < s.pad || iy - s.pad >= s.h {
                            continue;
                        }
                        let dst = &mut plane[(iy - s.pad) * s.w..][..s.w];
                        let src = &row[oy * ow + lo..oy * ow + hi];
                        if s.stride == 1 {
                            for (d, v) in dst[first..first + hi - lo].iter_mut().zip(src) {
                                *d += *v;
                            }
                        } else {
                            scatter_add(&mut dst[first..], src, s.stride);
                        }
                    }
                }
            }
        }
    }
}

/// Forward convolution: y = conv(x, w) + bias. x [n, c_in, h, w], w [c_out, c_in, kh, kw],
/// bias [c_out], y [n, c_out, out_h, out_w] (overwritten).
pub fn conv2d_forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "conv2d_forward";
    s.validate_for(OP)?;
    let bias_len = bias.map(|b| ("bias", b.len()));
    s.check_bufs(
        OP,
        (x.len(), w.len()),
        ("y", y.len()),
        (None, None),
        bias_len,
    )?;
    let ohw = s.out_h() * s.out_w();
    let (k, c_out) = (s.k(), s.c_out);
    let nb = s.images_per_chunk();
    let x_img = s.c_in * s.h * s.w;
    let y_img = c_out * ohw;
    y.par_chunks_mut(nb * y_img)
        .zip(x.par_chunks(nb * x_img))
        .for_each(|(yc, xc)| {
            with_scratch(|sc| {
                let nbc = yc.len() / y_img;
                let p = nbc * ohw;
                if s.is_pointwise() {
                    // Each image is its own im2col matrix: one product per image straight
                    // from x into y beats gathering the images and scattering the result.
                    for (yi, xi) in yc.chunks_mut(y_img).zip(xc.chunks(x_img)) {
                        gemm_serial(c_out, k, ohw, w, false, xi, false, yi, 1.0, 0.0);
                    }
                    return;
                }
                let colm: &[f32] = {
                    let col = grow(&mut sc.col, k * p);
                    im2col(s, xc, nbc, col);
                    col
                };
                if nbc == 1 {
                    gemm_serial(c_out, k, p, w, false, colm, false, yc, 1.0, 0.0);
                } else {
                    // tmp is [c_out, nbc·ohw]; scatter it to [nbc, c_out, ohw].
                    let tmp = grow(&mut sc.tmp, c_out * p);
                    gemm_serial(c_out, k, p, w, false, colm, false, tmp, 1.0, 0.0);
                    for img in 0..nbc {
                        for co in 0..c_out {
                            yc[(img * c_out + co) * ohw..][..ohw]
                                .copy_from_slice(&tmp[co * p + img * ohw..][..ohw]);
                        }
                    }
                }
            });
            if let Some(b) = bias {
                for (i, plane) in yc.chunks_mut(ohw).enumerate() {
                    let bv = b[i % c_out];
                    plane.iter_mut().for_each(|v| *v += bv);
                }
            }
        });
    Ok(())
}

/// Backward convolution. Writes (overwrites) whichever of dx [n, c_in, h, w],
/// dw [c_out, c_in, kh, kw] and dbias [c_out] are given.
pub fn conv2d_backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    const OP: &str = "conv2d_backward";
    s.validate_for(OP)?;
    s.check_bufs(
        OP,
        (x.len(), w.len()),
        ("dy", dy.len()),
        (dx.as_ref().map(|d| d.len()), dw.as_ref().map(|d| d.len())),
        dbias.as_ref().map(|d| ("dbias", d.len())),
    )?;
    let ohw = s.out_h() * s.out_w();
    let (k, c_out) = (s.k(), s.c_out);
    let nb = s.images_per_chunk();
    let x_img = s.c_in * s.h * s.w;
    let y_img = c_out * ohw;
    let n_chunks = s.n.div_ceil(nb);
    let want_dw = dw.is_some();
    let dw_k_major = k <= c_out;

    if let Some(db) = dbias {
        db.fill(0.0);
        for (i, plane) in dy.chunks(ohw).enumerate() {
            db[i % c_out] += super::accumulate::sum(plane) as f32;
        }
    }
    if dx.is_none() && !want_dw {
        return Ok(());
    }

    // Chunks are split into a fixed number of contiguous groups; each group accumulates its
    // own dw partial in chunk order and the partials are added in group order, so that the
    // result does not depend on how rayon schedules the work.
    let n_groups = n_chunks.min(4 * rayon::current_num_threads().max(1));
    let per_group = n_chunks.div_ceil(n_groups);
    let dwk = c_out * k;
    let mut partials = vec![0.0f32; if want_dw { n_groups * dwk } else { 0 }];
    let mut dx_chunks: Vec<Option<&mut [f32]>> = match dx {
        Some(d) => d.chunks_mut(nb * x_img).map(Some).collect(),
        None => (0..n_chunks).map(|_| None).collect(),
    };
    // (first chunk, the chunks' dx slices, the group's dw partial).
    type Group<'a> = (usize, Vec<Option<&'a mut [f32]>>, Option<&'a mut [f32]>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut part_iter = partials.chunks_mut(dwk.max(1));
    let mut g = 0;
    while !dx_chunks.is_empty() {
        let rest = dx_chunks.split_off(per_group.min(dx_chunks.len()));
        let part = if want_dw { part_iter.next() } else { None };
        groups.push((g * per_group, std::mem::replace(&mut dx_chunks, rest), part));
        g += 1;
    }
    groups
        .into_par_iter()
        .for_each(|(first, chunks, mut part)| {
            for (j, dxc) in chunks.into_iter().enumerate() {
                let img0 = (first + j) * nb;
                let nbc = nb.min(s.n - img0);
                let p = nbc * ohw;
                let xc = &x[img0 * x_img..(img0 + nbc) * x_img];
                let dyc_src = &dy[img0 * y_img..(img0 + nbc) * y_img];
                with_scratch(|sc| {
                    // dy of the chunk as [c_out, nbc·ohw].
                    let dyc: &[f32] = if nbc == 1 {
                        dyc_src
                    } else {
                        let buf = grow(&mut sc.dyc, c_out * p);
                        for img in 0..nbc {
                            for co in 0..c_out {
                                buf[co * p + img * ohw..][..ohw]
                                    .copy_from_slice(&dyc_src[(img * c_out + co) * ohw..][..ohw]);
                            }
                        }
                        buf
                    };
                    if let Some(dw_acc) = part.as_deref_mut() {
                        let colm: &[f32] = if s.is_pointwise() && nbc == 1 {
                            xc
                        } else {
                            let col = grow(&mut sc.col, k * p);
                            im2col(s, xc, nbc, col);
                            col
                        };
                        // dw (+)= dyc [c_out, p] · colᵀ [p, k]. Both operands are contiguous
                        // along p, so the gemm crate copies (packs) its left operand into
                        // column panels: make that the smaller of dy and the im2col matrix.
                        let acc = j != 0;
                        if dw_k_major {
                            // Partial stored [c_out, k]: element (kk, co) at co·k + kk.
                            gemm_strided(
                                (k, c_out, p),
                                (dw_acc, 1, k),
                                acc,
                                (colm, p, 1),
                                (dyc, 1, p),
                            );
                        } else {
                            // Partial stored [k, c_out]: element (co, kk) at kk·c_out + co.
                            gemm_strided(
                                (c_out, k, p),
                                (dw_acc, 1, c_out),
                                acc,
                                (dyc, p, 1),
                                (colm, 1, p),
                            );
                        }
                    }
                    if let Some(dxc) = dxc {
                        if s.is_pointwise() {
                            // Per image, dx [c_in, hw] = wᵀ [c_in, c_out] · dy [c_out, hw].
                            for (dxi, dyi) in dxc.chunks_mut(x_img).zip(dyc_src.chunks(y_img)) {
                                gemm_serial(k, c_out, ohw, w, true, dyi, false, dxi, 1.0, 0.0);
                            }
                        } else {
                            let dcol = grow(&mut sc.tmp, k * p);
                            gemm_serial(k, c_out, p, w, true, dyc, false, dcol, 1.0, 0.0);
                            dxc.fill(0.0);
                            col2im(s, dcol, nbc, dxc);
                        }
                    }
                });
            }
        });

    if let Some(dw) = dw {
        let used = g;
        let (first, rest) = partials.split_at_mut(dwk);
        for part in rest.chunks(dwk).take(used - 1) {
            for (d, v) in first.iter_mut().zip(part) {
                *d += *v;
            }
        }
        if dw_k_major {
            dw.copy_from_slice(first);
        } else {
            // [k, c_out] → [c_out, k].
            for (kk, row) in first.chunks(c_out).enumerate() {
                for (co, v) in row.iter().enumerate() {
                    dw[co * k + kk] = *v;
                }
            }
        }
    }
    Ok(())
}
