//! Finding and loading the ONNX Runtime shared library, and building `ort`'s environment.
//!
//! The library is looked for, in order: `--ort-lib PATH`, the `ORT_DYLIB_PATH` environment
//! variable, `libonnxruntime.so` beside the executable, then `.onnxruntime/libonnxruntime.so` in the
//! executable's folder and up to [`PARENTS`] folders above it (where `scripts/setup.sh` puts it in
//! a checkout, with the binary in `target/<profile>/`). An explicit choice (flag or variable) is
//! never silently replaced by a later candidate.
//!
//! No `ort` function is called before [`init_from`](ort::init_from) succeeded: `ort` panics
//! when its API is used without a library. Before that, `check::probe` loads the file itself and
//! checks that it is ONNX Runtime, recent enough, and gives the API version `ort` asks for, so that
//! a wrong file is one clear error (exit 4) rather than a panic inside `ort`: not a shared library
//! (the loader's reason), no `OrtGetApiBase`, a version older than [`NEEDED`].
//!
//! For `--device cuda:K`, once the library is known to have the CUDA provider, [`crate::cuda`]
//! loads the CUDA 13 libraries beside it and opens the GPU, before any session registers the
//! provider.

mod check;

use std::path::{Path, PathBuf};

use ort::environment::Environment;

use crate::cuda::{self, Gpu};
use crate::error::{Error, Result};

/// The oldest ONNX Runtime the encoder runs with (`ort`'s `api-17` feature): `1.17`.
pub const NEEDED: (u32, u32) = (1, ort::MINOR_VERSION);

/// How many folders above the executable's own are searched for `.onnxruntime/`.
pub const PARENTS: usize = 5;

/// Where `scripts/setup.sh --gpu` puts the GPU build (`onnxruntime-gpu`) and the CUDA
/// libraries it needs; searched before `.onnxruntime/` for `--device cuda:K`.
pub const GPU_FOLDER: &str = ".onnxruntime-gpu";

/// Where the encoder runs its model (`--device`): the supervisor's own type.
pub use chatspace_proto::Device;

/// The library's file name on this platform (`libonnxruntime.so` on Linux).
fn lib_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where the library was found, and which rule found it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The library file (absolute).
    pub path: PathBuf,
    /// The rule that found it: `--ort-lib`, `ORT_DYLIB_PATH` or `search`.
    pub via: &'static str,
}

/// Picks the library file: `flag` (from `--ort-lib`), then `env` (from `ORT_DYLIB_PATH`), then a
/// search around `exe_dir`. Relative paths are taken from the current directory.
/// With `gpu`, the search tries [`GPU_FOLDER`] before `.onnxruntime/` in each folder.
pub fn locate(
    flag: Option<&Path>,
    env: Option<&str>,
    exe_dir: Option<&Path>,
    gpu: bool,
) -> Result<Located> {
    let absolute = |p: &Path| {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    if let Some(p) = flag {
        let path = absolute(p);
        return if path.is_file() {
            Ok(Located {
                path,
                via: "--ort-lib",
            })
        } else {
            Err(Error::RuntimeNotFound {
                tried: format!("--ort-lib {}", path.display()),
            })
        };
    }
    if let Some(p) = env.filter(|s| !s.is_empty()) {
        let path = absolute(Path::new(p));
        return if path.is_file() {
            Ok(Located {
                path,
                via: "ORT_DYLIB_PATH",
            })
        } else {
            Err(Error::RuntimeNotFound {
                tried: format!("ORT_DYLIB_PATH={}", path.display()),
            })
        };
    }
    let candidates = exe_dir
        .map(|d| search_candidates(d, gpu))
        .unwrap_or_default();
    if let Some(path) = candidates.iter().find(|p| p.is_file()) {
        return Ok(Located {
            path: path.clone(),
            via: "search",
        });
    }
    let mut tried = vec![
        "--ort-lib (not given)".to_string(),
        "ORT_DYLIB_PATH (not set)".into(),
    ];
    match exe_dir {
        Some(dir) => {
            tried.push(dir.join(lib_name()).display().to_string());
            tried.push(format!(
                "{}.onnxruntime/{} in {} and up to {PARENTS} folders above",
                if gpu { ".onnxruntime-gpu/ and " } else { "" },
                lib_name(),
                dir.display()
            ));
        }
        None => tried.push("no executable path to search from".into()),
    }
    Err(Error::RuntimeNotFound {
        tried: tried.join(", "),
    })
}

/// The searched paths, in order: beside the executable, then `.onnxruntime/` upwards (with
/// `gpu`, [`GPU_FOLDER`] first at each level).
fn search_candidates(exe_dir: &Path, gpu: bool) -> Vec<PathBuf> {
    let name = lib_name();
    let mut out = vec![exe_dir.join(&name)];
    for dir in exe_dir.ancestors().take(PARENTS + 1) {
        if gpu {
            out.push(dir.join(GPU_FOLDER).join(&name));
        }
        out.push(dir.join(".onnxruntime").join(&name));
    }
    out
}

/// A loaded ONNX Runtime: the environment every session is built in.
pub struct Runtime {
    /// `ort`'s environment.
    pub env: Environment,
    /// Where the library came from.
    pub located: Located,
    /// The GPU, opened, for `--device cuda:K`.
    pub gpu: Option<Gpu>,
    /// Version and execution provider (`onnxruntime 1.31.1 CUDAExecutionProvider (GPU 0)`),
    /// the start of [`chatspace_proto::ModelInfo::runtime`].
    pub description: String,
}

/// Finds the library (see [`locate`]), loads it and builds the environment; for a GPU, also
/// checks that it has the CUDA provider, loads the CUDA libraries and opens the GPU.
pub fn load(flag: Option<&Path>, device: Device) -> Result<Runtime> {
    let env_var = std::env::var("ORT_DYLIB_PATH").ok();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let located = locate(
        flag,
        env_var.as_deref(),
        exe_dir.as_deref(),
        matches!(device, Device::Cuda(_)),
    )?;
    tracing::debug!(path = %located.path.display(), via = located.via, "loading ONNX Runtime");
    check::probe(&located.path)?;
    let builder = ort::init_from(&located.path).map_err(|e| check::load_error(&located.path, e))?;
    let env = builder
        .with_name("chatspace-encoder")
        .with_telemetry(false)
        .build()
        .map_err(Error::RuntimeSetup)?;
    let (provider, gpu) = match device {
        Device::Cpu => ("CPUExecutionProvider".to_string(), None),
        Device::Cuda(k) => {
            use ort::ep::ExecutionProvider;
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(Error::NoCuda {
                    path: located.path.clone(),
                });
            }
            let gpu = cuda::prepare(&located.path, k)?;
            (format!("CUDAExecutionProvider (GPU {k})"), Some(gpu))
        }
    };
    let description = format!("onnxruntime {} {provider}", check::version(&located.path));
    Ok(Runtime {
        env,
        located,
        gpu,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_flag_wins_and_is_never_replaced() {
        let err = locate(
            Some(Path::new("/nonexistent/libonnxruntime.so")),
            Some("/also/missing.so"),
            None,
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("--ort-lib /nonexistent/libonnxruntime.so")
        );
    }

    #[test]
    fn env_var_is_used_when_no_flag() {
        let err = locate(None, Some("/missing/libort.so"), None, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("ORT_DYLIB_PATH=/missing/libort.so")
        );
    }

    #[test]
    fn search_walks_up_from_the_executable() {
        let c = search_candidates(Path::new("/repo/target/debug"), false);
        assert_eq!(c[0], Path::new("/repo/target/debug").join(lib_name()));
        assert_eq!(
            c[3],
            Path::new("/repo/.onnxruntime").join(lib_name()),
            "{c:?}"
        );
        assert!(c.len() <= PARENTS + 2);
    }

    #[test]
    fn search_finds_a_repo_library() {
        let root = std::env::temp_dir().join(format!("chatspace-rt-{}", std::process::id()));
        let exe_dir = root.join("target/debug");
        std::fs::create_dir_all(&exe_dir).unwrap();
        std::fs::create_dir_all(root.join(".onnxruntime")).unwrap();
        let lib = root.join(".onnxruntime").join(lib_name());
        std::fs::write(&lib, b"").unwrap();
        let found = locate(None, None, Some(&exe_dir), false).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.path, lib);
        assert_eq!(found.via, "search");
    }
}
