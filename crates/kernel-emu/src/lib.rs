//! The model crate's CUDA kernels (`crates/model/kernels/*.cu`), compiled for the
//! host and run on the CPU, so that tests can check each kernel, with the launch
//! dimensions and arguments the model computes, against the CPU path on machines
//! without a GPU.
//!
//! Each CUDA thread is a fiber; a block's threads switch at `__syncthreads` and the
//! warp shuffles, blocks run one after another (`src/runtime.cpp`, `include/emu.h`).
//! What this checks: the kernels' index arithmetic, their bounds, barriers,
//! reductions and rounding, and that the arguments a launch passes are as many, and
//! of the sizes, the kernel takes. What it cannot: timing, memory coalescing, and
//! the fast-math intrinsics' last bits (`__expf`, `rsqrtf` are the exact functions
//! here).

use std::alloc::Layout;
use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;

type CheckFn =
    unsafe extern "C" fn(*const *mut c_void, *const usize, usize, *mut c_char, usize) -> i32;
type CallFn = unsafe extern "C" fn(*const *mut c_void);

include!(concat!(env!("OUT_DIR"), "/registry.rs"));

unsafe extern "C" {
    fn emu_run(
        call: CallFn,
        params: *const *mut c_void,
        grid: *const u32,
        block: *const u32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("no kernel named {0}")]
    UnknownKernel(String),
    #[error("{kernel}: {message}")]
    Arguments { kernel: String, message: String },
    #[error("{kernel}: {message}")]
    Launch { kernel: String, message: String },
}

/// Memory a kernel reads or writes: zeroed, aligned to 256 bytes as `cudaMalloc`'s.
pub struct Buffer<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T: Copy> Buffer<T> {
    const ALIGN: usize = 256;

    fn layout(len: usize) -> Layout {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        Layout::from_size_align(bytes, Self::ALIGN).expect("a valid buffer size")
    }

    pub fn zeroed(len: usize) -> Self {
        // SAFETY: the layout's size is at least one byte.
        let raw = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        let ptr = NonNull::new(raw.cast::<T>())
            .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout(len)));
        Self { ptr, len }
    }

    pub fn from_slice(values: &[T]) -> Self {
        let b = Self::zeroed(values.len());
        // SAFETY: `b` holds `values.len()` elements and is a fresh allocation.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), b.ptr.as_ptr(), values.len()) };
        b
    }

    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: `len` elements were allocated (zeroed, or written by a copy or a kernel).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }.to_vec()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy> Drop for Buffer<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), Self::layout(self.len)) };
    }
}

/// A kernel's arguments in order, as the CUDA launch builder takes them: buffers (a
/// device pointer each) and scalars (copied).
#[derive(Default)]
pub struct Args<'a> {
    values: Vec<[u64; 2]>,
    sizes: Vec<usize>,
    buffers: PhantomData<&'a ()>,
}

impl<'a> Args<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A pointer to element `offset` of `b`.
    pub fn buffer_at<T: Copy>(&mut self, b: &'a Buffer<T>, offset: usize) -> &mut Self {
        assert!(
            offset <= b.len,
            "offset {offset} beyond a buffer of {}",
            b.len
        );
        // SAFETY: within the allocation (checked above).
        let p = unsafe { b.ptr.as_ptr().add(offset) };
        self.scalar(p)
    }

    pub fn buffer<T: Copy>(&mut self, b: &'a Buffer<T>) -> &mut Self {
        self.buffer_at(b, 0)
    }

    /// A value passed by value (an `int`, a `size_t`, a `float`, a pointer).
    pub fn scalar<T: Copy>(&mut self, v: T) -> &mut Self {
        let size = std::mem::size_of::<T>();
        assert!(
            size <= 16,
            "arguments of more than 16 bytes are not supported"
        );
        let mut slot = [0u64; 2];
        // SAFETY: the slot has 16 bytes, aligned to 8; `size` ≤ 16 and T: Copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&v as *const T).cast::<u8>(),
                slot.as_mut_ptr().cast::<u8>(),
                size,
            )
        };
        self.values.push(slot);
        self.sizes.push(size);
        self
    }

    fn pointers(&self) -> Vec<*mut c_void> {
        self.values
            .iter()
            .map(|v| v.as_ptr() as *mut c_void)
            .collect()
    }
}

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs `kernel` over `grid` blocks of `block` threads with `args`.
///
/// # Safety
/// As a CUDA launch: the kernel reads and writes what its arguments point at, so the
/// buffers must be as large as the kernel assumes from the other arguments.
pub unsafe fn launch(
    kernel: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    args: &Args<'_>,
) -> Result<(), EmuError> {
    let &(_, check, call) = KERNELS
        .iter()
        .find(|(name, _, _)| *name == kernel)
        .ok_or_else(|| EmuError::UnknownKernel(kernel.to_string()))?;
    let params = args.pointers();
    let mut err = [0u8; 256];
    let fail = |err: &[u8]| (kernel.to_string(), message(err));
    // SAFETY: `params` and `sizes` hold `sizes.len()` entries; `err` is writable.
    let bad = unsafe {
        check(
            params.as_ptr(),
            args.sizes.as_ptr(),
            args.sizes.len(),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if bad != 0 {
        let (kernel, message) = fail(&err);
        return Err(EmuError::Arguments { kernel, message });
    }
    let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
    // SAFETY: the arguments match the kernel's (checked); the caller vouches for the buffers.
    let bad = unsafe {
        emu_run(
            call,
            params.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if bad != 0 {
        let (kernel, message) = fail(&err);
        return Err(EmuError::Launch { kernel, message });
    }
    Ok(())
}

/// The names of the kernels compiled in.
pub fn kernels() -> impl Iterator<Item = &'static str> {
    KERNELS.iter().map(|(name, _, _)| *name)
}

#[cfg(test)]
mod tests;
