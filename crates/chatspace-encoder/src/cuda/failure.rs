//! Reading ONNX Runtime's CUDA failures: which messages mean the GPU (driver, CUDA libraries,
//! GPU memory) rather than the model, and which mean "out of memory, try smaller".
//!
//! The shapes recognised are the ones ONNX Runtime's source writes:
//! - `CudaCall` (`core/providers/cuda/cuda_call.cc`): `"<LIB> failure <code>: <text> ; GPU=<n> ;
//!   hostname=... ; file=... ; line=... ; expr=...; "`, with `<LIB>` one of `CUDA`, `CUBLAS`,
//!   `CUDNN`, `CURAND`, `CUFFT`, `CUSPARSE`, `NCCL` and `<text>` from `cudaGetErrorString` or the
//!   status's name (`CUBLAS_STATUS_ALLOC_FAILED`);
//! - the dynamic loader (`core/platform/posix/env.cc`): `"Failed to load library <file> with
//!   error: <dlerror()>"`, as when the CUDA provider needs a library that is not there;
//! - the BFC arena (`core/framework/bfc_arena.cc`): `"Failed to allocate memory for requested
//!   buffer of size <n>"` and `"Available memory of <n> is smaller than requested bytes of <m>"`.

/// What a GPU failure comes down to, for the message's first clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// No usable NVIDIA driver: `libcuda.so.1` absent, or only CUDA's stub library.
    NoDriver,
    /// The driver is older than the CUDA runtime (CUDA 13 needs 580 or newer).
    DriverTooOld,
    /// No GPU, or not the one asked for, or it is busy (exclusive mode).
    NoDevice,
    /// GPU memory ran out.
    OutOfMemory,
    /// A library the CUDA provider needs is not on the loader path.
    MissingLibrary(String),
    /// Any other CUDA, cuBLAS, cuDNN... failure: the library and its code.
    Library(String, i64),
    /// The CUDA provider failed in a way none of the above names.
    Provider,
}

/// A recognised GPU failure: its cause, and the part of ONNX Runtime's message that says so
/// (from the recognised words on; ONNX Runtime's source location before them is left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What it comes down to.
    pub cause: Cause,
    /// The message from the recognised part on.
    pub detail: String,
}

impl Cause {
    /// The clause a message starts with.
    pub fn summary(&self) -> String {
        match self {
            Cause::NoDriver => "no usable NVIDIA driver (libcuda.so.1)".into(),
            Cause::DriverTooOld => "the NVIDIA driver is too old for CUDA 13".into(),
            Cause::NoDevice => "the GPU is not available".into(),
            Cause::OutOfMemory => "out of GPU memory".into(),
            Cause::MissingLibrary(lib) => format!("{lib} is not installed"),
            Cause::Library(lib, code) => format!("{lib} error {code}"),
            Cause::Provider => "ONNX Runtime's CUDA execution provider failed to start".into(),
        }
    }
}

/// The libraries `CudaCall` names.
const LIBS: &[&str] = &[
    "CUDNN_FE", "CUDNN", "CUBLAS", "CURAND", "CUFFT", "CUSPARSE", "NCCL", "CUDA",
];

/// Classifies an ONNX Runtime message; `None` when it is not a GPU failure.
pub fn classify(msg: &str) -> Option<Failure> {
    let from = |at: usize, cause| {
        Some(Failure {
            cause,
            detail: msg[at..].trim().to_string(),
        })
    };
    if let Some(at) = msg.find("Failed to allocate memory for requested buffer") {
        return from(at, Cause::OutOfMemory);
    }
    if let Some(at) = msg.find("Available memory of")
        && msg[at..].contains("is smaller than requested bytes of")
    {
        return from(at, Cause::OutOfMemory);
    }
    if let Some((at, lib, code, text)) = cuda_call(msg) {
        return from(at, cuda_cause(lib, code, text));
    }
    const NO_FILE: &str = ": cannot open shared object file";
    if let Some(end) = msg.find(NO_FILE) {
        let lib = msg[..end]
            .rsplit([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        let at = msg.find("Failed to load library").unwrap_or(0);
        let cause = if lib.starts_with("libcuda.so") {
            Cause::NoDriver
        } else {
            Cause::MissingLibrary(lib)
        };
        return from(at, cause);
    }
    None
}

/// Whether `msg` says that memory ran out (GPU or host arena), so a smaller batch may work.
pub fn is_out_of_memory(msg: &str) -> bool {
    classify(msg).is_some_and(|f| f.cause == Cause::OutOfMemory)
        || msg.contains("cudaErrorMemoryAllocation")
}

/// Finds `"<LIB> failure <code>: <text> ;"`: its position, library, code and text.
fn cuda_call(msg: &str) -> Option<(usize, &str, i64, &str)> {
    let mut best: Option<(usize, &str, i64, &str)> = None;
    for lib in LIBS {
        let pat = format!("{lib} failure ");
        let mut search = 0;
        while let Some(rel) = msg[search..].find(&pat) {
            let at = search + rel;
            search = at + pat.len();
            // `CUDA failure` inside `CUDNN_FE failure` cannot happen, but `CUDA` must not match
            // the end of a longer word either.
            if at > 0 && msg.as_bytes()[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let rest = &msg[search..];
            let Some((code, tail)) = rest.split_once(':') else {
                continue;
            };
            let Ok(code) = code.trim().parse::<i64>() else {
                continue;
            };
            let text = tail.split(" ;").next().unwrap_or(tail).trim();
            if best.is_none_or(|b| at < b.0) {
                best = Some((at, lib, code, text));
            }
            break;
        }
    }
    best
}

/// The cause behind one `CudaCall` failure.
fn cuda_cause(lib: &str, code: i64, text: &str) -> Cause {
    let oom = text.contains("out of memory") || text.contains("ALLOC_FAILED");
    match (lib, code) {
        _ if oom => Cause::OutOfMemory,
        // cudaErrorInsufficientDriver, cudaErrorSystemDriverMismatch,
        // cudaErrorUnsupportedPtxVersion (PTX newer than the driver can compile).
        ("CUDA", 35 | 803 | 222) => Cause::DriverTooOld,
        // cudaErrorStubLibrary: CUDA's link-time stub instead of the driver's libcuda.
        ("CUDA", 34) => Cause::NoDriver,
        // cudaErrorNoDevice, cudaErrorInvalidDevice, cudaErrorDevicesUnavailable.
        ("CUDA", 100 | 101 | 46) => Cause::NoDevice,
        _ => Cause::Library(lib.to_string(), code),
    }
}

#[cfg(test)]
#[path = "failure_tests.rs"]
mod tests;
