//! CUDA twin of [`crate::cpu::conv`]: 2-D convolution (NCHW, any kernel size, one stride and
//! one zero padding for both axes, optional bias) as im2col / col2im kernels (kernels/conv.cu)
//! around the device [`gemm`].
//!
//! Images are processed in chunks whose column buffer stays under [`COL_BUDGET_BYTES`]:
//! - forward: im2col in image-major layout [nb][K][oh·ow], then one strided-batched GEMM over
//!   the chunk's images (stride 0 for the shared weight) straight into y; a bias is written
//!   into y first and the GEMM accumulates onto it (beta 1). A 1x1, stride-1, unpadded conv
//!   reads x directly as its column matrix.
//! - backward: dy of the chunk transposed to [c_out, nb·oh·ow] and the columns in the folded
//!   layout [K, nb·oh·ow]; dw (+)= dy·colᵀ is one GEMM per chunk with the batch in the depth,
//!   the chunks accumulated in order (beta 0, then 1); dx comes from dcol = wᵀ·dy (one GEMM)
//!   and a gather col2im. dbias is a fixed-order per-channel reduction. No atomics anywhere:
//!   results are bit-for-bit reproducible.

use cudarc::driver::LaunchConfig;

use super::buffer::{Arg, GpuBuffer};
use super::elementwise::THREADS;
use super::gemm::{Gemm, gemm};
use super::gpu::Gpu;
use super::pool::elems;
use super::sources::CONV;
use crate::cpu::Conv2dShape;
use crate::error::{KernelError, Result};

/// Most bytes the column scratch (and the transposed dy chunk) of one call may take; images
/// are chunked to stay below it (one image at a time at least).
pub const COL_BUDGET_BYTES: usize = 256 << 20;

/// The validated sizes of one convolution, with the kernels' integer arguments.
struct Plan {
    s: Conv2dShape,
    oh: usize,
    ow: usize,
    /// Rows of the column matrix, c_in·kh·kw.
    k: usize,
    /// Elements of one input image, c_in·h·w.
    x_img: usize,
    /// Elements of one output image, c_out·oh·ow.
    y_img: usize,
}

impl Plan {
    /// Validates `s` as the CPU twin does (same messages, this op's name) and checks that every
    /// per-pixel quantity fits the kernels' `int`s.
    fn new(op: &'static str, s: &Conv2dShape) -> Result<Self> {
        s.validate_for(op)?;
        let (oh, ow) = (s.out_h(), s.out_w());
        let k = s.c_in * s.kh * s.kw;
        for (name, v) in [
            ("c_in", s.c_in),
            ("h", s.h),
            ("w", s.w),
            ("c_out", s.c_out),
            ("kh", s.kh),
            ("kw", s.kw),
            ("stride", s.stride),
            ("pad", s.pad),
            ("h + 2·pad", s.h + 2 * s.pad),
            ("w + 2·pad", s.w + 2 * s.pad),
            ("c_in·kh·kw", k),
            ("h·w", s.h * s.w),
            ("out_h·out_w", oh * ow),
        ] {
            if i32::try_from(v).is_err() {
                return Err(KernelError::new(
                    op,
                    format!("{name} = {v} does not fit in i32 (shape {s:?})"),
                ));
            }
        }
        Ok(Self {
            s: *s,
            oh,
            ow,
            k,
            x_img: s.c_in * s.h * s.w,
            y_img: s.c_out * oh * ow,
        })
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1, stride-1, unpadded conv: each image is its own image-major column matrix.
    fn is_pointwise(&self) -> bool {
        let s = &self.s;
        s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad == 0
    }

    /// Images per chunk so that the column buffer and the transposed dy stay in `budget` bytes.
    fn images_per_chunk(&self, budget: usize) -> usize {
        let per_image = self.k.max(self.s.c_out) * self.ohw() * std::mem::size_of::<f32>();
        (budget / per_image.max(1)).clamp(1, self.s.n.min(i32::MAX as usize))
    }

    /// The geometry arguments shared by conv_im2col and conv_col2im, after `nb`.
    fn geometry(&self) -> [Arg<'static>; 9] {
        let s = &self.s;
        [
            Arg::i32(s.c_in as i32),
            Arg::i32(s.h as i32),
            Arg::i32(s.w as i32),
            Arg::i32(s.kh as i32),
            Arg::i32(s.kw as i32),
            Arg::i32(s.stride as i32),
            Arg::i32(s.pad as i32),
            Arg::i32(self.oh as i32),
            Arg::i32(self.ow as i32),
        ]
    }

    /// Writes the column matrix of images img0..img0+nb of x into col (image-major or folded).
    fn im2col(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer<f32>,
        (img0, nb): (usize, usize),
        folded: bool,
        col: &mut GpuBuffer<f32>,
    ) -> Result<()> {
        let mut args = vec![x.arg_at(img0 * self.x_img), Arg::i32(nb as i32)];
        args.extend(self.geometry());
        args.push(Arg::i32(folded as i32));
        args.push(col.arg_mut());
        gpu.launch(
            &CONV,
            "conv_im2col",
            elems(gpu, nb * self.k * self.ohw()),
            &args,
        )
    }
}

/// Forward convolution: y = conv(x, w) + bias. x [n, c_in, h, w], w [c_out, c_in, kh, kw],
/// bias [c_out], y [n, c_out, out_h, out_w] (overwritten).
pub fn conv2d_forward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &GpuBuffer<f32>,
    w: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &mut GpuBuffer<f32>,
) -> Result<()> {
    let p = Plan::new("cuda::conv2d_forward", s)?;
    let nb = p.images_per_chunk(COL_BUDGET_BYTES);
    forward(&p, gpu, x, w, bias, y, nb)
}

/// [`conv2d_forward`] with at most `images_per_chunk` images per column buffer (the plain
/// call derives it from [`COL_BUDGET_BYTES`]); for memory-constrained callers and tests.
pub fn conv2d_forward_chunked(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &GpuBuffer<f32>,
    w: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &mut GpuBuffer<f32>,
    images_per_chunk: usize,
) -> Result<()> {
    let p = Plan::new("cuda::conv2d_forward", s)?;
    forward(&p, gpu, x, w, bias, y, chunk_arg(images_per_chunk, s.n))
}

/// The chunk size a caller asked for, clamped to [1, min(n, i32::MAX)].
fn chunk_arg(images_per_chunk: usize, n: usize) -> usize {
    images_per_chunk.clamp(1, n.clamp(1, i32::MAX as usize))
}

fn forward(
    p: &Plan,
    gpu: &Gpu,
    x: &GpuBuffer<f32>,
    w: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &mut GpuBuffer<f32>,
    nb: usize,
) -> Result<()> {
    const OP: &str = "cuda::conv2d_forward";
    let s = &p.s;
    let bias_len = bias.map(|b| ("bias", b.len()));
    s.check_bufs(
        OP,
        (x.len(), w.len()),
        ("y", y.len()),
        (None, None),
        bias_len,
    )?;
    let (k, ohw) = (p.k, p.ohw());
    let beta = match bias {
        Some(b) => {
            // y = bias everywhere, then the GEMMs accumulate the products onto it.
            gpu.launch(
                &CONV,
                "conv_bias_fill",
                elems(gpu, y.len()),
                &[
                    b.arg(),
                    Arg::i64(y.len() as i64),
                    Arg::i32(s.c_out as i32),
                    Arg::i64(ohw as i64),
                    y.arg_mut(),
                ],
            )?;
            1.0
        }
        None => 0.0,
    };
    let mut col = if p.is_pointwise() {
        None
    } else {
        Some(gpu.alloc::<f32>(nb * k * ohw)?)
    };
    let mut img0 = 0;
    while img0 < s.n {
        let nbc = nb.min(s.n - img0);
        // y[img] [c_out, ohw] = w [c_out, K] · col[img] [K, ohw] for each image of the chunk.
        let g = Gemm::new(s.c_out, k, ohw)
            .scale(1.0, beta)
            .batched(nbc)
            .strides(0, k * ohw, p.y_img);
        match col.as_mut() {
            None => gemm(gpu, &g, (w, 0), (x, img0 * p.x_img), (y, img0 * p.y_img))?,
            Some(col) => {
                p.im2col(gpu, x, (img0, nbc), false, col)?;
                gemm(gpu, &g, (w, 0), (col, 0), (y, img0 * p.y_img))?;
            }
        }
        img0 += nbc;
    }
    Ok(())
}

/// Backward convolution. Writes (overwrites) whichever of dx [n, c_in, h, w],
/// dw [c_out, c_in, kh, kw] and dbias [c_out] are given.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &GpuBuffer<f32>,
    w: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: Option<&mut GpuBuffer<f32>>,
    dw: Option<&mut GpuBuffer<f32>>,
    dbias: Option<&mut GpuBuffer<f32>>,
) -> Result<()> {
    let p = Plan::new("cuda::conv2d_backward", s)?;
    let nb = p.images_per_chunk(COL_BUDGET_BYTES);
    backward(&p, gpu, (x, w, dy), dx, dw, dbias, nb)
}

/// [`conv2d_backward`] with at most `images_per_chunk` images per column buffer (the plain
/// call derives it from [`COL_BUDGET_BYTES`]); for memory-constrained callers and tests. The
/// weight gradient's summation order depends on the chunking.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_chunked(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &GpuBuffer<f32>,
    w: &GpuBuffer<f32>,
    dy: &GpuBuffer<f32>,
    dx: Option<&mut GpuBuffer<f32>>,
    dw: Option<&mut GpuBuffer<f32>>,
    dbias: Option<&mut GpuBuffer<f32>>,
    images_per_chunk: usize,
) -> Result<()> {
    let p = Plan::new("cuda::conv2d_backward", s)?;
    let nb = chunk_arg(images_per_chunk, s.n);
    backward(&p, gpu, (x, w, dy), dx, dw, dbias, nb)
}

type Inputs<'a> = (&'a GpuBuffer<f32>, &'a GpuBuffer<f32>, &'a GpuBuffer<f32>);

fn backward(
    p: &Plan,
    gpu: &Gpu,
    (x, w, dy): Inputs<'_>,
    mut dx: Option<&mut GpuBuffer<f32>>,
    mut dw: Option<&mut GpuBuffer<f32>>,
    dbias: Option<&mut GpuBuffer<f32>>,
    nb: usize,
) -> Result<()> {
    const OP: &str = "cuda::conv2d_backward";
    let s = &p.s;
    s.check_bufs(
        OP,
        (x.len(), w.len()),
        ("dy", dy.len()),
        (dx.as_ref().map(|d| d.len()), dw.as_ref().map(|d| d.len())),
        dbias.as_ref().map(|d| ("dbias", d.len())),
    )?;
    let (k, ohw, c_out) = (p.k, p.ohw(), s.c_out);

    if let Some(db) = dbias {
        gpu.launch(
            &CONV,
            "conv_bias_grad",
            LaunchConfig {
                grid_dim: (c_out as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            },
            &[
                dy.arg(),
                Arg::i64(s.n as i64),
                Arg::i32(c_out as i32),
                Arg::i64(ohw as i64),
                db.arg_mut(),
            ],
        )?;
    }
    if dx.is_none() && dw.is_none() {
        return Ok(());
    }
    // A pointwise dx is one batched GEMM from dy itself; everything else reads dy transposed.
    let direct_dx = p.is_pointwise();
    let need_dyt = dw.is_some() || !direct_dx;
    let need_col = dw.is_some() || (dx.is_some() && !direct_dx);
    let mut dyt = if need_dyt {
        Some(gpu.alloc::<f32>(c_out * nb * ohw)?)
    } else {
        None
    };
    let mut col = if need_col {
        Some(gpu.alloc::<f32>(k * nb * ohw)?)
    } else {
        None
    };
    let mut img0 = 0;
    while img0 < s.n {
        let nbc = nb.min(s.n - img0);
        let cols = nbc * ohw;
        if let Some(t) = dyt.as_mut() {
            gpu.launch(
                &CONV,
                "conv_nchw_to_cn",
                elems(gpu, c_out * cols),
                &[
                    dy.arg_at(img0 * p.y_img),
                    Arg::i32(nbc as i32),
                    Arg::i32(c_out as i32),
                    Arg::i64(ohw as i64),
                    t.arg_mut(),
                ],
            )?;
        }
        if let Some(dw) = dw.as_deref_mut() {
            let (col, dyt) = (col.as_mut().expect("col"), dyt.as_ref().expect("dyt"));
            p.im2col(gpu, x, (img0, nbc), true, col)?;
            // dw [c_out, K] (+)= dyᵀ-chunk [c_out, nb·ohw] · colᵀ [nb·ohw, K], chunks in order.
            let beta = if img0 == 0 { 0.0 } else { 1.0 };
            let g = Gemm::new(c_out, cols, k)
                .trans(false, true)
                .scale(1.0, beta);
            gemm(gpu, &g, (dyt, 0), (col, 0), (dw, 0))?;
        }
        if let Some(dx) = dx.as_deref_mut() {
            if direct_dx {
                // dx[img] [c_in, hw] = wᵀ [c_in, c_out] · dy[img] [c_out, hw].
                let g = Gemm::new(k, c_out, ohw)
                    .trans(true, false)
                    .batched(nbc)
                    .strides(0, p.y_img, p.x_img);
                gemm(gpu, &g, (w, 0), (dy, img0 * p.y_img), (dx, img0 * p.x_img))?;
            } else {
                let (col, dyt) = (col.as_mut().expect("col"), dyt.as_ref().expect("dyt"));
                // dcol [K, nb·ohw] = wᵀ [K, c_out] · dyᵀ-chunk [c_out, nb·ohw] (reuses the
                // column buffer: the stream runs the dw product first).
                let g = Gemm::new(k, c_out, cols).trans(true, false);
                gemm(gpu, &g, (w, 0), (dyt, 0), (col, 0))?;
                let mut args = vec![col.arg(), Arg::i32(nbc as i32)];
                args.extend(p.geometry());
                args.push(Arg::i32(1));
                args.push(dx.arg_mut_at(img0 * p.x_img));
                gpu.launch(&CONV, "conv_col2im", elems(gpu, nbc * p.x_img), &args)?;
            }
        }
        img0 += nbc;
    }
    Ok(())
}
