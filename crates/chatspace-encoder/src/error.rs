//! The encoder's one error type. Messages are lowercase and never repeat their cause: the cause
//! sits in `#[source]`, and [`one_line`] (or `main`'s `{:#}`) prints the whole chain.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use chatspace_proto::exit;

/// Everything that can stop the encoder or fail one unit of work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime library at any of the places looked at.
    #[error(
        "ONNX Runtime library not found (tried: {tried}); run scripts/setup.sh to fetch it, \
         or pass --ort-lib PATH"
    )]
    RuntimeNotFound {
        /// The places looked at, already joined for display.
        tried: String,
    },
    /// The file exists but is not a loadable ONNX Runtime library.
    #[error("could not load ONNX Runtime from {path}")]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// Why: the dynamic loader's message, or what the library lacks.
        #[source]
        source: Detail,
    },
    /// The library is ONNX Runtime, but a version too old for the encoder.
    #[error(
        "ONNX Runtime at {path} is version {found}, but chatspace-encoder needs {needed} or newer"
    )]
    RuntimeVersion {
        /// The library file.
        path: PathBuf,
        /// The version it reports.
        found: String,
        /// The oldest version that works (`1.17`).
        needed: String,
    },
    /// `--device cuda:K`, but the runtime found is a build without the CUDA provider.
    #[error(
        "ONNX Runtime at {path} has no CUDA execution provider (a CPU-only build); \
         run scripts/setup.sh --gpu for the GPU build, or use --device cpu"
    )]
    NoCuda {
        /// The library file.
        path: PathBuf,
    },
    /// The CUDA 13 libraries the CUDA provider needs are not installed (see `cuda::preload`).
    #[error(
        "CUDA 13 libraries missing for the CUDA execution provider: {missing}; looked in \
         {looked}; run scripts/setup.sh --gpu, or pip install onnxruntime-gpu[cuda,cudnn] and \
         pass its onnxruntime/capi/libonnxruntime.so.* as --ort-lib"
    )]
    CudaLibraries {
        /// Each missing library, with why.
        missing: String,
        /// The folders looked in, in order.
        looked: String,
    },
    /// The GPU could not be used: no driver or one too old for CUDA 13, no such GPU, GPU memory
    /// exhausted, or a CUDA, cuBLAS or cuDNN failure while the model was put on it. Never a bad
    /// model (see `cuda::failure`).
    #[error("GPU {device} could not be used ({during}): {cause}; {driver}")]
    Gpu {
        /// The GPU ordinal.
        device: u32,
        /// What the encoder was doing (`creating the ONNX Runtime session`).
        during: &'static str,
        /// What it comes down to (`the NVIDIA driver is too old for CUDA 13`).
        cause: String,
        /// The driver's version and what CUDA 13 needs.
        driver: String,
        /// The failure's own words (ONNX Runtime's or CUDA's).
        #[source]
        source: Detail,
    },
    /// ONNX Runtime refused to create its environment or session options.
    #[error("could not set up ONNX Runtime")]
    RuntimeSetup(#[source] ort::Error),
    /// The model folder does not exist or is not a folder.
    #[error("model folder {0} does not exist")]
    ModelDirMissing(PathBuf),
    /// A file the model folder must have is absent.
    #[error("model folder {dir} has no {file}")]
    ModelFileMissing {
        /// The model folder.
        dir: PathBuf,
        /// The missing file, relative to the folder.
        file: String,
    },
    /// A configuration file exists but could not be read.
    #[error("could not read {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A configuration file is not the JSON we expect.
    #[error("could not parse {path}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration file is valid JSON but asks for something unsupported or inconsistent.
    #[error("{path}: {reason}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model option from the command line does not fit the model (an unknown prompt name,
    /// `--truncate-dim` wider than the model's vectors).
    #[error("{0}")]
    BadOption(String),
    /// `tokenizer.json` could not be loaded or configured.
    #[error("could not load tokenizer {path}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What the tokenizers library said.
        #[source]
        source: tokenizers::Error,
    },
    /// ONNX Runtime could not load the model file (not ONNX, truncated, corrupt, unsupported).
    #[error("could not load ONNX model {path}")]
    LoadModel {
        /// The `.onnx` file.
        path: PathBuf,
        /// What ONNX Runtime said, without its own copy of the path.
        #[source]
        source: Detail,
    },
    /// The model's inputs or outputs are not ones the encoder knows how to feed or read.
    #[error("ONNX model {path}: {reason}")]
    UnsupportedModel {
        /// The `.onnx` file.
        path: PathBuf,
        /// Which input or output, and why.
        reason: String,
    },
    /// Tokenizing a text failed.
    #[error("tokenization failed")]
    Tokenize(#[source] tokenizers::Error),
    /// Running the model failed.
    #[error("inference failed")]
    Inference(#[source] ort::Error),
    /// The model produced a tensor of an unexpected shape.
    #[error("model output {name} has shape {shape:?}, expected {expected}")]
    OutputShape {
        /// The output's name.
        name: String,
        /// The shape it had.
        shape: Vec<i64>,
        /// What was expected, in words.
        expected: String,
    },
    /// The supervisor's socket could not be reached.
    #[error("could not connect to supervisor socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `CHATSPACE_SECRET` is not set.
    #[error("CHATSPACE_SECRET is not set; serve is meant to be started by chatspace")]
    NoSecret,
    /// The supervisor rejected the handshake.
    #[error("supervisor rejected this encoder: {0}")]
    Rejected(String),
    /// The supervisor sent something that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading or writing a frame failed.
    #[error("supervisor connection failed")]
    Wire(#[source] chatspace_proto::ProtoError),
    /// A line of `embed`'s input is not `{"text": "..."}`.
    #[error("stdin line {line}: expected a JSON object with a \"text\" string")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading stdin or writing stdout failed.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The process exit code this error ends the encoder with (see [`chatspace_proto::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::RuntimeNotFound { .. }
            | Error::RuntimeLoad { .. }
            | Error::RuntimeVersion { .. }
            | Error::RuntimeSetup(_)
            | Error::NoCuda { .. } => exit::NO_RUNTIME,
            Error::CudaLibraries { .. } | Error::Gpu { .. } => exit::GPU,
            Error::ModelDirMissing(_)
            | Error::ModelFileMissing { .. }
            | Error::ReadConfig { .. }
            | Error::ParseConfig { .. }
            | Error::BadConfig { .. }
            | Error::BadOption(_)
            | Error::Tokenizer { .. }
            | Error::LoadModel { .. }
            | Error::UnsupportedModel { .. }
            | Error::BadLine { .. } => exit::BAD_INPUT,
            Error::NoSecret | Error::Rejected(_) | Error::Protocol(_) | Error::Wire(_) => {
                exit::PROTOCOL
            }
            Error::Tokenize(_)
            | Error::Inference(_)
            | Error::OutputShape { .. }
            | Error::Connect { .. }
            | Error::Io { .. } => exit::FAILURE,
        }
    }
}

/// The cause of an error, as text, when the library that failed gives no error value worth
/// keeping (a `dlerror()` string, or an ONNX Runtime message with the path cut out).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Detail(pub String);

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and all its causes on one line, `outer: inner: innermost`, for the wire
/// (`Fatal`/`Failed` reasons must be one line).
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the error chain says the peer went away (broken pipe / connection reset): not worth
/// reporting, since nobody is left to read the report.
pub fn is_peer_gone(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            );
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_the_chain_and_flattens_newlines() {
        let err = Error::Io {
            what: "reading stdin",
            source: io::Error::other("first\nsecond"),
        };
        assert_eq!(one_line(&err), "reading stdin failed: first second");
    }

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_peer_gone() {
        let err = Error::Wire(chatspace_proto::ProtoError::Io(io::Error::from(
            io::ErrorKind::BrokenPipe,
        )));
        assert!(is_peer_gone(&err));
        assert!(!is_peer_gone(&Error::NoSecret));
    }
}
