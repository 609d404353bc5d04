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
        if let Some(e) = cause.downcast_ref::<EncoderExit>() {
            return e.code;
        }
    }
    exit::FAILURE
}
