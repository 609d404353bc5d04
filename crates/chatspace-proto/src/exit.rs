//! Exit codes of `chatspace` and `chatspace-encoder`: a documented interface for scripts and
//! schedulers. Each code has one meaning in both binaries.

/// Success.
pub const OK: i32 = 0;
/// A runtime failure not covered by a more specific code (I/O error, failed encoder, ...).
pub const FAILURE: i32 = 1;
/// Bad command-line usage (clap's convention).
pub const USAGE: i32 = 2;
/// Bad input: a dataset, model folder or output location that cannot be used as given.
pub const BAD_INPUT: i32 = 3;
/// The ONNX Runtime shared library could not be found or loaded (encoder only).
pub const NO_RUNTIME: i32 = 4;
/// The peer spoke another protocol version or failed the handshake.
pub const PROTOCOL: i32 = 5;
/// A GPU could not be used: no NVIDIA driver or one too old for CUDA 13, CUDA or cuDNN
/// libraries missing, or a CUDA, cuBLAS or cuDNN failure (out of GPU memory, say) while the
/// model was loaded onto it (encoder; the supervisor ends with it too).
pub const GPU: i32 = 6;
/// Interrupted by a signal (SIGINT/SIGTERM), as shells report it: 128 + SIGINT.
pub const INTERRUPTED: i32 = 130;
