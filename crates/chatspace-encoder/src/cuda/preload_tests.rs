//! The search over fake directory trees laid out as the wheels lay them out.

use super::*;

fn touch(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"").unwrap();
    p
}

/// A pip `site-packages` with onnxruntime-gpu, the CUDA 13 wheels, and CUDA 12 leftovers
/// (`nvidia/cublas/lib/libcublas.so.12`, cu12's `nvidia/curand/lib/libcurand.so.10`).
fn site_packages(root: &Path) -> PathBuf {
    for lib in [
        "libcudart.so.13",
        "libcudart.so.13.0.96",
        "libcublasLt.so.13",
        "libcublas.so.13",
        "libnvrtc.so.13",
        "libcurand.so.10",
        "libcufft.so.12",
        "libcufftw.so.12",
    ] {
        touch(root, &format!("site-packages/nvidia/cu13/lib/{lib}"));
    }
    for lib in ["libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_graph.so.9"] {
        touch(root, &format!("site-packages/nvidia/cudnn/lib/{lib}"));
    }
    touch(root, "site-packages/nvidia/cublas/lib/libcublas.so.12");
    touch(root, "site-packages/nvidia/curand/lib/libcurand.so.10");
    touch(
        root,
        "site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
    )
}

#[test]
fn a_pip_install_is_found_two_folders_up_with_exact_cuda_13_sonames() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = site_packages(tmp.path());
    let nvidia = tmp.path().join("site-packages/nvidia");
    let capi = tmp.path().join("site-packages/onnxruntime/capi");
    assert_eq!(roots(&runtime), [capi.join("nvidia"), nvidia.clone()]);
    let dirs = lib_dirs(&roots(&runtime));
    assert_eq!(
        dirs,
        [
            nvidia.join("cu13/lib"),
            nvidia.join("cublas/lib"),
            nvidia.join("cudnn/lib"),
            nvidia.join("curand/lib"),
        ]
    );
    let p = plan(CUDA13_LIBS, dirs);
    assert!(p.by_name.is_empty(), "{p:?}");
    let found: Vec<(&str, PathBuf)> = p
        .found
        .iter()
        .map(|(n, f)| (n.as_str(), f.strip_prefix(&nvidia).unwrap().to_path_buf()))
        .collect();
    let want: Vec<(&str, PathBuf)> = vec![
        ("libcudart.so.13", "cu13/lib/libcudart.so.13".into()),
        ("libcublasLt.so.13", "cu13/lib/libcublasLt.so.13".into()),
        ("libcublas.so.13", "cu13/lib/libcublas.so.13".into()),
        ("libnvrtc.so.13", "cu13/lib/libnvrtc.so.13".into()),
        // CUDA 13's cuRAND, not the cu12 wheel's file of the same name.
        ("libcurand.so.10", "cu13/lib/libcurand.so.10".into()),
        ("libcufft.so.12", "cu13/lib/libcufft.so.12".into()),
        // cuDNN's main library only: none of its sub-libraries.
        ("libcudnn.so.9", "cudnn/lib/libcudnn.so.9".into()),
    ];
    assert_eq!(found, want);
}

#[test]
fn the_setup_layout_is_found_beside_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let gpu = tmp.path().join(".onnxruntime-gpu");
    touch(&gpu, "libonnxruntime.so.1.31.1");
    touch(&gpu, "nvidia/cu13/lib/libcudart.so.13");
    touch(&gpu, "nvidia/cudnn/lib/libcudnn.so.9");
    let p = plan(
        &["libcudart.so.13", "libcudnn.so.9", "libcublas.so.13"],
        lib_dirs(&roots(&gpu.join("libonnxruntime.so.1.31.1"))),
    );
    assert_eq!(
        p.found,
        [
            (
                "libcudart.so.13".to_string(),
                gpu.join("nvidia/cu13/lib/libcudart.so.13")
            ),
            (
                "libcudnn.so.9".to_string(),
                gpu.join("nvidia/cudnn/lib/libcudnn.so.9")
            ),
        ]
    );
    // Not in a wheel folder: left to the system's loader path.
    assert_eq!(p.by_name, ["libcublas.so.13"]);
}

#[test]
fn other_major_versions_never_match() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = touch(tmp.path(), "ort/libonnxruntime.so");
    touch(tmp.path(), "ort/nvidia/cublas/lib/libcublas.so.12");
    touch(tmp.path(), "ort/nvidia/cublas/lib/libcublas.so.13.1.0.3");
    touch(tmp.path(), "ort/nvidia/cudnn/lib/libcudnn.so.8");
    let p = plan(
        &["libcublas.so.13", "libcudnn.so.9"],
        lib_dirs(&roots(&runtime)),
    );
    assert!(p.found.is_empty(), "{p:?}");
    assert_eq!(p.by_name, ["libcublas.so.13", "libcudnn.so.9"]);
}

#[test]
fn a_missing_library_is_an_error_naming_it_and_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = site_packages(tmp.path());
    let libs = [
        "libchatspace-test-absent.so.13",
        "libchatspace-test-absent2.so.9",
    ];
    let err = preload(&runtime, &libs).unwrap_err();
    assert_eq!(
        err.libs,
        [
            "libchatspace-test-absent.so.13 (in none of these folders nor on the loader path)",
            "libchatspace-test-absent2.so.9 (in none of these folders nor on the loader path)",
        ]
    );
    let nvidia = tmp.path().join("site-packages/nvidia");
    let looked = err.looked(&runtime);
    assert!(
        looked.starts_with(&format!("{}, ", nvidia.join("cu13/lib").display())),
        "{looked}"
    );
    assert!(looked.ends_with("then the system's loader path (LD_LIBRARY_PATH, ldconfig)"));
    // A file that is there but is no library: the loader's reason, with the file.
    let err = preload(&runtime, &["libcudart.so.13"]).unwrap_err();
    let cudart = nvidia.join("cu13/lib/libcudart.so.13");
    assert!(
        err.libs[0].starts_with(&format!("libcudart.so.13 ({}: ", cudart.display())),
        "{:?}",
        err.libs
    );
    // No nvidia folder at all: the message still says where it would have looked.
    let bare = touch(tmp.path(), "bare/lib/libonnxruntime.so");
    let err = preload(&bare, &["libchatspace-test-absent.so.13"]).unwrap_err();
    assert!(err.dirs.is_empty());
    assert!(
        err.looked(&bare).starts_with(&format!(
            "{}/*/lib (none exists), ",
            tmp.path().join("bare/lib/nvidia").display()
        )),
        "{}",
        err.looked(&bare)
    );
}
