//! Helpers for the end-to-end tests: where the real binaries, the shared fixtures and the Python
//! readers (pyarrow, DuckDB) are, and running commands with their output captured.
#![deny(missing_docs)]

pub mod fakehub;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The read-only fixtures (`../shared` beside the repository, or `$CHATSPACE_SHARED`).
pub fn shared() -> PathBuf {
    std::env::var_os("CHATSPACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

/// A model folder under `shared/models`.
pub fn model(name: &str) -> PathBuf {
    shared().join("models").join(name)
}

/// The folder of the binaries built with this test (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds `chatspace` and `chatspace-encoder` once per test run, in this test's profile: cargo
/// builds a package's binaries only for that package's own integration tests, and these tests
/// must never run against stale binaries.
fn build_binaries() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "chatspace-cli",
            "-p",
            "chatspace-encoder",
        ])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"));
        if bin_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    });
}

/// The path of one of the workspace binaries (`chatspace`, `chatspace-encoder`), built.
pub fn bin_path(name: &str) -> PathBuf {
    build_binaries();
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

/// A command for one of the workspace binaries (`chatspace`, `chatspace-encoder`).
pub fn bin(name: &str) -> Command {
    let path = bin_path(name);
    let mut cmd = Command::new(path);
    cmd.env_remove("CHATSPACE_LOG").env_remove("RUST_LOG");
    cmd
}

/// The Python interpreter that has pyarrow and duckdb (`$CHATSPACE_PYTHON`, else `.venv`).
pub fn python() -> Command {
    let path = std::env::var_os("CHATSPACE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        path.is_file(),
        "no Python with pyarrow/duckdb at {}; run scripts/test-env.sh",
        path.display()
    );
    Command::new(path)
}

/// Runs the Python checker `tests/support/check_output.py` with `args` and parses its JSON.
pub fn check_output(args: &[&str]) -> serde_json::Value {
    let out = python()
        .arg(repo_root().join("tests/support/check_output.py"))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "check_output.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check_output.py prints JSON")
}

/// Output of a finished command, with both streams as text.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Ran {
    cmd.output().expect("command starts").into()
}

/// Runs `cmd`, expecting success; returns its output.
pub fn run_ok(cmd: &mut Command) -> Ran {
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "{cmd:?} failed:\n{}", ran.stderr);
    ran
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("valid JSON")
}

/// Every file under `dir` (not following symlinked folders), recursively; none if it is absent.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Polls until `path` exists (a run that writes it is under way), failing if `child` ends
/// first or two minutes pass.
pub fn wait_for_file(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} appeared",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
