//! Checking a library file before `ort` sees it: that it loads, is ONNX Runtime, is recent
//! enough and gives the C API version `ort` asks for (so a wrong file is one clear error, exit
//! 4, rather than a panic inside `ort`), and reading its version for the manifest.

use std::path::Path;

use super::NEEDED;
use crate::error::{Detail, Error, Result};

/// The error for a library `ort` refused (normally [`probe`] has refused it already).
pub(super) fn load_error(path: &Path, err: ort::LoadDynamicError) -> Error {
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
pub(super) fn probe(path: &Path) -> Result<()> {
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
pub(super) fn probe(_path: &Path) -> Result<()> {
    Ok(())
}

/// The loaded library's own version string (`1.22.0`), as `OrtGetApiBase()->GetVersionString()`
/// reports it; `ort` does not expose it, and the build-info string often says only `HEAD`.
#[cfg(unix)]
pub(super) fn version(path: &Path) -> String {
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
pub(super) fn version(_path: &Path) -> String {
    "(unknown version)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
