//! The supervisor starts without ONNX Runtime.

use chatspace_tests::{bin, bin_path, run_ok};

#[test]
fn help_lists_embed_hf_and_its_flags() {
    let top = run_ok(bin("chatspace").arg("--help"));
    assert!(top.stdout.contains("embed-hf"), "{}", top.stdout);
    let sub = run_ok(bin("chatspace").args(["embed-hf", "--help"]));
    for flag in [
        "--dataset",
        "--subset",
        "--split",
        "--text-field",
        "--extract",
        "--extract-first-assistant",
        "--model",
        "--batch-size",
        "--rows-per-shard",
        "--max-rows",
        "--output-root",
        "--encoders",
        "--device",
        "--threads",
        "--no-progress",
        "--run-id",
    ] {
        assert!(sub.stdout.contains(flag), "embed-hf --help lacks {flag}");
    }
}

#[test]
fn supervisor_does_not_link_onnx_runtime() {
    let ldd = run_ok(std::process::Command::new("ldd").arg(bin_path("chatspace")));
    assert!(
        !ldd.stdout.to_lowercase().contains("onnxruntime"),
        "chatspace links ONNX Runtime:\n{}",
        ldd.stdout
    );
    // And the library is not loaded at run time either: --help succeeds with no ORT anywhere.
    let ran = run_ok(
        bin("chatspace")
            .arg("--help")
            .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"),
    );
    assert!(ran.stdout.contains("embed-hf"));
}
