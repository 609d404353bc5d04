//! `chatspace-encoder`: one sentence-transformers model on ONNX Runtime (CPU).
//!
//! - `serve` is started by the `chatspace` supervisor: it connects to the supervisor's socket,
//!   proves itself with the secret in `CHATSPACE_SECRET`, loads the model and embeds the units it
//!   is sent (see [`serve`] and the `chatspace-proto` crate).
//! - `embed` reads `{"text": ...}` JSON lines on stdin and writes `{"embedding": [...]}` lines on
//!   stdout (see [`embed`]).
//!
//! Vectors match Python sentence-transformers: same tokenization and truncation, pooling and
//! normalisation read from the model folder (see [`config`]).
//!
//! Errors are one line on stderr, `chatspace-encoder: ...`, and an exit code from
//! [`chatspace_proto::exit`]: 3 for a bad model folder or input line, 4 when ONNX Runtime cannot
//! be found or loaded, 5 for a failed handshake, 6 when the GPU cannot be used (driver, CUDA
//! libraries, GPU memory; see `cuda`), 1 otherwise. Logs go to stderr, filtered by
//! `CHATSPACE_LOG` (or `RUST_LOG`), `warn` by default; stdout carries only `embed`'s output.
//!
//! Test only: debug builds of `serve` read `CHATSPACE_TEST_FAULTS` (e.g. `abort:BOOM,hang:ZZZ`)
//! and abort, hang or fail on units whose texts contain a marker, so the tests can check that
//! the supervisor survives its encoders (see `faults.rs`). Release builds have no such hook.

mod batching;
mod binding;
mod config;
mod cuda;
mod embed;
mod engine;
mod error;
#[cfg(debug_assertions)]
mod faults;
mod ir_version;
mod limits;
mod model;
mod pipeline;
mod pooling;
mod prompt;
mod readout;
mod runtime;
mod serve;
mod tokenize;
mod wordpiece;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chatspace_proto::exit;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{ModelOptions, PoolingMode, PromptChoice};
use crate::engine::EngineOptions;
use crate::error::is_peer_gone;
use crate::serve::ServeOptions;

/// chatspace's encoder: a sentence-transformers model on ONNX Runtime.
#[derive(Debug, Parser)]
#[command(name = "chatspace-encoder", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the chatspace supervisor over its local socket (started by `chatspace`; the
    /// per-run secret comes from the CHATSPACE_SECRET environment variable).
    Serve {
        /// The supervisor's socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// This encoder's slot number, echoed in the handshake.
        #[arg(long, value_name = "N")]
        encoder_id: u32,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Embed JSON lines `{"text": "..."}` from stdin to `{"embedding": [...]}` lines on stdout.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Tokenize JSON lines `{"text": "..."}` from stdin to `{"ids": [...], "truncated": bool}`
    /// lines on stdout, as `serve` and `embed` would before running the model.
    Tokenize {
        /// The model folder (only its tokenizer and settings are read).
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// Override the folder's max_seq_length.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
        max_seq_length: Option<u32>,
        /// Use Hugging Face tokenizers alone, without the fast WordPiece path.
        #[arg(long)]
        exact: bool,
    },
}

/// Options shared by both subcommands.
#[derive(Debug, Args)]
struct ModelArgs {
    /// A sentence-transformers model folder (with tokenizer.json and an ONNX export).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The ONNX file, relative to the model folder [default: onnx/model.onnx, else model.onnx].
    #[arg(long, value_name = "REL")]
    onnx_file: Option<PathBuf>,
    /// The ONNX Runtime library [default: $ORT_DYLIB_PATH, else .onnxruntime/libonnxruntime.so
    /// found upwards from the executable].
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// ONNX Runtime intra-op threads. 1 by default, for running several encoders side by side
    /// (tokenizing uses one more thread); raise it when one encoder has the machine to itself.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Where the model runs: cpu, or cuda:N (GPU N as CUDA numbers the visible ones; needs
    /// the GPU build of ONNX Runtime, see scripts/setup.sh --gpu).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    device: runtime::Device,
    /// Most texts per inference batch (a unit is cut into batches of similar length)
    /// [default: 32 on cpu, 512 on cuda:N, as `chatspace` uses].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Most padded tokens (rows × longest row) per inference batch; 0 for no limit
    /// [default: 512 on cpu, 16384 on cuda:N, as `chatspace` uses].
    #[arg(long, value_name = "N")]
    tokens_per_batch: Option<u32>,
    /// Encoders sharing this encoder's GPU, itself included (`chatspace` sets it): above 1,
    /// ONNX Runtime's CUDA memory arena is limited to an equal share of the GPU's memory.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    encoders_on_gpu: u32,
    /// Token limit per text, overriding the model folder's max_seq_length.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    max_seq_length: Option<u32>,
    /// Pooling modes, overriding 1_Pooling/config.json: cls, max, mean, mean_sqrt_len_tokens,
    /// weightedmean, lasttoken (comma-separated: concatenated in that order).
    #[arg(long, value_name = "MODE[,MODE]", value_delimiter = ',', value_parser = parse_pooling)]
    pooling: Vec<PoolingMode>,
    /// L2-normalise vectors, whatever modules.json says.
    #[arg(long, conflicts_with = "no_normalize")]
    normalize: bool,
    /// Do not normalise vectors, whatever modules.json says.
    #[arg(long)]
    no_normalize: bool,
    /// A prompt (from config_sentence_transformers.json) prepended to every text
    /// [default: the model's default_prompt_name].
    #[arg(long, value_name = "NAME", conflicts_with = "prompt")]
    prompt_name: Option<String>,
    /// Text prepended to every text.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Keep the first N dimensions of every vector (normalised afterwards when the model
    /// normalises).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    truncate_dim: Option<u32>,
}

/// A pooling mode by its sentence-transformers name.
fn parse_pooling(s: &str) -> Result<PoolingMode, String> {
    PoolingMode::from_name(s).ok_or_else(|| {
        let names: Vec<_> = PoolingMode::ALL.iter().map(|m| m.as_str()).collect();
        format!("`{s}` is not a pooling mode ({})", names.join(", "))
    })
}

impl ModelArgs {
    fn engine_options(self) -> EngineOptions {
        // `serve` is always given both by the supervisor; these are for `embed` on its own.
        let (rows, tokens) = self.device.batch_defaults();
        EngineOptions {
            model: ModelOptions {
                model: self.model,
                onnx_file: self.onnx_file,
                max_seq_length: self.max_seq_length.map(|n| n as usize),
                pooling: (!self.pooling.is_empty()).then(|| {
                    let mut modes = self.pooling;
                    modes.sort_unstable();
                    modes.dedup();
                    modes
                }),
                normalize: match (self.normalize, self.no_normalize) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                prompt: match (self.prompt, self.prompt_name) {
                    (Some(text), _) => PromptChoice::Text(text),
                    (None, Some(name)) => PromptChoice::Name(name),
                    (None, None) => PromptChoice::Default,
                },
                truncate_dim: self.truncate_dim.map(|n| n as usize),
            },
            ort_lib: self.ort_lib,
            threads: usize::from(self.threads),
            device: self.device,
            batch_size: self.batch_size.unwrap_or(rows) as usize,
            tokens_per_batch: Some(self.tokens_per_batch.unwrap_or(tokens))
                .filter(|&t| t > 0)
                .map(|t| t as usize),
            encoders_on_gpu: self.encoders_on_gpu,
        }
    }
}

fn main() -> ExitCode {
    install_panic_hook();
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_peer_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("chatspace-encoder: {:#}", anyhow::Error::from(e));
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), error::Error> {
    match cli.command {
        Command::Serve {
            socket,
            encoder_id,
            model,
        } => serve::serve(&ServeOptions {
            socket,
            encoder_id,
            engine: model.engine_options(),
        }),
        Command::Embed { model } => embed::embed(&model.engine_options()),
        Command::Tokenize {
            model,
            max_seq_length,
            exact,
        } => embed::tokenize(
            &ModelOptions {
                max_seq_length: max_seq_length.map(|n| n as usize),
                ..ModelOptions::for_folder(model)
            },
            exact,
        ),
    }
}

/// Logs to stderr, filtered by `CHATSPACE_LOG`, else `RUST_LOG`, else `warn`.
fn init_logging() {
    let filter = EnvFilter::try_from_env("CHATSPACE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A bug must still end in one line and a documented code, not a backtrace; and a panic on the
/// reader thread must end the process rather than leave the main thread waiting.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "chatspace-encoder: internal error: {}{at}",
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        std::process::exit(exit::FAILURE);
    }));
}
