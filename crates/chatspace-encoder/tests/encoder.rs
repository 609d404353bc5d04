//! The real `chatspace-encoder` binary, driven from outside: error lines and exit codes, and
//! `serve` against a stand-in supervisor written here with `chatspace-proto`.
//!
//! Tests that run a model need ONNX Runtime (`ORT_DYLIB_PATH`, or `.onnxruntime/` in the
//! checkout, see `scripts/setup.sh`) and `../shared/models`; without them they say so and pass.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatspace_proto::{
    FromEncoder, PROTO_VERSION, ToEncoder, Work, exit, read_frame, socket_name, write_frame,
};
use interprocess::local_socket::{ListenerNonblockingMode, ListenerOptions, Stream, prelude::*};

const BIN: &str = env!("CARGO_BIN_EXE_chatspace-encoder");
const SECRET: &str = "test-secret";

fn shared_model(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models")
        .join(name);
    p.is_dir().then_some(p)
}

/// The runtime library this checkout would use, if any.
fn ort_lib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.onnxruntime/libonnxruntime.so");
    p.is_file().then_some(p)
}

/// MiniLM and a runtime. Both are required: run `scripts/setup.sh --no-build` first (CI does).
fn minilm_and_runtime() -> Option<(PathBuf, PathBuf)> {
    let model =
        shared_model("all-MiniLM-L6-v2").expect("../shared/models/all-MiniLM-L6-v2 is missing");
    let lib = ort_lib().expect("no ONNX Runtime library: run scripts/setup.sh --no-build");
    Some((model, lib))
}

fn embed(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("embed")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Asserts the run failed with `code` and exactly one stderr line containing `needle`.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("chatspace-encoder: "), "stderr: {err}");
    assert!(err.contains(needle), "stderr: {err}");
}

/// A folder that passes the file checks (nothing in it is valid).
fn fake_model(dir: &Path, tokenizer: bool, onnx: bool) {
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    if tokenizer {
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    }
    if onnx {
        std::fs::write(dir.join("onnx/model.onnx"), "").unwrap();
    }
}

#[test]
fn missing_model_folder_is_bad_input() {
    let out = embed(&["--model", "/nonexistent/model"], "");
    assert_one_line_error(
        &out,
        exit::BAD_INPUT,
        "model folder /nonexistent/model does not exist",
    );
}

#[test]
fn folder_without_tokenizer_or_onnx_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let no_tok = tmp.path().join("a");
    fake_model(&no_tok, false, true);
    let out = embed(&["--model", no_tok.to_str().unwrap()], "");
    assert_one_line_error(&out, exit::BAD_INPUT, "has no tokenizer.json");

    let no_onnx = tmp.path().join("b");
    fake_model(&no_onnx, true, false);
    let out = embed(&["--model", no_onnx.to_str().unwrap()], "");
    assert_one_line_error(&out, exit::BAD_INPUT, "has no onnx/model.onnx");
}

#[test]
fn missing_runtime_is_no_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    fake_model(tmp.path(), true, true);
    let out = embed(
        &[
            "--model",
            tmp.path().to_str().unwrap(),
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
        ],
        "",
    );
    assert_one_line_error(&out, exit::NO_RUNTIME, "ONNX Runtime library not found");
}

#[test]
fn a_library_that_is_not_one_is_no_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    fake_model(tmp.path(), true, true);
    let lib = tmp.path().join("libonnxruntime.so");
    std::fs::write(&lib, "not a library").unwrap();
    let out = embed(
        &[
            "--model",
            tmp.path().to_str().unwrap(),
            "--ort-lib",
            lib.to_str().unwrap(),
        ],
        "",
    );
    assert_one_line_error(&out, exit::NO_RUNTIME, "could not load ONNX Runtime");
}

#[test]
fn embed_writes_one_unit_vector_per_line_and_names_bad_lines() {
    let Some((model, lib)) = minilm_and_runtime() else {
        return;
    };
    let (m, l) = (model.to_str().unwrap(), lib.to_str().unwrap());
    let out = embed(
        &["--model", m, "--ort-lib", l, "--batch-size", "2"],
        "{\"text\": \"a cat\"}\n{\"text\": \"\"}\n{\"text\": \"a cat\", \"id\": 7}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<f32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["embedding"].clone()).unwrap()
        })
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.len(), 384);
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // The same text, alone in its batch or not, gives the same vector.
    let diff = rows[0]
        .iter()
        .zip(&rows[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "diff {diff}");

    let out = embed(
        &["--model", m, "--ort-lib", l],
        "{\"text\": \"ok\"}\n[1, 2]\n",
    );
    assert_one_line_error(&out, exit::BAD_INPUT, "stdin line 2");
}

/// A stand-in supervisor: a listening socket and the encoder it started.
struct Supervisor {
    _dir: tempfile::TempDir,
    child: Child,
    conn: Stream,
}

impl Supervisor {
    /// Starts `serve` with `model_args`, accepts its connection and checks its Hello.
    fn start(encoder_id: u32, model_args: &[&str]) -> Supervisor {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sup.sock");
        let listener = ListenerOptions::new()
            .name(socket_name(&sock).unwrap())
            .nonblocking(ListenerNonblockingMode::Accept)
            .create_sync()
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--socket", sock.to_str().unwrap()])
            .args(["--encoder-id", &encoder_id.to_string()])
            .args(model_args)
            .env("CHATSPACE_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let conn = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("encoder exited before connecting: {status}");
                    }
                    assert!(Instant::now() < deadline, "encoder never connected");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_recv_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut sup = Supervisor {
            _dir: dir,
            child,
            conn,
        };
        match sup.recv() {
            Some(FromEncoder::Hello(h)) => {
                assert_eq!(h.proto_version, PROTO_VERSION);
                assert_eq!(h.secret, SECRET);
                assert_eq!(h.encoder_id, encoder_id);
                assert_eq!(h.pid, sup.child.id());
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        sup
    }

    fn send(&mut self, msg: &ToEncoder) {
        write_frame(&mut self.conn, msg).unwrap();
    }

    fn recv(&mut self) -> Option<FromEncoder> {
        read_frame(&mut self.conn).unwrap()
    }

    /// Waits for the encoder to exit; returns its code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        wait_child(&mut self.child)
    }
}

/// Waits (at most 20 s) for `child` to exit; returns its code and stderr.
fn wait_child(child: &mut Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "encoder did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn reject_ends_the_encoder_with_the_protocol_code() {
    let mut sup = Supervisor::start(3, &["--model", "/nonexistent"]);
    sup.send(&ToEncoder::Reject {
        reason: "wrong secret".into(),
    });
    let (code, err) = sup.wait();
    assert_eq!(code, Some(exit::PROTOCOL));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong secret"), "{err}");
}

#[test]
fn a_bad_model_folder_is_reported_as_fatal() {
    let mut sup = Supervisor::start(0, &["--model", "/nonexistent"]);
    sup.send(&ToEncoder::Welcome {
        proto_version: PROTO_VERSION,
    });
    match sup.recv() {
        Some(FromEncoder::Fatal { reason }) => {
            assert_eq!(reason, "model folder /nonexistent does not exist");
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert_eq!(sup.wait().0, Some(exit::BAD_INPUT));
}

#[test]
fn serves_units_in_order_and_finishes_them_on_shutdown() {
    let Some((model, lib)) = minilm_and_runtime() else {
        return;
    };
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--ort-lib",
        lib.to_str().unwrap(),
        "--batch-size",
        "4",
    ];
    let mut sup = Supervisor::start(1, &args);
    sup.send(&ToEncoder::Welcome {
        proto_version: PROTO_VERSION,
    });
    let info = match sup.recv() {
        Some(FromEncoder::Ready(info)) => info,
        other => panic!("expected Ready, got {other:?}"),
    };
    assert_eq!(
        (info.dim, info.max_seq_length, info.max_batch_rows),
        (384, 256, 4)
    );
    assert_eq!((info.pooling.as_str(), info.normalize), ("mean", true));
    assert_eq!(
        info.inputs,
        ["input_ids", "attention_mask", "token_type_ids"]
    );

    let long = "word ".repeat(400);
    let mut units: Vec<Vec<String>> = vec![
        vec![],
        vec!["".into()],
        (0..11)
            .map(|i| format!("text number {i} {}", "x ".repeat(i)))
            .collect(),
        vec!["text number 0 ".into(), long.clone()],
    ];
    units.push(units[2].iter().rev().cloned().collect());
    // Everything is sent before anything is read, then Shutdown: all units must still come back.
    for (id, texts) in units.iter().enumerate() {
        sup.send(&ToEncoder::Work(Work {
            unit_id: 100 + id as u64,
            texts: texts.clone(),
        }));
    }
    sup.send(&ToEncoder::Shutdown);
    let mut answers = Vec::new();
    for (id, texts) in units.iter().enumerate() {
        match sup.recv() {
            Some(FromEncoder::Embedded {
                unit_id,
                vectors,
                tokens,
                padded_tokens,
                truncated,
            }) => {
                assert_eq!(unit_id, 100 + id as u64);
                assert_eq!(vectors.len(), texts.len() * 384);
                assert!(padded_tokens >= tokens);
                assert_eq!(truncated, u32::from(id == 3));
                answers.push(vectors);
            }
            other => panic!("expected Embedded for unit {id}, got {other:?}"),
        }
    }
    assert_eq!(sup.recv(), None, "the encoder closes after Shutdown");
    assert_eq!(sup.wait().0, Some(0));

    // Batching and order do not change vectors: unit 4 is unit 2 reversed, unit 3 starts with
    // unit 2's first text (after stripping).
    let row = |u: usize, i: usize| &answers[u][i * 384..(i + 1) * 384];
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    for i in 0..11 {
        assert!(close(row(2, i), row(4, 10 - i)), "row {i}");
    }
    assert!(close(row(2, 0), row(3, 0)));
}

#[test]
fn the_encoder_exits_when_the_supervisor_goes_away() {
    let Some((model, lib)) = minilm_and_runtime() else {
        return;
    };
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--ort-lib",
        lib.to_str().unwrap(),
    ];
    let mut sup = Supervisor::start(0, &args);
    sup.send(&ToEncoder::Welcome {
        proto_version: PROTO_VERSION,
    });
    assert!(matches!(sup.recv(), Some(FromEncoder::Ready(_))));
    sup.send(&ToEncoder::Work(Work {
        unit_id: 1,
        texts: vec!["hello".into(); 64],
    }));
    // Close our end without Shutdown: the encoder must not finish the unit first.
    let Supervisor {
        _dir,
        mut child,
        conn,
    } = sup;
    let closed = Instant::now();
    drop(conn);
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    eprintln!(
        "encoder exited {:?} after the supervisor closed",
        closed.elapsed()
    );
}
