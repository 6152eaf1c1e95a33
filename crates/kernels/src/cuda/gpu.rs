//! The `Gpu` handle: a CUDA device (context, stream, cuBLAS handle, the kernels compiled for
//! it) or the CPU emulator, with one API for memory and launches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::buffer::{Arg, DeviceElem, GpuBuffer, Repr};
use super::device::driver_err;
use super::emu::{EmuBuffer, Emulator, RawArg};
use super::libs::{CudaUnavailable, require_all};
use super::sources::{CompileFailure, KernelSource, compile_ptx};
use crate::error::{KernelError, Result, check_len};

/// One device ready to run scalarize's kernels: a real CUDA GPU, or the CPU emulator
/// ([`super::emu`]) that runs the same kernel sources on machines without one.
///
/// On a GPU each `.cu` file is compiled by NVRTC at most once per process and architecture (PTX
/// cache shared by all handles) and loaded at most once per handle. [`Gpu::shared`] gives one
/// handle per device per process.
pub struct Gpu {
    backend: Backend,
    name: String,
    cc: (u32, u32),
    /// Host<->device transfers and explicit synchronisations of this handle.
    transfers: Counters,
    /// Constant tables uploaded once per handle (see [`Gpu::constant`]).
    constants: Mutex<HashMap<ConstKey, Arc<dyn std::any::Any + Send + Sync>>>,
}

/// A constant table's kind, element type and the sizes it was built for.
type ConstKey = (&'static str, std::any::TypeId, Vec<usize>);

/// Host<->device transfers and explicit synchronisations of one [`Gpu`] handle since it was
/// created: every download is a full stream synchronisation that stalls the host, so a
/// training step should show only the ones it means (the loss it logs, the norm it clips by).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Device->host copies ([`Gpu::download`]).
    pub downloads: u64,
    /// Bytes copied device->host.
    pub download_bytes: u64,
    /// Host->device copies ([`Gpu::upload`] and [`Gpu::write`]).
    pub uploads: u64,
    /// Bytes copied host->device.
    pub upload_bytes: u64,
    /// Explicit [`Gpu::synchronize`] calls.
    pub syncs: u64,
}

impl TransferStats {
    /// What happened between `earlier` (a previous reading of the same handle) and `self`.
    pub fn since(&self, earlier: &TransferStats) -> TransferStats {
        TransferStats {
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            syncs: self.syncs - earlier.syncs,
        }
    }
}

/// The atomic counters behind [`TransferStats`] (relaxed: each is a plain tally, read when
/// the caller has finished the work it measures).
#[derive(Default)]
struct Counters {
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    syncs: AtomicU64,
}

impl Counters {
    fn add(count: &AtomicU64, bytes: &AtomicU64, n: usize) {
        count.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What runs the kernels.
enum Backend {
    Cuda(Box<CudaBackend>),
    Emu(Emulator),
}

/// Context, stream, cuBLAS handle and loaded modules of a real device.
struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Loaded modules, shared by every stream handle of the context.
    modules: Arc<Mutex<HashMap<&'static str, Arc<CudaModule>>>>,
    /// The device's default memory pool (a `CUmemoryPool` address), when it has one.
    pool: Option<usize>,
}

/// Device memory of this process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held by live buffers.
    pub in_use: u64,
    /// Reserved from the device (in use plus cached for reuse).
    pub reserved: u64,
    /// Highest `reserved` so far: flat across training steps means no new device
    /// allocation after the first step.
    pub reserved_peak: u64,
}

/// Makes the device's default memory pool (what cudarc's stream-ordered allocations use) keep
/// freed memory instead of returning it at every synchronisation: after the first training
/// step every buffer comes from the cache, with no cudaMalloc. Returns the pool.
fn cache_freed_memory(ctx: &CudaContext) -> Option<usize> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return None;
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut keep = u64::MAX;
    // SAFETY: `ctx` is a live context of this device; the attribute takes a u64.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            .result()
            .ok()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )
        .result()
        .ok()?;
    }
    Some(pool as usize)
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal())
            .field("name", &self.name)
            .field("compute_capability", &self.cc)
            .finish()
    }
}

/// PTX per (file, architecture), compiled once per process.
fn ptx_cache() -> &'static Mutex<HashMap<(&'static str, String), Ptx>> {
    static CACHE: OnceLock<Mutex<HashMap<(&'static str, String), Ptx>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// True when the environment variable is set to 1.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

impl Gpu {
    /// Opens CUDA device `ordinal` (primary context, its default stream, a cuBLAS handle).
    pub fn new(ordinal: usize) -> std::result::Result<Self, CudaUnavailable> {
        require_all()?;
        let count = CudaContext::device_count().map_err(|e| driver_err("cuInit", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaUnavailable::NoDevice {
                ordinal,
                count: count.max(0) as usize,
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_err("cuCtx", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| driver_err("compute capability", e))?;
        let name = ctx.name().map_err(|e| driver_err("cuDeviceGetName", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| CudaUnavailable::Driver(format!("cublasCreate: {e:?}")))?;
        let pool = cache_freed_memory(&ctx);
        Ok(Self {
            backend: Backend::Cuda(Box::new(CudaBackend {
                ctx,
                stream,
                blas,
                modules: Arc::new(Mutex::new(HashMap::new())),
                pool,
            })),
            name,
            cc: (major.max(0) as u32, minor.max(0) as u32),
            transfers: Counters::default(),
            constants: Mutex::default(),
        })
    }

    /// The process-wide handle of CUDA device `ordinal`, created on first use.
    pub fn shared(ordinal: usize) -> std::result::Result<Arc<Self>, CudaUnavailable> {
        static HANDLES: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
        let handles = HANDLES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = map.get(&ordinal) {
            return Ok(g.clone());
        }
        let g = Arc::new(Self::new(ordinal)?);
        map.insert(ordinal, g.clone());
        Ok(g)
    }

    /// The process-wide CPU emulator of a device (needs a host C++ compiler).
    pub fn emulated() -> std::result::Result<Arc<Self>, String> {
        static EMU: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
        EMU.get_or_init(|| {
            Ok(Arc::new(Self {
                backend: Backend::Emu(Emulator::new()?),
                name: "CUDA emulator (CPU)".to_string(),
                cc: (9, 0),
                transfers: Counters::default(),
                constants: Mutex::default(),
            }))
        })
        .clone()
    }

    /// The device tests run on: CUDA device 0 when one is usable, else the emulator.
    ///
    /// `SCALARIZE_REQUIRE_GPU=1` (set by scripts/gpu-check.sh) demands the real device and
    /// panics without one; `SCALARIZE_CUDA_EMULATOR=1` picks the emulator even where a GPU
    /// is present; `SCALARIZE_REQUIRE_EMULATOR=1` (set by CI) makes a missing C++ compiler a
    /// failure. With neither a GPU nor a C++ compiler, prints why `test` is skipped and
    /// returns None.
    pub fn for_tests(test: &str) -> Option<Arc<Self>> {
        if !env_flag("SCALARIZE_CUDA_EMULATOR") {
            match Self::shared(0) {
                Ok(g) => return Some(g),
                Err(why) if env_flag("SCALARIZE_REQUIRE_GPU") => {
                    panic!("{test}: SCALARIZE_REQUIRE_GPU=1 but no usable GPU: {why}")
                }
                Err(_) => {}
            }
        }
        match Self::emulated() {
            Ok(g) => Some(g),
            Err(why) if env_flag("SCALARIZE_REQUIRE_EMULATOR") => {
                panic!("{test}: SCALARIZE_REQUIRE_EMULATOR=1 but the emulator is unusable: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED {test}: no GPU and no emulator: {why}");
                None
            }
        }
    }

    /// Another handle on the same device with its own stream (and cuBLAS handle): work queued
    /// on different streams may run concurrently, e.g. the members of a PBT population. The
    /// kernels already loaded are shared. Buffers belong to the stream that allocated them and
    /// must be used with that handle. On the emulator (synchronous) this is the same handle.
    pub fn new_stream(self: &Arc<Self>) -> Result<Arc<Self>> {
        let Backend::Cuda(c) = &self.backend else {
            return Ok(self.clone());
        };
        let stream = c.ctx.new_stream().map_err(cuda_err("cuStreamCreate"))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| KernelError::new("cublasCreate", format!("{e:?}")))?;
        Ok(Arc::new(Self {
            backend: Backend::Cuda(Box::new(CudaBackend {
                ctx: c.ctx.clone(),
                stream,
                blas,
                modules: c.modules.clone(),
                pool: c.pool,
            })),
            name: self.name.clone(),
            cc: self.cc,
            transfers: Counters::default(),
            constants: Mutex::default(),
        }))
    }

    /// Lets cuBLAS use TF32 tensor cores for f32 products (PyTorch's
    /// `allow_tf32 = True`): about 10 mantissa bits per product, much faster. Off by default,
    /// so products match the CPU to f32 rounding. No effect on the emulator.
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        use cudarc::cublas::sys;
        let Some(c) = self.cuda() else {
            return Ok(());
        };
        let mode = if on {
            sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is live for as long as `self`.
        unsafe { sys::cublasSetMathMode(*c.blas.handle(), mode) }
            .result()
            .map_err(|e| KernelError::new("cublasSetMathMode", format!("{e:?}")))
    }

    /// True when kernels run on the CPU emulator.
    pub fn is_emulated(&self) -> bool {
        matches!(self.backend, Backend::Emu(_))
    }

    fn cuda(&self) -> Option<&CudaBackend> {
        match &self.backend {
            Backend::Cuda(c) => Some(c),
            Backend::Emu(_) => None,
        }
    }

    /// The CUDA context (None on the emulator).
    pub fn context(&self) -> Option<&Arc<CudaContext>> {
        self.cuda().map(|c| &c.ctx)
    }

    /// The stream every kernel of this handle runs on (None on the emulator).
    pub fn stream(&self) -> Option<&Arc<CudaStream>> {
        self.cuda().map(|c| &c.stream)
    }

    /// The cuBLAS handle, bound to [`Gpu::stream`] (None on the emulator).
    pub fn blas(&self) -> Option<&CudaBlas> {
        self.cuda().map(|c| &c.blas)
    }

    /// Device ordinal (0 for the emulator).
    pub fn ordinal(&self) -> usize {
        self.cuda().map_or(0, |c| c.ctx.ordinal())
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor); the emulator reports (9, 0).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// NVRTC target for this device: PTX for its own compute capability.
    pub fn arch(&self) -> String {
        format!("compute_{}{}", self.cc.0, self.cc.1)
    }

    /// The host<->device transfers and explicit synchronisations of this handle so far
    /// (counted alike on a GPU and on the emulator; a stream handle from [`Gpu::new_stream`]
    /// counts its own). Take two readings and [`TransferStats::since`] to measure a step.
    pub fn transfer_stats(&self) -> TransferStats {
        let t = &self.transfers;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransferStats {
            downloads: get(&t.downloads),
            download_bytes: get(&t.download_bytes),
            uploads: get(&t.uploads),
            upload_bytes: get(&t.upload_bytes),
            syncs: get(&t.syncs),
        }
    }

    /// A constant device table (e.g. upsampling taps or a vector of ones), built by `make` and
    /// uploaded on the first request for (`kind`, `sizes`) and shared afterwards: ops that need
    /// one per call would otherwise upload it in every training step. The table must depend
    /// only on `kind` and `sizes`; it lives as long as the handle.
    pub fn constant<T: DeviceElem>(
        &self,
        kind: &'static str,
        sizes: &[usize],
        make: impl FnOnce() -> Vec<T>,
    ) -> Result<Arc<GpuBuffer<T>>> {
        let key = (kind, std::any::TypeId::of::<T>(), sizes.to_vec());
        let mut map = self.constants.lock().unwrap_or_else(|p| p.into_inner());
        // The key holds T's TypeId, so the downcast only fails for a table of another type.
        if let Some(b) = map.get(&key)
            && let Ok(b) = b.clone().downcast::<GpuBuffer<T>>()
        {
            return Ok(b);
        }
        let b = Arc::new(self.upload(&make())?);
        map.insert(key, b.clone());
        Ok(b)
    }

    /// Waits until all work queued on the stream has finished.
    pub fn synchronize(&self, op: &'static str) -> Result<()> {
        self.transfers.syncs.fetch_add(1, Ordering::Relaxed);
        match self.cuda() {
            Some(c) => c
                .stream
                .synchronize()
                .map_err(|e| KernelError::new(op, format!("CUDA error: {e:?}"))),
            None => Ok(()),
        }
    }

    /// Device memory held by this process (the emulator reports its live allocations, with
    /// nothing cached).
    pub fn memory_stats(&self) -> Result<MemoryStats> {
        use cudarc::driver::sys;
        let Some(c) = self.cuda() else {
            let live = super::emu::live_bytes();
            return Ok(MemoryStats {
                in_use: live,
                reserved: live,
                reserved_peak: live,
            });
        };
        let Some(pool) = c.pool else {
            return Err(KernelError::new(
                "memory_stats",
                "this device has no stream-ordered memory pool",
            ));
        };
        let read = |attr| -> Result<u64> {
            let mut v = 0u64;
            // SAFETY: `pool` is the device's default pool; these attributes are u64.
            unsafe {
                sys::cuMemPoolGetAttribute(
                    pool as sys::CUmemoryPool,
                    attr,
                    (&mut v as *mut u64).cast(),
                )
            }
            .result()
            .map_err(cuda_err("cuMemPoolGetAttribute"))?;
            Ok(v)
        };
        use sys::CUmemPool_attribute as A;
        Ok(MemoryStats {
            in_use: read(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            reserved: read(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            reserved_peak: read(A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        })
    }

    /// A buffer of `len` elements with unspecified contents (the emulator fills it with NaN /
    /// all-ones bytes); every kernel that receives it must write what it later reads.
    pub fn alloc<T: DeviceElem>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let repr = match &self.backend {
            Backend::Cuda(c) => Repr::Cuda {
                // SAFETY: the contents are unspecified until written, as documented.
                slice: unsafe { c.stream.alloc::<T>(len) }.map_err(cuda_err("alloc"))?,
                stream: c.stream.clone(),
            },
            Backend::Emu(_) => Repr::Emu(EmuBuffer::new(len, T::POISON_BYTE)?),
        };
        Ok(GpuBuffer { repr })
    }

    /// A buffer of `len` zeros.
    pub fn zeros<T: DeviceElem>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let repr = match &self.backend {
            Backend::Cuda(c) => Repr::Cuda {
                slice: c
                    .stream
                    .alloc_zeros::<T>(len)
                    .map_err(cuda_err("alloc_zeros"))?,
                stream: c.stream.clone(),
            },
            Backend::Emu(_) => Repr::Emu(EmuBuffer::new(len, 0)?),
        };
        Ok(GpuBuffer { repr })
    }

    /// A device copy of `host`.
    pub fn upload<T: DeviceElem>(&self, host: &[T]) -> Result<GpuBuffer<T>> {
        let t = &self.transfers;
        Counters::add(&t.uploads, &t.upload_bytes, std::mem::size_of_val(host));
        let repr = match &self.backend {
            Backend::Cuda(c) => Repr::Cuda {
                slice: c.stream.clone_htod(host).map_err(cuda_err("upload"))?,
                stream: c.stream.clone(),
            },
            Backend::Emu(_) => {
                let mut b = EmuBuffer::new(host.len(), 0)?;
                b.as_mut_slice().copy_from_slice(host);
                Repr::Emu(b)
            }
        };
        Ok(GpuBuffer { repr })
    }

    /// Overwrites `dst` with `host` (same length).
    pub fn write<T: DeviceElem>(&self, host: &[T], dst: &mut GpuBuffer<T>) -> Result<()> {
        check_len("write", "host", host.len(), dst.len())?;
        let t = &self.transfers;
        Counters::add(&t.uploads, &t.upload_bytes, std::mem::size_of_val(host));
        match &mut dst.repr {
            Repr::Cuda { slice, stream } => {
                stream.memcpy_htod(host, slice).map_err(cuda_err("write"))
            }
            Repr::Emu(b) => {
                b.as_mut_slice().copy_from_slice(host);
                Ok(())
            }
        }
    }

    /// The contents of `src` on the host (waits for the work queued before).
    pub fn download<T: DeviceElem>(&self, src: &GpuBuffer<T>) -> Result<Vec<T>> {
        let t = &self.transfers;
        let bytes = src.len() * std::mem::size_of::<T>();
        Counters::add(&t.downloads, &t.download_bytes, bytes);
        match &src.repr {
            Repr::Cuda { slice, stream } => stream.clone_dtoh(slice).map_err(cuda_err("download")),
            Repr::Emu(b) => Ok(b.as_slice().to_vec()),
        }
    }

    /// Copies `len` elements from `src[src_at..]` to `dst[dst_at..]` on the device.
    pub fn copy<T: DeviceElem>(
        &self,
        src: &GpuBuffer<T>,
        src_at: usize,
        dst: &mut GpuBuffer<T>,
        dst_at: usize,
        len: usize,
    ) -> Result<()> {
        let fits = |at: usize, n: usize| at.checked_add(len).is_some_and(|e| e <= n);
        if !fits(src_at, src.len()) || !fits(dst_at, dst.len()) {
            return Err(KernelError::new(
                "copy",
                format!(
                    "{len} elements from {src_at} of {} to {dst_at} of {}: out of range",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        match (&src.repr, &mut dst.repr) {
            (Repr::Cuda { slice: a, stream }, Repr::Cuda { slice: b, .. }) => stream
                .memcpy_dtod(
                    &a.slice(src_at..src_at + len),
                    &mut b.slice_mut(dst_at..dst_at + len),
                )
                .map_err(cuda_err("copy")),
            (Repr::Emu(a), Repr::Emu(b)) => {
                b.as_mut_slice()[dst_at..dst_at + len]
                    .copy_from_slice(&a.as_slice()[src_at..src_at + len]);
                Ok(())
            }
            _ => Err(KernelError::new(
                "copy",
                "source and destination belong to different devices",
            )),
        }
    }

    /// Launches kernel `name` of `src` with `args` in the kernel's parameter order (the
    /// caller matches the signature, as with `cuLaunchKernel`). Asynchronous on a GPU.
    pub fn launch(
        &self,
        src: &KernelSource,
        name: &str,
        cfg: LaunchConfig,
        args: &[Arg<'_>],
    ) -> Result<()> {
        match &self.backend {
            Backend::Cuda(c) => {
                let f = self.function(src, name)?;
                let mut b = c.stream.launch_builder(&f);
                for a in args {
                    match &a.raw {
                        RawArg::Ptr(v) => b.arg(v),
                        RawArg::I32(v) => b.arg(v),
                        RawArg::U32(v) => b.arg(v),
                        RawArg::I64(v) => b.arg(v),
                        RawArg::F32(v) => b.arg(v),
                        RawArg::F64(v) => b.arg(v),
                    };
                }
                // SAFETY: the argument list follows the kernel's signature (caller's contract)
                // and every pointer comes from a live buffer borrowed for the launch.
                unsafe { b.launch(cfg) }.map_err(|e| {
                    KernelError::new("cuLaunchKernel", format!("kernel `{name}`: {e:?}"))
                })?;
                Ok(())
            }
            Backend::Emu(e) => {
                let raw: Vec<RawArg> = args.iter().map(|a| a.raw).collect();
                e.launch(
                    src,
                    name,
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    &raw,
                )
            }
        }
    }

    /// The module of `src`, compiled (once per process and arch) and loaded (once per handle).
    fn module(&self, src: &KernelSource) -> Result<Arc<CudaModule>> {
        let c = self
            .cuda()
            .ok_or_else(|| KernelError::new("module", "the emulator loads no CUDA modules"))?;
        let mut modules = c.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(src.name) {
            return Ok(m.clone());
        }
        let arch = self.arch();
        let ptx = {
            let mut cache = ptx_cache().lock().unwrap_or_else(|p| p.into_inner());
            let key = (src.name, arch.clone());
            match cache.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = compile_ptx(src, &arch)
                        .map_err(|e: CompileFailure| KernelError::new("nvrtc", e.to_string()))?;
                    cache.insert(key, p.clone());
                    p
                }
            }
        };
        let m = c.ctx.load_module(ptx).map_err(|e| {
            KernelError::new(
                "cuModuleLoad",
                format!("loading kernels/{} for {arch}: {e:?}", src.name),
            )
        })?;
        modules.insert(src.name, m.clone());
        Ok(m)
    }

    /// Kernel `name` of `src` (real device only).
    fn function(&self, src: &KernelSource, name: &str) -> Result<CudaFunction> {
        self.module(src)?.load_function(name).map_err(|e| {
            KernelError::new(
                "cuModuleGetFunction",
                format!("kernel `{name}` in kernels/{}: {e:?}", src.name),
            )
        })
    }
}

/// Maps a driver error during `op` to a [`KernelError`].
pub(crate) fn cuda_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::new(op, format!("CUDA error: {e:?}"))
}
