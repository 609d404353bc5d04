//! Finding and loading the ONNX Runtime shared library, and building `ort`'s environment.
//!
//! The library is looked for, in order: `--ort-lib PATH`, the `ORT_DYLIB_PATH` environment
//! variable, `libonnxruntime.so` beside the executable, then `.onnxruntime/libonnxruntime.so` in the
//! executable's folder and up to [`PARENTS`] folders above it (where `scripts/setup.sh` puts it in
//! a checkout, with the binary in `target/<profile>/`). An explicit choice (flag or variable) is
//! never silently replaced by a later candidate.
//!
//! No `ort` function is called before [`init_from`](ort::init_from) succeeded: `ort` panics
//! when its API is used without a library. Before that, [`probe`] loads the file itself and checks
//! that it is ONNX Runtime, recent enough, and gives the API version `ort` asks for, so that a
//! wrong file is one clear error (exit 4) rather than a panic inside `ort`: not a shared library
//! (the loader's reason), no `OrtGetApiBase`, a version older than [`NEEDED`].

use std::path::{Path, PathBuf};

use ort::environment::Environment;

use crate::error::{Detail, Error, Result};

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
    /// Version and execution provider, for [`chatspace_proto::ModelInfo::runtime`].
    pub description: String,
}

/// Finds the library (see [`locate`]), loads it and builds the environment; for a GPU, also
/// loads the CUDA libraries set up beside it and checks that it has the CUDA provider.
pub fn load(flag: Option<&Path>, device: Device) -> Result<Runtime> {
    let env_var = std::env::var("ORT_DYLIB_PATH").ok();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let gpu = matches!(device, Device::Cuda(_));
    let located = locate(flag, env_var.as_deref(), exe_dir.as_deref(), gpu)?;
    if gpu {
        preload_cuda(&located.path);
    }
    tracing::debug!(path = %located.path.display(), via = located.via, "loading ONNX Runtime");
    probe(&located.path)?;
    let builder = ort::init_from(&located.path).map_err(|e| load_error(&located.path, e))?;
    let env = builder
        .with_name("chatspace-encoder")
        .with_telemetry(false)
        .build()
        .map_err(Error::RuntimeSetup)?;
    let provider = match device {
        Device::Cpu => "CPUExecutionProvider".to_string(),
        Device::Cuda(k) => {
            use ort::ep::ExecutionProvider;
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(Error::NoCuda {
                    path: located.path.clone(),
                });
            }
            format!("CUDAExecutionProvider (GPU {k})")
        }
    };
    let description = format!("onnxruntime {} {provider}", version(&located.path));
    Ok(Runtime {
        env,
        located,
        description,
    })
}

/// The error for a library `ort` refused (normally [`probe`] has refused it already).
fn load_error(path: &Path, err: ort::LoadDynamicError) -> Error {
    let detail = match err {
        ort::LoadDynamicError::BadVersion { version_str, .. } => {
            return too_old(path, &version_str);
        }
        ort::LoadDynamicError::Dlopen { error, .. } => {
            // libloading's own message is only "dlopen failed"; the loader's reason is its source.
            let reason = std::error::Error::source(&error)
                .map(|s| s.to_string())
                .unwrap_or_else(|| error.to_string());
            loader_reason(path, &reason)
        }
        other => other.to_string(),
    };
    Error::RuntimeLoad {
        path: path.to_path_buf(),
        source: Detail(detail),
    }
}

fn too_old(path: &Path, found: &str) -> Error {
    Error::RuntimeVersion {
        path: path.to_path_buf(),
        found: found.to_string(),
        needed: format!("{}.{}", NEEDED.0, NEEDED.1),
    }
}

/// Whether a version string (`1.22.0`) is at least [`NEEDED`]. `ort` looks at the minor number
/// only, so a major other than 1 is refused too.
fn recent_enough(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.trim().parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => major == NEEDED.0 && minor >= NEEDED.1,
        _ => false,
    }
}

/// The dynamic loader's reason without the path it starts with (`<path>: invalid ELF header`).
fn loader_reason(path: &Path, reason: &str) -> String {
    let prefix = format!("{}: ", path.display());
    reason.strip_prefix(&prefix).unwrap_or(reason).to_string()
}

/// Loads `path` and checks that it is an ONNX Runtime `ort` can use, before `ort` sees it.
///
/// The library stays loaded for the life of the process (`ort` loads the same file next;
/// ONNX Runtime is not made to be unloaded).
#[cfg(unix)]
fn probe(path: &Path) -> Result<()> {
    use std::ffi::{CStr, CString, c_char};
    use std::os::unix::ffi::OsStrExt;

    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    let refuse = |reason: String| Error::RuntimeLoad {
        path: path.to_path_buf(),
        source: Detail(reason),
    };
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| refuse("the path holds a NUL byte".into()))?;
    // SAFETY: dlopen/dlsym/dlerror take NUL-terminated strings we own. `OrtGetApiBase` is ONNX
    // Runtime's C entry point (no arguments; a pointer to a static table); every pointer it
    // and the table's functions return is checked for NULL before use, and the version string
    // is a static NUL-terminated string.
    unsafe {
        libc::dlerror();
        let handle = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let reason = if err.is_null() {
                "the dynamic loader refused it".to_string()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            return Err(refuse(loader_reason(path, &reason)));
        }
        let sym = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        if sym.is_null() {
            return Err(refuse(
                "it does not export OrtGetApiBase, so it is not ONNX Runtime".into(),
            ));
        }
        let get_base = std::mem::transmute::<*mut libc::c_void, GetApiBase>(sym);
        let base = get_base();
        if base.is_null() {
            return Err(refuse("its OrtGetApiBase returned nothing".into()));
        }
        let s: *const c_char = ((*base).GetVersionString)();
        if s.is_null() {
            return Err(refuse("it reports no version".into()));
        }
        let version = CStr::from_ptr(s).to_string_lossy().into_owned();
        if !recent_enough(&version) {
            return Err(too_old(path, &version));
        }
        if ((*base).GetApi)(ort::sys::ORT_API_VERSION).is_null() {
            return Err(refuse(format!(
                "version {version} does not provide the C API version {}",
                ort::sys::ORT_API_VERSION
            )));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn probe(_path: &Path) -> Result<()> {
    Ok(())
}

/// The loaded library's own version string (`1.22.0`), as `OrtGetApiBase()->GetVersionString()`
/// reports it; `ort` does not expose it, and the build-info string often says only `HEAD`.
#[cfg(unix)]
fn version(path: &Path) -> String {
    use std::ffi::{CStr, CString, c_char};
    use std::os::unix::ffi::OsStrExt;

    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    let unknown = || "(unknown version)".to_string();
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return unknown();
    };
    // SAFETY: RTLD_NOLOAD only hands back the library `ort` already loaded (one more reference,
    // dropped by dlclose below). `OrtGetApiBase` is ONNX Runtime's C entry point, checked by
    // `ort::init_from` already; it returns a pointer to a static table whose `GetVersionString`
    // returns a static NUL-terminated string.
    unsafe {
        let handle = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return unknown();
        }
        let sym = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let mut out = None;
        if !sym.is_null() {
            let get_base = std::mem::transmute::<*mut libc::c_void, GetApiBase>(sym);
            let base = get_base();
            if !base.is_null() {
                let s: *const c_char = ((*base).GetVersionString)();
                if !s.is_null() {
                    out = Some(CStr::from_ptr(s).to_string_lossy().into_owned());
                }
            }
        }
        libc::dlclose(handle);
        out.unwrap_or_else(unknown)
    }
}

#[cfg(not(unix))]
fn version(_path: &Path) -> String {
    "(unknown version)".into()
}

/// The CUDA and cuDNN libraries the CUDA provider needs, in load order (a library's
/// dependencies first), as `onnxruntime-gpu`'s Python package preloads them.
const CUDA_LIBS: &[&str] = &[
    "libcudart.so",
    "libcublasLt.so",
    "libcublas.so",
    "libnvrtc.so",
    "libcurand.so",
    "libcufft.so",
    "libcudnn.so",
    "libcudnn_graph.so",
    "libcudnn_ops.so",
    "libcudnn_heuristic.so",
    "libcudnn_adv.so",
    "libcudnn_cnn.so",
    "libcudnn_engines_precompiled.so",
    "libcudnn_engines_runtime_compiled.so",
];

/// Loads, globally, the CUDA libraries that `scripts/setup.sh --gpu` installs beside the
/// runtime (`nvidia/*/lib/` next to it, from NVIDIA's wheels), so that the CUDA provider finds
/// them when ONNX Runtime opens it. Libraries not there are left to the system's loader path
/// (a CUDA installed system-wide); if they are missing there too, registering the provider
/// fails with the loader's message.
fn preload_cuda(runtime: &Path) {
    let Some(nvidia) = runtime.parent().map(|d| d.join("nvidia")) else {
        return;
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|pkg| std::fs::read_dir(pkg.path().join("lib")).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    found.sort();
    for stem in CUDA_LIBS {
        // `libcudart.so.13`, not `libcudart.so.13.0.96` or a `libcudart_static.a`.
        let prefix = format!("{stem}.");
        let Some(path) = found.iter().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.strip_prefix(&prefix).is_some_and(|v| !v.contains('.')))
        }) else {
            continue;
        };
        match dlopen_global(path) {
            Ok(()) => tracing::debug!(lib = %path.display(), "preloaded"),
            Err(e) => tracing::warn!(lib = %path.display(), "could not preload: {e}"),
        }
    }
}

#[cfg(unix)]
fn dlopen_global(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; the handle is kept for the life of the process on purpose.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a C string describing the last dlopen failure, or null.
        let msg = unsafe { libc::dlerror() };
        return Err(if msg.is_null() {
            "dlopen failed".into()
        } else {
            unsafe { std::ffi::CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn dlopen_global(_path: &Path) -> std::result::Result<(), String> {
    Err("preloading is done on Unix only".into())
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
    fn versions_older_than_needed_are_refused() {
        assert!(recent_enough(&format!("1.{}.0", NEEDED.1)));
        assert!(recent_enough("1.31.1"));
        assert!(!recent_enough("1.16.3"));
        assert!(!recent_enough("2.0.0"));
        assert!(!recent_enough("garbage"));
        let err = too_old(Path::new("/x/libonnxruntime.so"), "1.16.0");
        assert_eq!(
            err.to_string(),
            "ONNX Runtime at /x/libonnxruntime.so is version 1.16.0, but chatspace-encoder needs 1.17 or newer"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused_with_the_loader_reason() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so");
        std::fs::write(&lib, b"not a library").unwrap();
        let err = probe(&lib).unwrap_err();
        assert_eq!(err.exit_code(), chatspace_proto::exit::NO_RUNTIME);
        let line = crate::error::one_line(&err);
        assert!(
            line.starts_with(&format!(
                "could not load ONNX Runtime from {}: ",
                lib.display()
            )),
            "{line}"
        );
        assert!(!line.ends_with(": "), "{line}");
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
