//! Test-only fault injection, compiled into debug builds only (`#[cfg(debug_assertions)]`), so
//! a release binary has neither this code nor any reading of its variable.
//!
//! [`FAULTS_ENV`] (`CHATSPACE_TEST_FAULTS`) is read once when `serve` starts: a comma-separated
//! list of `ACTION:MARKER`, where a unit any of whose texts contains `MARKER` triggers `ACTION`
//! when its turn comes to be embedded:
//! - `abort`: the process aborts (SIGABRT, no core dump), as a crash inside ONNX Runtime would;
//! - `hang`: the inference thread sleeps forever, as a stuck session would;
//! - `fail`: the unit is answered `Failed` with the reason `test fault`, as an ONNX Runtime error
//!   would be.
//!
//! The end-to-end tests use it to check that the supervisor survives its encoders.

use std::sync::OnceLock;

/// The environment variable listing the faults.
pub const FAULTS_ENV: &str = "CHATSPACE_TEST_FAULTS";

/// What a marked unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort the process.
    Abort,
    /// Never answer.
    Hang,
    /// Answer `Failed` with [`FAIL_REASON`].
    Fail,
}

/// The reason a `fail` unit is answered with.
pub const FAIL_REASON: &str = "test fault";

static FAULTS: OnceLock<Vec<(Action, String)>> = OnceLock::new();

/// Parses a fault list; entries that are not `abort|hang|fail:MARKER` are ignored (and logged).
fn parse(spec: &str) -> Vec<(Action, String)> {
    let mut out = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once(':').and_then(|(action, marker)| {
            let action = match action {
                "abort" => Action::Abort,
                "hang" => Action::Hang,
                "fail" => Action::Fail,
                _ => return None,
            };
            (!marker.is_empty()).then(|| (action, marker.to_string()))
        });
        match parsed {
            Some(fault) => out.push(fault),
            None => tracing::warn!(entry, "ignoring a malformed {FAULTS_ENV} entry"),
        }
    }
    out
}

/// Reads [`FAULTS_ENV`]; later calls keep the first reading.
pub fn init() {
    FAULTS.get_or_init(|| {
        let faults = std::env::var(FAULTS_ENV)
            .map(|s| parse(&s))
            .unwrap_or_default();
        if !faults.is_empty() {
            tracing::warn!(?faults, "test faults armed");
        }
        faults
    });
}

/// The fault a unit of `texts` triggers, if any (the first listed that matches).
pub fn check(texts: &[String]) -> Option<Action> {
    FAULTS
        .get()?
        .iter()
        .find(|(_, marker)| texts.iter().any(|t| t.contains(marker.as_str())))
        .map(|(action, _)| *action)
}

/// Carries out `action` for a unit about to be embedded; returns only for [`Action::Fail`], with
/// the reason to answer.
pub fn trigger(action: Action) -> String {
    match action {
        Action::Abort => {
            tracing::warn!("test fault: aborting");
            // No core file for a crash on purpose.
            #[cfg(target_os = "linux")]
            // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory of ours.
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0);
            }
            std::process::abort()
        }
        Action::Hang => {
            tracing::warn!("test fault: hanging");
            loop {
                std::thread::park();
            }
        }
        Action::Fail => FAIL_REASON.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_a_comma_separated_list_of_action_and_marker() {
        assert_eq!(
            parse("abort:BOOM, hang:ZZZ,fail:x:y,bogus:1,fail:,abort"),
            vec![
                (Action::Abort, "BOOM".to_string()),
                (Action::Hang, "ZZZ".to_string()),
                (Action::Fail, "x:y".to_string()),
            ]
        );
        assert!(parse("").is_empty());
    }
}
