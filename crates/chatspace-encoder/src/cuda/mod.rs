//! NVIDIA GPUs, without linking CUDA: loading the CUDA 13 libraries the CUDA provider needs
//! ([`preload`]), asking the driver and the GPU what they are ([`probe`], [`driver`]), and
//! turning a CUDA, cuBLAS or cuDNN failure into a GPU error rather than a bad model
//! ([`failure`]).
//!
//! [`prepare`] runs before ONNX Runtime registers its CUDA provider, so that the common ways a
//! GPU fails (no driver, a driver too old for CUDA 13, libraries missing, no such GPU) are each
//! one clear error with exit code [`chatspace_proto::exit::GPU`]. Failures that only ONNX
//! Runtime sees (while it creates the session or runs the test batch) go through
//! [`gpu_error`].

pub mod driver;
pub mod failure;
pub mod preload;
pub mod probe;

use std::path::{Path, PathBuf};

use crate::error::{Detail, Error, Result};
use driver::{Driver, NEEDED_CUDA};
use failure::{Cause, Failure};
pub use probe::GpuMemory;

/// The GPU an encoder runs on, once its libraries are loaded and its context made.
#[derive(Debug, Clone)]
pub struct Gpu {
    /// Its memory, as `cudaMemGetInfo` reported it at start.
    pub memory: GpuMemory,
}

/// Loads the CUDA 13 libraries for the runtime at `runtime`, checks the driver, and opens GPU
/// `ordinal` (see the module's docs).
pub fn prepare(runtime: &Path, ordinal: u32) -> Result<Gpu> {
    let loaded =
        preload::preload(runtime, preload::CUDA13_LIBS).map_err(|m| Error::CudaLibraries {
            looked: m.looked(runtime),
            missing: m.libs.join(", "),
        })?;
    let during = "opening the GPU";
    if let Err(reason) = probe::dlopen(Path::new("libcuda.so.1"), false) {
        return Err(gpu(ordinal, during, Cause::NoDriver, reason));
    }
    if let Some(v) = probe::driver_cuda_version().filter(|&v| v < NEEDED_CUDA) {
        let reason = format!(
            "cuDriverGetVersion reports CUDA {}.{}, the CUDA 13 runtime needs 13.0",
            v / 1000,
            (v % 1000) / 10
        );
        return Err(gpu(ordinal, during, Cause::DriverTooOld, reason));
    }
    let cudart = loaded
        .iter()
        .find(|l| l.name == "libcudart.so.13")
        .and_then(|l| l.path.clone())
        .unwrap_or_else(|| PathBuf::from("libcudart.so.13"));
    let memory = probe::gpu_memory(&cudart, ordinal).map_err(|msg| {
        let cause = failure::classify(&msg).map_or(Cause::NoDevice, |f| f.cause);
        gpu(ordinal, during, cause, msg)
    })?;
    tracing::debug!(
        ordinal,
        total = memory.total,
        free = memory.free,
        "GPU opened"
    );
    Ok(Gpu { memory })
}

/// The GPU error for an ONNX Runtime failure on GPU `device`, when the message is a GPU
/// failure (see [`failure::classify`]); `None` leaves it to the caller (a bad model, say).
pub fn gpu_error(device: u32, during: &'static str, err: &ort::Error) -> Option<Error> {
    let Failure { cause, detail } = failure::classify(&err.to_string())?;
    Some(gpu(device, during, cause, detail))
}

/// The GPU error for a failure of the CUDA provider itself (registering it): always a GPU
/// error, classified when the message allows.
pub fn provider_error(device: u32, during: &'static str, err: &ort::Error) -> Error {
    gpu_error(device, during, err).unwrap_or_else(|| {
        gpu(
            device,
            during,
            Cause::Provider,
            err.to_string().trim().into(),
        )
    })
}

fn gpu(device: u32, during: &'static str, cause: Cause, detail: String) -> Error {
    Error::Gpu {
        device,
        during,
        cause: cause.summary(),
        driver: Driver::read().describe(),
        source: Detail(detail),
    }
}
