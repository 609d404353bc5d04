//! The messages. Changing any of these types changes the wire format: bump [`PROTO_VERSION`].
//!
//! Compatibility rule: [`Hello`] is always the first frame an encoder sends and its first field is
//! the protocol version, so a supervisor can read the version of any peer, whatever else changed.

use serde::{Deserialize, Serialize};

/// Version of this protocol; both sides must speak the same one.
pub const PROTO_VERSION: u32 = 2;

/// The first frame of every session, sent by the encoder right after it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The encoder's [`PROTO_VERSION`]. Must stay the first field.
    pub proto_version: u32,
    /// The per-run secret the supervisor passed to the encoder; proves the peer is ours.
    pub secret: String,
    /// Which encoder slot this process fills (0-based).
    pub encoder_id: u32,
    /// The encoder's process id.
    pub pid: u32,
}

/// What the encoder says about the model it loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model folder the encoder loaded.
    pub model: String,
    /// Embedding dimension of every vector this encoder returns.
    pub dim: u32,
    /// Token limit per text (texts longer than this are truncated).
    pub max_seq_length: u32,
    /// Pooling mode in use (`mean`, `cls`, `lasttoken`, ... or `model` when the ONNX graph pools).
    pub pooling: String,
    /// Whether vectors are L2-normalised.
    pub normalize: bool,
    /// Padding side of batches (`right` or `left`).
    pub padding_side: String,
    /// Names of the ONNX inputs the encoder feeds.
    pub inputs: Vec<String>,
    /// The ONNX Runtime version string and execution provider, for the manifest.
    pub runtime: String,
    /// Rows per inference batch the encoder uses at most.
    pub max_batch_rows: u32,
    /// The prompt prepended to every text, if any.
    pub prompt: Option<String>,
    /// The prompt's name in the model's `config_sentence_transformers.json`, when it came from
    /// there (`--prompt-name`, or the model's `default_prompt_name`).
    pub prompt_name: Option<String>,
    /// Whether the prompt's tokens are pooled (false when the Pooling config says
    /// `include_prompt: false` and there is a prompt).
    pub prompt_tokens_pooled: bool,
    /// `--truncate-dim`, when given: `dim` is then this.
    pub truncate_dim: Option<u32>,
}

/// A unit of work: texts to embed, answered by [`FromEncoder::Embedded`] with the same `unit_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// Supervisor-chosen id; unique within a run.
    pub unit_id: u64,
    /// The texts, in row order.
    pub texts: Vec<String>,
}

/// Supervisor → encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToEncoder {
    /// The handshake succeeded; go on and load the model.
    Welcome {
        /// The supervisor's [`PROTO_VERSION`].
        proto_version: u32,
    },
    /// The handshake failed; the encoder should print `reason` and exit.
    Reject {
        /// One line saying why.
        reason: String,
    },
    /// Embed these texts.
    Work(Work),
    /// Finish the units already received, then exit cleanly.
    Shutdown,
}

/// Encoder → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromEncoder {
    /// First frame of a session (see [`Hello`]).
    Hello(Hello),
    /// The model is loaded; work may be sent.
    Ready(ModelInfo),
    /// The embeddings of one unit.
    Embedded {
        /// The unit this answers.
        unit_id: u64,
        /// Row-major vectors: `texts.len() * dim` values.
        vectors: Vec<f32>,
        /// Real (non-padding) tokens in the unit.
        tokens: u64,
        /// Tokens processed including padding.
        padded_tokens: u64,
        /// How many texts were cut to the model's token limit.
        truncated: u32,
    },
    /// The unit could not be embedded (the encoder itself is still usable).
    Failed {
        /// The unit this answers.
        unit_id: u64,
        /// One line saying why.
        reason: String,
    },
    /// The encoder cannot go on (model failed to load, runtime missing, ...); it exits next.
    Fatal {
        /// One line saying why.
        reason: String,
    },
}
