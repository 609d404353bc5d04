//! The supervisor's error classes, each mapped to an exit code from [`chatspace_proto::exit`].

use chatspace_proto::exit;

/// An error that is the user's input at fault (dataset, model folder, flags, output location).
/// Carries its one-line message; everything else in the chain is context.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// An encoder process failed in a way that has its own exit code (for example, no ONNX Runtime).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EncoderExit {
    /// The line to show.
    pub message: String,
    /// The exit code to return.
    pub code: i32,
}

/// Builds a [`BadInput`] error from a format string.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => { anyhow::Error::new($crate::error::BadInput(format!($($arg)*))) };
}

/// The exit code for an error chain: the first classified error in it decides.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return exit::BAD_INPUT;
        }
        if cause.downcast_ref::<crate::run::Interrupted>().is_some() {
            return exit::INTERRUPTED;
        }
        if let Some(e) = cause.downcast_ref::<chatspace_proto::ProtoError>()
            && !matches!(e, chatspace_proto::ProtoError::Io(_))
        {
            return exit::PROTOCOL;
        }
        if let Some(e) = cause.downcast_ref::<EncoderExit>() {
            return e.code;
        }
    }
    exit::FAILURE
}

std::thread_local! {
    /// Set while [`catch_panic`] runs on this thread: the panic hook then keeps quiet.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes a panic (a bug, or a library choking on hostile input) end the process with one line,
/// `chatspace: internal error: ...`, and exit code 1, instead of a backtrace; except inside
/// [`catch_panic`], which turns it into an error.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if CATCHING.with(|c| c.get()) {
            return;
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "chatspace: internal error: {}{at}",
            panic_text(info.payload())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        std::process::exit(exit::FAILURE);
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a panic inside it into `Err` with the panic's message (for code that reads
/// untrusted files with a library that may panic on them).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = CATCHING.with(|c| c.replace(true));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    res.map_err(|p| panic_text(p.as_ref()))
}
