//! The CUDA emulator: runs the kernels of `kernels/*.cu` on the CPU, exactly as written, so that
//! every CUDA path (launch configuration, argument order, indexing, shared memory, barriers,
//! warp shuffles) is tested on machines without a GPU, CI included.
//!
//! Each `.cu` file is compiled once per process by the host C++ compiler (`$CXX`, else `g++`,
//! `c++`, `clang++`) together with `cuda_emu.hpp` (built-ins, coroutine threads) and a launcher
//! per `extern "C" __global__` kernel, into a shared library cached under the temporary folder.
//! Device memory is host memory with guard bytes on both sides: after every launch the guards
//! of every buffer passed to the kernel are checked, so an out-of-bounds write is an error
//! naming the kernel and the argument. Fresh allocations are filled with NaN / all-ones bytes.
//! Launches run one at a time (one process-wide lock) and synchronously.

use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_int, c_ulong, c_void};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use super::sources::{KernelSource, assemble};
use crate::error::{KernelError, Result};

/// The emulator's C++ header.
pub const HEADER: &str = include_str!("cuda_emu.hpp");

/// Bytes of guard on each side of an emulated allocation.
const GUARD: usize = 256;
/// Byte pattern of the guards.
const GUARD_BYTE: u8 = 0xA5;

/// `emu_launch_<kernel>(grid[3], block[3], shared bytes, args) -> 0 | 1`.
type LaunchFn = unsafe extern "C" fn(*const u32, *const u32, c_ulong, *mut *mut c_void) -> c_int;
/// `emu_last_error() -> message`.
type ErrorFn = unsafe extern "C" fn() -> *const std::ffi::c_char;

/// One compiled `.cu` file.
struct Module {
    lib: libloading::Library,
    kernels: Vec<String>,
}

/// Emulated device memory: every live allocation by start address (data, not guard).
#[derive(Default)]
struct Memory {
    live: BTreeMap<usize, usize>,
}

fn memory() -> &'static Mutex<Memory> {
    static M: OnceLock<Mutex<Memory>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(Memory::default()))
}

/// Bytes held by live emulated allocations (guards not counted).
pub fn live_bytes() -> u64 {
    let mem = memory().lock().unwrap_or_else(|p| p.into_inner());
    mem.live.values().map(|&b| b as u64).sum()
}

/// One emulated device allocation of `len` elements of `T` (host memory with guards).
pub struct EmuBuffer<T> {
    base: *mut u8,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

// SAFETY: the buffer owns its allocation; access goes through &/&mut like a Vec.
unsafe impl<T: Send> Send for EmuBuffer<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for EmuBuffer<T> {}

impl<T: Copy> EmuBuffer<T> {
    /// A buffer of `len` elements, every byte of the data set to `fill`; an error (not an
    /// abort) when the host cannot provide the memory, as a device would report.
    pub fn new(len: usize, fill: u8) -> Result<Self> {
        let too_big = || {
            KernelError::new(
                "cuda emulator",
                format!(
                    "cannot allocate {len} elements of {} bytes",
                    std::mem::size_of::<T>()
                ),
            )
        };
        let data_bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(too_big)?;
        let layout = data_bytes
            .checked_add(2 * GUARD)
            .and_then(|b| Layout::from_size_align(b, 256).ok())
            .ok_or_else(too_big)?;
        // SAFETY: layout has nonzero size (2 * GUARD).
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return Err(too_big());
        }
        // SAFETY: all three ranges lie inside the allocation.
        unsafe {
            std::ptr::write_bytes(base, GUARD_BYTE, GUARD);
            std::ptr::write_bytes(base.add(GUARD), fill, data_bytes);
            std::ptr::write_bytes(base.add(GUARD + data_bytes), GUARD_BYTE, GUARD);
        }
        let b = Self {
            base,
            len,
            _t: std::marker::PhantomData,
        };
        memory()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .insert(b.addr(), data_bytes);
        Ok(b)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first element (what kernels receive).
    pub fn addr(&self) -> usize {
        self.base as usize + GUARD
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the data range holds `len` initialised elements of T (every bit pattern the
        // fills and kernels write is a valid value of the plain number types used here).
        unsafe { std::slice::from_raw_parts(self.addr() as *const T, self.len) }
    }

    /// The elements, writable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.addr() as *mut T, self.len) }
    }
}

impl<T> Drop for EmuBuffer<T> {
    fn drop(&mut self) {
        let data_bytes = self.len * std::mem::size_of::<T>();
        memory()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .remove(&(self.base as usize + GUARD));
        let layout = Layout::from_size_align(data_bytes + 2 * GUARD, 256).expect("layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base, layout) };
    }
}

/// The first guard byte that is not intact around the allocation starting at `addr`.
fn broken_guard(addr: usize, data_bytes: usize) -> Option<isize> {
    // SAFETY: `addr` is the data start of a live allocation with GUARD bytes on each side.
    let (before, after) = unsafe {
        (
            std::slice::from_raw_parts((addr - GUARD) as *const u8, GUARD),
            std::slice::from_raw_parts((addr + data_bytes) as *const u8, GUARD),
        )
    };
    if let Some(i) = before.iter().rposition(|&b| b != GUARD_BYTE) {
        return Some(i as isize - GUARD as isize);
    }
    after
        .iter()
        .position(|&b| b != GUARD_BYTE)
        .map(|i| (data_bytes + i) as isize)
}

/// Rewrites both guards of the allocation starting at `addr`.
fn restore_guards(addr: usize, data_bytes: usize) {
    // SAFETY: as in `broken_guard`.
    unsafe {
        std::ptr::write_bytes((addr - GUARD) as *mut u8, GUARD_BYTE, GUARD);
        std::ptr::write_bytes((addr + data_bytes) as *mut u8, GUARD_BYTE, GUARD);
    }
}

/// The live allocation containing `addr`: (start, data bytes).
fn allocation_of(mem: &Memory, addr: usize) -> Option<(usize, usize)> {
    let (&start, &bytes) = mem.live.range(..=addr).next_back()?;
    (addr <= start + bytes).then_some((start, bytes))
}

/// The host C++ compiler, or why there is none.
pub fn compiler() -> std::result::Result<String, String> {
    static CXX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    CXX.get_or_init(|| {
        let candidates: Vec<String> = match std::env::var("CXX") {
            Ok(c) if !c.trim().is_empty() => vec![c],
            _ => ["g++", "c++", "clang++"].map(String::from).to_vec(),
        };
        for c in &candidates {
            if Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(c.clone());
            }
        }
        Err(format!(
            "no host C++ compiler found (tried {}); the CUDA emulator needs one",
            candidates.join(", ")
        ))
    })
    .clone()
}

/// Names of the `extern "C" __global__` kernels of an assembled source, in order.
pub fn kernel_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("__global__") {
        let before = &rest[..i];
        rest = &rest[i + "__global__".len()..];
        // Only kernels with C linkage have names the launcher (and cudarc) can find.
        let line_start = before.rfind('\n').map_or(0, |k| k + 1);
        if !before[line_start..].contains("extern \"C\"") {
            continue;
        }
        let mut s = rest.trim_start();
        s = s.strip_prefix("void").unwrap_or(s).trim_start();
        if let Some(after) = s.strip_prefix("__launch_bounds__") {
            let mut depth = 0usize;
            let mut end = after.len();
            for (k, ch) in after.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            s = after[end..].trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// The C++ translation unit for `src`: header, kernels, launchers.
fn translation_unit(src: &KernelSource) -> Result<(String, Vec<String>)> {
    let text = assemble(src).map_err(|e| KernelError::new("cuda emulator", e.to_string()))?;
    let kernels = kernel_names(&text);
    let mut tu = String::with_capacity(HEADER.len() + text.len() + 512 * kernels.len());
    tu.push_str(HEADER);
    tu.push_str(&format!("\n#line 1 \"kernels/{}\"\n", src.name));
    tu.push_str(&text);
    tu.push('\n');
    for k in &kernels {
        tu.push_str(&format!(
            "extern \"C\" int emu_launch_{k}(const unsigned* g, const unsigned* b, \
             unsigned long sh, void** a) {{ return emu::launch({k}, g, b, sh, a); }}\n"
        ));
    }
    Ok((tu, kernels))
}

const FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    // Kernels reinterpret shared arrays (a double tile read as floats), as CUDA allows.
    "-fno-strict-aliasing",
    // No multiply-add contraction the GPU code did not ask for (GCC contracts by default on
    // targets with FMA, e.g. aarch64).
    "-ffp-contract=off",
    "-Wno-unknown-pragmas",
];

/// Folder of compiled modules.
fn cache_dir() -> PathBuf {
    match std::env::var_os("SCALARIZE_EMU_CACHE") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join("scalarize-cuda-emu"),
    }
}

/// Compiles `tu` into `dir` (once per content) and returns the library path.
fn compile(dir: &Path, name: &str, tu: &str) -> Result<PathBuf> {
    let cxx = compiler().map_err(|e| KernelError::new("cuda emulator", e))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (tu, &cxx, FLAGS).hash(&mut h);
    let stem = format!("{}-{:016x}", name.trim_end_matches(".cu"), h.finish());
    let lib = dir.join(format!("{stem}.so"));
    if lib.exists() {
        return Ok(lib);
    }
    let err = |what: String| KernelError::new("cuda emulator", what);
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    // Per-process temporaries, then an atomic rename: parallel test processes never see a
    // half-written library.
    let pid = std::process::id();
    let cpp = dir.join(format!("{stem}.{pid}.cpp"));
    let tmp = dir.join(format!("{stem}.{pid}.so.tmp"));
    std::fs::write(&cpp, tu).map_err(|e| err(format!("writing {}: {e}", cpp.display())))?;
    let out = Command::new(&cxx)
        .args(FLAGS)
        .arg(&cpp)
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| err(format!("running {cxx}: {e}")))?;
    let _ = std::fs::remove_file(&cpp);
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!(
            "{cxx} failed to compile kernels/{name} for the emulator:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| {
        err(format!(
            "renaming {} to {}: {e}",
            tmp.display(),
            lib.display()
        ))
    })?;
    Ok(lib)
}

/// One kernel argument as the launcher receives it.
#[derive(Clone, Copy, Debug)]
pub enum RawArg {
    /// A device address (emulated: a host address inside a live allocation, or 0).
    Ptr(u64),
    /// A 32-bit integer.
    I32(i32),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 64-bit integer.
    I64(i64),
    /// An f32.
    F32(f32),
    /// An f64.
    F64(f64),
}

/// The emulated device: compiled modules, launched under one process-wide lock.
#[derive(Default)]
pub struct Emulator {
    modules: Mutex<HashMap<&'static str, Arc<Module>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

/// Serialises launches: the compiled modules share the emulator's global state.
fn launch_lock() -> &'static Mutex<()> {
    static L: Mutex<()> = Mutex::new(());
    &L
}

impl Emulator {
    /// An emulator, if a host C++ compiler is present.
    pub fn new() -> std::result::Result<Self, String> {
        compiler()?;
        Ok(Self::default())
    }

    fn module(&self, src: &KernelSource) -> Result<Arc<Module>> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(src.name) {
            return Ok(m.clone());
        }
        let (tu, kernels) = translation_unit(src)?;
        let path = compile(&cache_dir(), src.name, &tu)?;
        // SAFETY: the library is ours; loading runs no initialisers beyond C++ statics.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
            KernelError::new("cuda emulator", format!("loading {}: {e}", path.display()))
        })?;
        let m = Arc::new(Module { lib, kernels });
        mods.insert(src.name, m.clone());
        Ok(m)
    }

    /// Compiles `src` for the emulator (what [`Emulator::launch`] does on first use).
    pub fn prepare(&self, src: &KernelSource) -> Result<Vec<String>> {
        Ok(self.module(src)?.kernels.clone())
    }

    /// Runs kernel `name` of `src` on the grid, synchronously, then checks the guards of every
    /// buffer a pointer argument points into.
    pub fn launch(
        &self,
        src: &KernelSource,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[RawArg],
    ) -> Result<()> {
        let op = "cuda emulator";
        let m = self.module(src)?;
        if !m.kernels.iter().any(|k| k == name) {
            return Err(KernelError::new(
                op,
                format!(
                    "kernel `{name}` is not an extern \"C\" __global__ of kernels/{}",
                    src.name
                ),
            ));
        }
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Err(KernelError::new(
                op,
                format!("launch of `{name}` with an empty grid {grid:?}"),
            ));
        }
        // Pointer arguments must point into live allocations (no use after free).
        let mut touched = Vec::new();
        {
            let mem = memory().lock().unwrap_or_else(|p| p.into_inner());
            for (i, a) in args.iter().enumerate() {
                if let RawArg::Ptr(p) = *a {
                    if p == 0 {
                        continue;
                    }
                    match allocation_of(&mem, p as usize) {
                        Some(alloc) => touched.push((i, alloc)),
                        None => {
                            return Err(KernelError::new(
                                op,
                                format!(
                                    "argument {i} of `{name}` ({p:#x}) points into no live \
                                     device allocation"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let mut storage: Vec<[u8; 8]> = args
            .iter()
            .map(|a| match *a {
                RawArg::Ptr(p) => p.to_ne_bytes(),
                RawArg::I64(v) => v.to_ne_bytes(),
                RawArg::F64(v) => v.to_ne_bytes(),
                RawArg::I32(v) => pad4(v.to_ne_bytes()),
                RawArg::U32(v) => pad4(v.to_ne_bytes()),
                RawArg::F32(v) => pad4(v.to_ne_bytes()),
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = storage
            .iter_mut()
            .map(|s| s.as_mut_ptr() as *mut c_void)
            .collect();
        let symbol = format!("emu_launch_{name}\0");
        let g = [grid.0, grid.1, grid.2];
        let b = [block.0, block.1, block.2];
        let _guard = launch_lock().lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the symbols are the launcher and error functions the translation unit
        // defines with these signatures; `ptrs` holds one pointer per kernel parameter (the
        // caller matches the kernel's signature, as with cuLaunchKernel), each to 8 bytes.
        let rc = unsafe {
            let launch: libloading::Symbol<LaunchFn> = m
                .lib
                .get(symbol.as_bytes())
                .map_err(|e| KernelError::new(op, format!("launcher of `{name}`: {e}")))?;
            launch(
                g.as_ptr(),
                b.as_ptr(),
                shared_bytes as c_ulong,
                ptrs.as_mut_ptr(),
            )
        };
        if rc != 0 {
            // SAFETY: as above; the message is a NUL-terminated string owned by the library.
            let msg = unsafe {
                let last: libloading::Symbol<ErrorFn> = m
                    .lib
                    .get(b"emu_last_error\0")
                    .map_err(|e| KernelError::new(op, format!("emu_last_error: {e}")))?;
                CStr::from_ptr(last()).to_string_lossy().into_owned()
            };
            return Err(KernelError::new(
                op,
                format!("kernel `{name}` of kernels/{}: {msg}", src.name),
            ));
        }
        for (i, (start, bytes)) in touched {
            if let Some(at) = broken_guard(start, bytes) {
                // Reported once: later launches with this buffer start from intact guards.
                restore_guards(start, bytes);
                return Err(KernelError::new(
                    op,
                    format!(
                        "kernel `{name}` of kernels/{} wrote outside argument {i}'s buffer of \
                         {bytes} bytes (first changed byte at offset {at})",
                        src.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn pad4(b: [u8; 4]) -> [u8; 8] {
    let mut o = [0u8; 8];
    o[..4].copy_from_slice(&b);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_extern_c_kernels_only() {
        let text = "extern \"C\" __global__ void __launch_bounds__(MAX(1, (2)))\n  a_k(int x) {}\n\
                    __global__ void hidden(int) {}\n\
                    extern \"C\" __global__ void b_k2(float* p) {}\n";
        assert_eq!(kernel_names(text), vec!["a_k", "b_k2"]);
    }

    #[test]
    fn guards_report_the_first_changed_byte() {
        let mut b = EmuBuffer::<f32>::new(10, 0).unwrap();
        b.as_mut_slice()[9] = 1.0;
        assert_eq!(broken_guard(b.addr(), 40), None);
        // SAFETY: one byte past the data, inside the trailing guard.
        unsafe { *((b.addr() + 41) as *mut u8) = 0 };
        assert_eq!(broken_guard(b.addr(), 40), Some(41));
        // SAFETY: restore it so that nothing else trips over it.
        unsafe { *((b.addr() + 41) as *mut u8) = GUARD_BYTE };
        // SAFETY: the byte right before the data.
        unsafe { *((b.addr() - 1) as *mut u8) = 0 };
        assert_eq!(broken_guard(b.addr(), 40), Some(-1));
        unsafe { *((b.addr() - 1) as *mut u8) = GUARD_BYTE };
    }
}
