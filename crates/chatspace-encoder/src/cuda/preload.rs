//! Loading the CUDA 13 libraries the CUDA provider needs before ONNX Runtime opens it.
//!
//! The libraries are the exact sonames of NVIDIA's CUDA 13 wheels, [`CUDA13_LIBS`] (cuRAND is
//! `.10` and cuFFT `.12` in CUDA 13; cuDNN 9): never another major version, so a machine with
//! CUDA 12 wheels too cannot load `libcublas.so.12`. Only `libcudnn.so.9` of cuDNN is loaded up
//! front, as ONNX Runtime's own loader does; cuDNN opens its sub-libraries itself when needed.
//!
//! Each is looked for under the `nvidia/` folders beside the runtime ([`roots`]):
//! `<lib dir>/nvidia/` (`scripts/setup.sh --gpu`) and `<lib dir>/../../nvidia/` (a
//! pip-installed `onnxruntime-gpu`, whose library is `site-packages/onnxruntime/capi/`, beside
//! `site-packages/nvidia/`); in each, `cu13/lib/` (where the CUDA 13 wheels put everything but
//! cuDNN) before the other `*/lib/` folders. A library in none of them is loaded by name from
//! the system's loader path (`LD_LIBRARY_PATH`, `ldconfig`), for a CUDA installed system-wide.
//! One that is nowhere is an error naming every missing library and every place looked.

use std::path::{Path, PathBuf};

/// The CUDA 13 libraries to load, dependencies first.
pub const CUDA13_LIBS: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libnvrtc.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
];

/// Where each library will be loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(soname, file)` for the libraries found in a wheel folder.
    pub found: Vec<(String, PathBuf)>,
    /// Libraries in no wheel folder, to be loaded by name from the system's loader path.
    pub by_name: Vec<String>,
    /// The folders searched, in order.
    pub dirs: Vec<PathBuf>,
}

/// The library loaded, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The soname.
    pub name: String,
    /// The file, or `None` when loaded by name from the loader path.
    pub path: Option<PathBuf>,
}

/// Libraries that could not be loaded: what and why, and where they were looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `soname: reason` for each.
    pub libs: Vec<String>,
    /// The wheel folders searched (the system's loader path came after them).
    pub dirs: Vec<PathBuf>,
}

/// The `nvidia/` folders a CUDA wheel install may be in, for the runtime library `runtime`.
pub fn roots(runtime: &Path) -> Vec<PathBuf> {
    let Some(dir) = runtime.parent() else {
        return Vec::new();
    };
    let mut out = vec![dir.join("nvidia")];
    if let Some(site) = dir.parent().and_then(Path::parent) {
        out.push(site.join("nvidia"));
    }
    out
}

/// The `lib/` folders under `roots`, in search order: `cu13/lib` first in each root, then the
/// others by name. Folders that do not exist are left out.
pub fn lib_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in roots {
        let first = root.join("cu13").join("lib");
        if first.is_dir() {
            out.push(first.clone());
        }
        let mut rest: Vec<PathBuf> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("lib"))
            .filter(|d| d.is_dir() && *d != first)
            .collect();
        rest.sort();
        out.extend(rest);
    }
    out
}

/// Where each of `libs` is: the first of `dirs` holding a file of exactly that name.
pub fn plan(libs: &[&str], dirs: Vec<PathBuf>) -> Plan {
    let mut p = Plan {
        found: Vec::new(),
        by_name: Vec::new(),
        dirs,
    };
    for &lib in libs {
        match p.dirs.iter().map(|d| d.join(lib)).find(|f| f.is_file()) {
            Some(file) => p.found.push((lib.to_string(), file)),
            None => p.by_name.push(lib.to_string()),
        }
    }
    p
}

/// Loads `libs` for the runtime at `runtime` (see the module's docs), globally, in order.
pub fn preload(runtime: &Path, libs: &[&str]) -> Result<Vec<Loaded>, Missing> {
    let p = plan(libs, lib_dirs(&roots(runtime)));
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for lib in libs {
        let file = p.found.iter().find(|(n, _)| n == lib).map(|(_, f)| f);
        let target = file.cloned().unwrap_or_else(|| PathBuf::from(lib));
        match super::probe::dlopen(&target, true) {
            Ok(_) => {
                tracing::debug!(lib = %target.display(), "preloaded");
                loaded.push(Loaded {
                    name: lib.to_string(),
                    path: file.cloned(),
                });
            }
            Err(reason) if file.is_none() => {
                tracing::debug!(%lib, %reason, "not on the loader path");
                failed.push(format!(
                    "{lib} (in none of these folders nor on the loader path)"
                ));
            }
            Err(reason) => failed.push(format!("{lib} ({}: {reason})", target.display())),
        }
    }
    if failed.is_empty() {
        Ok(loaded)
    } else {
        Err(Missing {
            libs: failed,
            dirs: p.dirs,
        })
    }
}

impl Missing {
    /// The folders looked in, for the message (or what would have been, when none exists).
    pub fn looked(&self, runtime: &Path) -> String {
        let dirs: Vec<String> = if self.dirs.is_empty() {
            roots(runtime)
                .iter()
                .map(|r| format!("{}/*/lib (none exists)", r.display()))
                .collect()
        } else {
            self.dirs.iter().map(|d| d.display().to_string()).collect()
        };
        format!(
            "{}, then the system's loader path (LD_LIBRARY_PATH, ldconfig)",
            dirs.join(", ")
        )
    }
}

#[cfg(test)]
#[path = "preload_tests.rs"]
mod tests;
