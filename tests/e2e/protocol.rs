//! The supervisor against a peer that breaks the protocol (tests/support/fake_encoder.py stands
//! in for the encoder): each case ends with one clear line and the protocol exit code. The
//! encoder's side of the same checks is in crates/chatspace-encoder/tests/encoder.rs.

use chatspace_tests::{Ran, bin, model, python, repo_root, run};

fn against_fake_encoder(mode: &str) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    // The fake is a Python script; a tiny shell wrapper makes it an executable path.
    let wrapper = dir.path().join("fake-encoder");
    let py = python().get_program().to_string_lossy().into_owned();
    let script = repo_root().join("tests/support/fake_encoder.py");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{py}' '{}' \"$@\"\n", script.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data = dir.path().join("rows.jsonl");
    std::fs::write(&data, "{\"text\": \"hello\"}\n").unwrap();
    run(bin("chatspace")
        .env("CHATSPACE_ENCODER", &wrapper)
        .env("FAKE_MODE", mode)
        .arg("embed-hf")
        .arg("--dataset")
        .arg(&data)
        .arg("--model")
        .arg(model("null-384"))
        .arg("--no-progress")
        .arg("--output-root")
        .arg(dir.path().join("out")))
}

fn assert_protocol_error(mode: &str, needle: &str) {
    let ran = against_fake_encoder(mode);
    assert_eq!(ran.code, Some(5), "{mode}: {}", ran.stderr);
    let ours: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.starts_with("chatspace: "))
        .collect();
    assert_eq!(ours.len(), 1, "{mode}: {}", ran.stderr);
    assert!(
        ours[0].contains(needle),
        "{mode}: {:?} lacks {needle:?}",
        ours[0]
    );
    assert!(!ran.stderr.contains("panicked"));
}

#[test]
fn wrong_protocol_version() {
    assert_protocol_error(
        "version",
        "protocol version mismatch: encoder speaks 99, supervisor speaks 2",
    );
}

#[test]
fn a_peer_without_the_run_secret() {
    assert_protocol_error("secret", "handshake failed: wrong run secret");
}

#[test]
fn garbage_frame() {
    assert_protocol_error("garbage", "malformed frame");
}

#[test]
fn frame_above_the_limit() {
    assert_protocol_error("oversize", "exceeds the 67108864-byte limit");
}

#[test]
fn truncated_frame() {
    assert_protocol_error("truncated", "connection closed in the middle of a frame");
}
