//! Loading everything a model folder needs, and embedding one unit of tokenized texts.
//!
//! Loading goes folder → runtime → tokenizer → session, so a bad folder is reported before a
//! missing runtime is looked for. Tokenizing is kept apart from [`Engine`] so that `serve` can
//! tokenize the next unit on another thread while this one runs.

use std::path::PathBuf;

use chatspace_proto::ModelInfo;

use crate::batching;
use crate::config::{ModelConfig, ModelOptions, Side};
use crate::error::{Error, Result};
use crate::model::{Model, SessionSettings};
use crate::runtime::{self, Device, Runtime};
use crate::tokenize::{TextTokenizer, Tokenized};

/// What the command line says about loading and running a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The model folder and its overrides.
    pub model: ModelOptions,
    /// `--ort-lib`.
    pub ort_lib: Option<PathBuf>,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Where the model runs.
    pub device: Device,
    /// Most rows per inference batch.
    pub batch_size: usize,
    /// Most padded tokens per inference batch, if limited.
    pub tokens_per_batch: Option<usize>,
}

/// The vectors of one unit and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitOutput {
    /// Row-major `[texts, dim]`, in the unit's order.
    pub vectors: Vec<f32>,
    /// Real tokens.
    pub tokens: u64,
    /// Tokens including padding.
    pub padded_tokens: u64,
    /// Texts cut to the token limit.
    pub truncated: u32,
}

/// Runs units of tokenized texts through the model.
pub struct Engine {
    model: Model,
    batch_size: usize,
    tokens_per_batch: Option<usize>,
    padding_side: Side,
    pad_id: u32,
    // The session is built in this environment; keep it alive as long as the model.
    _runtime: Runtime,
}

/// Loads the folder, the runtime, the tokenizer and the session.
pub fn load(opts: &EngineOptions) -> Result<(TextTokenizer, Engine, ModelInfo)> {
    let cfg = ModelConfig::load(&opts.model)?;
    tracing::debug!(?cfg, "model folder read");
    let rt = runtime::load(opts.ort_lib.as_deref(), opts.device)?;
    let tokenizer = TextTokenizer::load(&cfg)?;
    let settings = SessionSettings {
        threads: opts.threads.max(1),
        device: opts.device,
    };
    let skip = tokenizer.prompt_skip(&cfg)?;
    let model = Model::load(&rt, &cfg, settings, tokenizer.pad_id(), skip)?;
    let info = ModelInfo {
        model: cfg.dir.display().to_string(),
        dim: model.dim() as u32,
        max_seq_length: cfg.max_seq_length as u32,
        pooling: model.pooling_name(),
        normalize: cfg.normalize,
        padding_side: cfg.padding_side.as_str().into(),
        inputs: model.input_names(),
        runtime: rt.description.clone(),
        max_batch_rows: opts.batch_size.max(1) as u32,
        prompt: cfg.prompt.as_ref().map(|p| p.text.clone()),
        prompt_name: cfg.prompt.as_ref().and_then(|p| p.name.clone()),
        prompt_tokens_pooled: skip == 0,
        truncate_dim: cfg.truncate_dim.map(|t| t as u32),
    };
    tracing::info!(?info, onnx = %model.path().display(), lib = %rt.located.path.display(), "model loaded");
    let engine = Engine {
        model,
        batch_size: opts.batch_size.max(1),
        tokens_per_batch: opts.tokens_per_batch,
        padding_side: cfg.padding_side,
        pad_id: tokenizer.pad_id(),
        _runtime: rt,
    };
    Ok((tokenizer, engine, info))
}

impl Engine {
    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Embeds a unit: batches of similar-length texts, each padded to its own longest, with the
    /// vectors put back in the unit's order. An empty unit gives no vectors.
    pub fn embed_unit(&mut self, texts: &[Tokenized]) -> Result<UnitOutput> {
        let dim = self.dim();
        let mut out = UnitOutput {
            vectors: vec![0.0; texts.len() * dim],
            tokens: 0,
            padded_tokens: 0,
            truncated: texts.iter().filter(|t| t.truncated).count() as u32,
        };
        let lengths: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        for rows in batching::plan(&lengths, self.batch_size, self.tokens_per_batch) {
            let refs: Vec<&Tokenized> = rows.iter().map(|&i| &texts[i]).collect();
            let batch = batching::pad(&refs, self.padding_side, self.pad_id);
            let vectors = self.model.embed(&batch)?;
            if vectors.len() != rows.len() * dim {
                return Err(Error::OutputShape {
                    name: "pooled vectors".into(),
                    shape: vec![vectors.len() as i64],
                    expected: format!("{} rows of {dim}", rows.len()),
                });
            }
            batching::scatter(&mut out.vectors, dim, &rows, &vectors);
            out.tokens += batch.real_tokens();
            out.padded_tokens += (batch.rows * batch.seq) as u64;
        }
        Ok(out)
    }
}
