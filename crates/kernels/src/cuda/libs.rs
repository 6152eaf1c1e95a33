//! Which CUDA libraries can be loaded. cudarc panics when a library it needs is missing, so
//! every CUDA path asks here first; a missing library is a normal outcome, not a crash.

use std::fmt;
use std::sync::OnceLock;

/// Why CUDA cannot be used on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaUnavailable {
    /// A shared library could not be loaded (`name` is e.g. "CUDA driver (libcuda)").
    MissingLibrary {
        /// The library that was not found.
        name: &'static str,
        /// What usually provides it.
        hint: &'static str,
    },
    /// The driver loaded but reports no device with this ordinal.
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices the driver sees.
        count: usize,
    },
    /// The driver refused (e.g. `cuInit` failed because no GPU or a driver/library mismatch).
    Driver(String),
}

impl fmt::Display for CudaUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLibrary { name, hint } => write!(f, "no {name} found ({hint})"),
            Self::NoDevice { ordinal, count } => {
                write!(
                    f,
                    "no CUDA device {ordinal}: the driver sees {count} device(s)"
                )
            }
            Self::Driver(msg) => write!(f, "CUDA driver error: {msg}"),
        }
    }
}

impl std::error::Error for CudaUnavailable {}

/// Presence of the three libraries, probed once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LibraryStatus {
    /// libcuda (the driver).
    pub driver: bool,
    /// libnvrtc (run-time compilation of the kernels).
    pub nvrtc: bool,
    /// libcublas (matrix products).
    pub cublas: bool,
}

/// Probes (once) which CUDA libraries can be loaded.
pub fn library_status() -> LibraryStatus {
    static STATUS: OnceLock<LibraryStatus> = OnceLock::new();
    *STATUS.get_or_init(|| {
        // SAFETY: these only try to dlopen candidate names; they call nothing inside.
        unsafe {
            LibraryStatus {
                driver: cudarc::driver::sys::is_culib_present(),
                nvrtc: cudarc::nvrtc::sys::is_culib_present(),
                cublas: cudarc::cublas::sys::is_culib_present(),
            }
        }
    })
}

/// Ok when NVRTC can be loaded (enough to compile kernels, no GPU needed).
pub fn require_nvrtc() -> Result<(), CudaUnavailable> {
    if library_status().nvrtc {
        Ok(())
    } else {
        Err(CudaUnavailable::MissingLibrary {
            name: "NVRTC library (libnvrtc)",
            hint: "install the CUDA toolkit or the `nvidia-cuda-nvrtc` pip wheel and put its lib \
                   folder on LD_LIBRARY_PATH",
        })
    }
}

/// Ok when the driver, NVRTC and cuBLAS can all be loaded (what a [`super::Gpu`] needs).
pub fn require_all() -> Result<(), CudaUnavailable> {
    let s = library_status();
    if !s.driver {
        return Err(CudaUnavailable::MissingLibrary {
            name: "CUDA driver (libcuda)",
            hint: "no NVIDIA driver is installed on this machine",
        });
    }
    require_nvrtc()?;
    if !s.cublas {
        return Err(CudaUnavailable::MissingLibrary {
            name: "cuBLAS library (libcublas)",
            hint: "install the CUDA toolkit or the `nvidia-cublas` pip wheel and put its lib \
                   folder on LD_LIBRARY_PATH",
        });
    }
    Ok(())
}
