//! The `Gpu` handle: context, stream, cuBLAS handle, and the kernels compiled for this device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::device::driver_err;
use super::libs::{CudaUnavailable, require_all};
use super::sources::{CompileFailure, KernelSource, compile_ptx};
use crate::error::{KernelError, Result};

/// One CUDA device ready to run scalarize's kernels.
///
/// Each `.cu` file is compiled by NVRTC at most once per process and architecture (PTX cache
/// shared by all handles) and loaded at most once per handle. [`Gpu::shared`] gives one handle
/// per device per process.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    cc: (u32, u32),
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
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

impl Gpu {
    /// Opens device `ordinal` (primary context, its default stream, a cuBLAS handle).
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
        Ok(Self {
            ctx,
            stream,
            blas,
            cc: (major.max(0) as u32, minor.max(0) as u32),
            name,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The process-wide handle of device `ordinal`, created on first use.
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

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every kernel of this handle runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle (bound to [`Gpu::stream`]).
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// NVRTC target for this device: PTX for its own compute capability.
    pub fn arch(&self) -> String {
        format!("compute_{}{}", self.cc.0, self.cc.1)
    }

    /// Waits until all work queued on the stream has finished.
    pub fn synchronize(&self, op: &'static str) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| KernelError::new(op, format!("CUDA error: {e:?}")))
    }

    /// The module of `src`, compiled (once per process and arch) and loaded (once per handle).
    pub fn module(&self, src: &KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
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
        let m = self.ctx.load_module(ptx).map_err(|e| {
            KernelError::new(
                "cuModuleLoad",
                format!("loading kernels/{} for {arch}: {e:?}", src.name),
            )
        })?;
        modules.insert(src.name, m.clone());
        Ok(m)
    }

    /// Kernel `name` of `src`.
    pub fn function(&self, src: &KernelSource, name: &str) -> Result<CudaFunction> {
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
