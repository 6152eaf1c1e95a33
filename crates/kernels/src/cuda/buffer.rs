//! Device memory and kernel arguments, the same for a real GPU and the emulator.

use std::marker::PhantomData;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};

use super::emu::{EmuBuffer, RawArg};

/// Element types of device buffers.
pub trait DeviceElem:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + std::fmt::Debug + 'static
{
    /// The byte every byte of a fresh emulated allocation gets: NaN for floats, all ones
    /// (-1, MAX) for integers, so that a kernel reading what nobody wrote shows it.
    const POISON_BYTE: u8 = 0xff;
}

impl DeviceElem for f32 {}
impl DeviceElem for f64 {}
impl DeviceElem for i32 {}
impl DeviceElem for i64 {}
impl DeviceElem for u8 {}
impl DeviceElem for u32 {}
impl DeviceElem for u64 {}

/// A buffer of `T` in device memory (a CUDA allocation, or host memory for the emulator).
pub struct GpuBuffer<T: DeviceElem> {
    pub(crate) repr: Repr<T>,
}

/// Where the elements live.
pub(crate) enum Repr<T: DeviceElem> {
    Cuda {
        slice: CudaSlice<T>,
        stream: std::sync::Arc<CudaStream>,
    },
    Emu(EmuBuffer<T>),
}

impl<T: DeviceElem> std::fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.repr {
            Repr::Cuda { .. } => "cuda",
            Repr::Emu(_) => "emulated",
        };
        write!(
            f,
            "GpuBuffer<{}>({} elements, {kind})",
            std::any::type_name::<T>(),
            self.len()
        )
    }
}

impl<T: DeviceElem> GpuBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Cuda { slice, .. } => slice.len(),
            Repr::Emu(b) => b.len(),
        }
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn address(&self) -> u64 {
        match &self.repr {
            Repr::Cuda { slice, stream } => slice.device_ptr(stream).0,
            Repr::Emu(b) => b.addr() as u64,
        }
    }

    fn address_mut(&mut self) -> u64 {
        match &mut self.repr {
            Repr::Cuda { slice, stream } => slice.device_ptr_mut(stream).0,
            Repr::Emu(b) => b.addr() as u64,
        }
    }

    /// The device address of element 0, for tables of pointers a kernel reads from device
    /// memory (multi-tensor launches); for a buffer a kernel only reads. On the emulator it is
    /// the host address of the data, which emulated kernels dereference. Valid while the
    /// buffer lives: whoever puts it in a table must keep the buffer until the launch is queued.
    pub fn device_address(&self) -> u64 {
        self.address()
    }

    /// [`GpuBuffer::device_address`] for a buffer a kernel writes (on a GPU it orders the write
    /// after the buffer's pending work, as [`GpuBuffer::arg_mut`] does).
    pub fn device_address_mut(&mut self) -> u64 {
        self.address_mut()
    }

    /// The buffer as a kernel argument the kernel only reads.
    pub fn arg(&self) -> Arg<'_> {
        Arg::ptr(self.address())
    }

    /// The buffer from element `offset` on, read-only. Panics when `offset > len`.
    pub fn arg_at(&self, offset: usize) -> Arg<'_> {
        assert!(
            offset <= self.len(),
            "offset {offset} past {} elements",
            self.len()
        );
        Arg::ptr(self.address() + (offset * std::mem::size_of::<T>()) as u64)
    }

    /// The buffer as a kernel argument the kernel writes.
    pub fn arg_mut(&mut self) -> Arg<'_> {
        Arg::ptr(self.address_mut())
    }

    /// The buffer from element `offset` on, writable. Panics when `offset > len`.
    pub fn arg_mut_at(&mut self, offset: usize) -> Arg<'_> {
        assert!(
            offset <= self.len(),
            "offset {offset} past {} elements",
            self.len()
        );
        Arg::ptr(self.address_mut() + (offset * std::mem::size_of::<T>()) as u64)
    }

    /// The CUDA allocation, when this buffer is on a real GPU.
    pub fn cuda_slice(&self) -> Option<&CudaSlice<T>> {
        match &self.repr {
            Repr::Cuda { slice, .. } => Some(slice),
            Repr::Emu(_) => None,
        }
    }
}

/// One argument of a kernel launch; borrows the buffers it points to.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    pub(crate) raw: RawArg,
    _borrow: PhantomData<&'a ()>,
}

impl Arg<'_> {
    fn ptr(p: u64) -> Self {
        Self {
            raw: RawArg::Ptr(p),
            _borrow: PhantomData,
        }
    }

    /// The device address, when this argument is a pointer (0 otherwise).
    pub(crate) fn raw_ptr(&self) -> u64 {
        match self.raw {
            RawArg::Ptr(p) => p,
            _ => 0,
        }
    }

    /// A null pointer (an optional input the kernel skips).
    pub fn null() -> Self {
        Self::ptr(0)
    }

    /// An `int`.
    pub fn i32(v: i32) -> Self {
        Self::scalar(RawArg::I32(v))
    }

    /// An `unsigned`.
    pub fn u32(v: u32) -> Self {
        Self::scalar(RawArg::U32(v))
    }

    /// A `long long` (i64).
    pub fn i64(v: i64) -> Self {
        Self::scalar(RawArg::I64(v))
    }

    /// A `float`.
    pub fn f32(v: f32) -> Self {
        Self::scalar(RawArg::F32(v))
    }

    /// A `double`.
    pub fn f64(v: f64) -> Self {
        Self::scalar(RawArg::F64(v))
    }

    fn scalar(raw: RawArg) -> Self {
        Self {
            raw,
            _borrow: PhantomData,
        }
    }
}

impl<'a, T: DeviceElem> From<&'a GpuBuffer<T>> for Arg<'a> {
    fn from(b: &'a GpuBuffer<T>) -> Self {
        b.arg()
    }
}

impl<'a, T: DeviceElem> From<Option<&'a GpuBuffer<T>>> for Arg<'a> {
    fn from(b: Option<&'a GpuBuffer<T>>) -> Self {
        b.map_or_else(Arg::null, GpuBuffer::arg)
    }
}
