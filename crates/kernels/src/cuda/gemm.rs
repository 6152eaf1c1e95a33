//! Matrix products on the device: cuBLAS on a GPU, a plain f64-accumulating reference on the
//! emulator. Row-major like [`crate::cpu::matmul`]: `C = alpha·op(A)·op(B) + beta·C`.

use cudarc::cublas::sys::cublasOperation_t;

use super::buffer::{GpuBuffer, Repr};
use super::gpu::Gpu;
use crate::error::{KernelError, Result};

/// Op name in errors.
const OP: &str = "cuda::gemm";

/// Floating-point operations (2·m·n·k per product) of every product issued by this process.
static FLOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Floating-point operations issued by [`gemm`] so far in this process (for "fraction of
/// the device's matrix-product throughput" figures: read it before and after a step).
pub fn gemm_flops() -> u64 {
    FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Shape of a (strided, batched) row-major product `C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b]`
/// with `op(A)` m x k, `op(B)` k x n, `C` m x n, matrix `b` of each operand starting
/// `b·stride` elements after its offset (stride 0 shares one matrix across the batch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(A), rows of op(B).
    pub k: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// A is stored k x m (row-major) and used transposed.
    pub trans_a: bool,
    /// B is stored n x k (row-major) and used transposed.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old C (0 overwrites C, whatever it held).
    pub beta: f32,
    /// Number of products.
    pub batch: usize,
    /// Elements between consecutive A matrices.
    pub stride_a: usize,
    /// Elements between consecutive B matrices.
    pub stride_b: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
}

impl Gemm {
    /// One product `C = op(A)·op(B)` of these sizes (no transposes, alpha 1, beta 0).
    pub fn new(m: usize, k: usize, n: usize) -> Self {
        Self {
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }

    /// Sets the transposes.
    pub fn trans(mut self, trans_a: bool, trans_b: bool) -> Self {
        self.trans_a = trans_a;
        self.trans_b = trans_b;
        self
    }

    /// Sets alpha and beta.
    pub fn scale(mut self, alpha: f32, beta: f32) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }

    /// `batch` products over contiguous matrices.
    pub fn batched(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Sets the strides between matrices (0 shares one matrix across the batch).
    pub fn strides(mut self, a: usize, b: usize, c: usize) -> Self {
        self.stride_a = a;
        self.stride_b = b;
        self.stride_c = c;
        self
    }

    /// Elements an operand spans from its offset: (batch - 1)·stride + one matrix.
    fn span(&self, stride: usize, one: usize) -> Option<usize> {
        (self.batch - 1).checked_mul(stride)?.checked_add(one)
    }

    fn validate(&self, a: (usize, usize), b: (usize, usize), c: (usize, usize)) -> Result<()> {
        let Self { m, k, n, batch, .. } = *self;
        if m == 0 || k == 0 || n == 0 || batch == 0 {
            return Err(KernelError::new(
                OP,
                format!("empty product: m = {m}, k = {k}, n = {n}, batch = {batch}"),
            ));
        }
        if [m, k, n].iter().any(|&d| d > i32::MAX as usize) || batch > i32::MAX as usize {
            return Err(KernelError::new(
                OP,
                "a dimension exceeds i32 (cuBLAS limit)",
            ));
        }
        for (name, (len, off), stride, one) in [
            ("a", a, self.stride_a, m * k),
            ("b", b, self.stride_b, k * n),
            ("c", c, self.stride_c, m * n),
        ] {
            let need = self
                .span(stride, one)
                .and_then(|s| s.checked_add(off))
                .ok_or_else(|| KernelError::new(OP, format!("{name}: size overflows")))?;
            if need > len {
                return Err(KernelError::new(
                    OP,
                    format!(
                        "{name} holds {len} elements; offset {off} + {} batch(es) of stride \
                         {stride} over {one}-element matrices needs {need}",
                        self.batch
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Runs `g` with A, B, C starting at the given element offsets of their buffers.
/// Asynchronous on a GPU (cuBLAS on the handle's stream).
pub fn gemm(
    gpu: &Gpu,
    g: &Gemm,
    a: (&GpuBuffer<f32>, usize),
    b: (&GpuBuffer<f32>, usize),
    c: (&mut GpuBuffer<f32>, usize),
) -> Result<()> {
    g.validate((a.0.len(), a.1), (b.0.len(), b.1), (c.0.len(), c.1))?;
    let flops = 2 * (g.m * g.n * g.k * g.batch) as u64;
    FLOPS.fetch_add(flops, std::sync::atomic::Ordering::Relaxed);
    let (a_ptr, b_ptr) = (a.0.arg_at(a.1).raw_ptr(), b.0.arg_at(b.1).raw_ptr());
    if let Some(blas) = gpu.blas() {
        let c_ptr = c.0.arg_mut_at(c.1).raw_ptr();
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
        let lda = if g.trans_a { g.m } else { g.k };
        let ldb = if g.trans_b { g.k } else { g.n };
        // SAFETY: the pointers come from live buffers borrowed for the call, and `validate`
        // checked that every matrix of the batch lies inside its buffer.
        unsafe {
            cudarc::cublas::result::sgemm_strided_batched(
                *blas.handle(),
                op(g.trans_b),
                op(g.trans_a),
                g.n as i32,
                g.m as i32,
                g.k as i32,
                &g.alpha,
                b_ptr as *const f32,
                ldb as i32,
                g.stride_b as i64,
                a_ptr as *const f32,
                lda as i32,
                g.stride_a as i64,
                &g.beta,
                c_ptr as *mut f32,
                g.n as i32,
                g.stride_c as i64,
                g.batch as i32,
            )
        }
        .map_err(|e| KernelError::new(OP, format!("cublasSgemmStridedBatched: {e:?}")))?;
        return Ok(());
    }
    let (Repr::Emu(ea), Repr::Emu(eb)) = (&a.0.repr, &b.0.repr) else {
        return Err(KernelError::new(OP, "operands belong to different devices"));
    };
    let (sa, sb) = (ea.as_slice(), eb.as_slice());
    let Repr::Emu(ec) = &mut c.0.repr else {
        return Err(KernelError::new(OP, "operands belong to different devices"));
    };
    reference(g, (sa, a.1), (sb, b.1), (ec.as_mut_slice(), c.1));
    Ok(())
}

/// The emulator's product: f64 sums, the exact meaning of the cuBLAS call above. The operands
/// are widened to f64 and multiplied by the `gemm` crate (a naive triple loop here was a quarter
/// of an emulated training step).
fn reference(g: &Gemm, a: (&[f32], usize), b: (&[f32], usize), c: (&mut [f32], usize)) {
    let Gemm { m, k, n, .. } = *g;
    // A is stored m x k (row stride k), or k x m when transposed (row stride 1, column
    // stride m); likewise B. The f64 copies keep the stored layout.
    let (a_rs, a_cs) = if g.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k) } else { (n, 1) };
    // One set of f64 buffers for every matrix of the batch.
    let (mut a64, mut b64, mut c64) = (vec![0.0f64; m * k], vec![0.0f64; k * n], vec![0.0; m * n]);
    let widen = |src: &[f32], dst: &mut [f64]| {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as f64;
        }
    };
    for bi in 0..g.batch {
        let (a0, b0, c0) = (
            a.1 + bi * g.stride_a,
            b.1 + bi * g.stride_b,
            c.1 + bi * g.stride_c,
        );
        widen(&a.0[a0..a0 + m * k], &mut a64);
        widen(&b.0[b0..b0 + k * n], &mut b64);
        if k > 0 {
            // SAFETY: a64 and b64 hold op(A) and op(B) at the strides above, c64 is m x n
            // row-major; the three are distinct and live for the call.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c64.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a64.as_ptr(),
                    a_cs as isize,
                    a_rs as isize,
                    b64.as_ptr(),
                    b_cs as isize,
                    b_rs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        } else {
            c64.fill(0.0);
        }
        for (out, &s) in c.0[c0..c0 + m * n].iter_mut().zip(&c64) {
            // beta = 0 ignores the old C entirely (it may be NaN), as cuBLAS does.
            let old = if g.beta == 0.0 {
                0.0
            } else {
                g.beta as f64 * *out as f64
            };
            *out = (g.alpha as f64 * s + old) as f32;
        }
    }
}
