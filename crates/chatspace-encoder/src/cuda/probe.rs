//! Asking the CUDA libraries directly, through `dlopen`/`dlsym` (nothing links CUDA): the CUDA
//! version the driver supports (`cuDriverGetVersion` in `libcuda.so.1`), and the GPU's memory
//! (`cudaMemGetInfo` in the CUDA runtime that [`super::preload`] loaded, the one ONNX Runtime's
//! CUDA provider uses, so both share the GPU's primary context).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

/// A GPU's memory, as `cudaMemGetInfo` reports it once its context exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// Bytes free when asked.
    pub free: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Opens a library and keeps it loaded for the life of the process; `global` makes its symbols
/// available to libraries loaded later (how the CUDA provider finds the preloaded CUDA).
#[cfg(unix)]
pub fn dlopen(lib: &Path, global: bool) -> Result<*mut c_void, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(lib.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let scope = if global {
        libc::RTLD_GLOBAL
    } else {
        libc::RTLD_LOCAL
    };
    // SAFETY: a NUL-terminated path; the handle is kept for the life of the process on purpose
    // (CUDA libraries are not made to be unloaded). dlerror returns the last failure's message
    // or null, and the message is copied before any other dl call.
    unsafe {
        libc::dlerror();
        let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | scope);
        if handle.is_null() {
            let msg = libc::dlerror();
            return Err(if msg.is_null() {
                "dlopen failed".into()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            });
        }
        Ok(handle)
    }
}

#[cfg(not(unix))]
pub fn dlopen(_lib: &Path, _global: bool) -> Result<*mut c_void, String> {
    Err("loading CUDA libraries is done on Unix only".into())
}

/// The address of `name` in `handle`, or null.
#[cfg(unix)]
fn symbol(handle: *mut c_void, name: &CStr) -> *mut c_void {
    // SAFETY: `handle` came from a successful dlopen and `name` is NUL-terminated.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

/// The CUDA version `libcuda.so.1` supports (`13000` for 13.0), or `None` when there is no
/// such library or it does not answer.
#[cfg(unix)]
pub fn driver_cuda_version() -> Option<i32> {
    type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
    let handle = dlopen(Path::new("libcuda.so.1"), false).ok()?;
    let sym = symbol(handle, c"cuDriverGetVersion");
    if sym.is_null() {
        return None;
    }
    let mut version: c_int = 0;
    // SAFETY: `cuDriverGetVersion(int*)` is the driver API's version query; it needs no
    // initialisation and writes one int.
    let rc = unsafe { std::mem::transmute::<*mut c_void, GetVersion>(sym)(&mut version) };
    (rc == 0 && version > 0).then_some(version)
}

#[cfg(not(unix))]
pub fn driver_cuda_version() -> Option<i32> {
    None
}

/// Selects GPU `ordinal` in the CUDA runtime `cudart` (already loaded) and reads its memory.
/// An error is CUDA's own message, in the form ONNX Runtime prints CUDA failures
/// (`CUDA failure 35: CUDA driver version is insufficient ...`), so that it is classified the
/// same way.
#[cfg(unix)]
pub fn gpu_memory(cudart: &Path, ordinal: u32) -> Result<GpuMemory, String> {
    type SetDevice = unsafe extern "C" fn(c_int) -> c_int;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
    type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
    let handle = dlopen(cudart, false)?;
    let (set, info, text) = (
        symbol(handle, c"cudaSetDevice"),
        symbol(handle, c"cudaMemGetInfo"),
        symbol(handle, c"cudaGetErrorString"),
    );
    if set.is_null() || info.is_null() || text.is_null() {
        return Err(format!("{} is not a CUDA runtime", cudart.display()));
    }
    // SAFETY: the CUDA runtime's own entry points, with their C signatures: cudaSetDevice(int),
    // cudaMemGetInfo(size_t*, size_t*) writing two sizes, and cudaGetErrorString(cudaError_t)
    // returning a static NUL-terminated string.
    unsafe {
        let text = std::mem::transmute::<*mut c_void, ErrorString>(text);
        let fail = |rc: c_int, expr: &str| {
            let msg = text(rc);
            let msg = if msg.is_null() {
                "unknown error".into()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            };
            format!("CUDA failure {rc}: {msg} ; GPU={ordinal} ; expr={expr};")
        };
        let rc = std::mem::transmute::<*mut c_void, SetDevice>(set)(ordinal as c_int);
        if rc != 0 {
            return Err(fail(rc, "cudaSetDevice"));
        }
        let (mut free, mut total) = (0usize, 0usize);
        let rc = std::mem::transmute::<*mut c_void, MemGetInfo>(info)(&mut free, &mut total);
        if rc != 0 {
            return Err(fail(rc, "cudaMemGetInfo"));
        }
        Ok(GpuMemory {
            free: free as u64,
            total: total as u64,
        })
    }
}

#[cfg(not(unix))]
pub fn gpu_memory(_cudart: &Path, _ordinal: u32) -> Result<GpuMemory, String> {
    Err("CUDA is used on Unix only".into())
}
