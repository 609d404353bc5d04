//! Loading everything a model folder needs, and embedding one unit of tokenized texts.
//!
//! Loading goes folder → runtime → tokenizer → session, so a bad folder is reported before a
//! missing runtime is looked for. Tokenizing is kept apart from [`Engine`] so that `serve` can
//! tokenize the next unit on another thread while this one runs.
//!
//! On a GPU the engine also sizes its batches to the GPU ([`crate::limits`]: rows × seq² from
//! the model's attention heads and the memory this encoder may use), limits the CUDA arena when
//! encoders share the GPU, and after a batch runs out of memory keeps later batches below that
//! size. [`ModelInfo::runtime`] records the device, the provider, where outputs are staged
//! (pinned or pageable memory) and the arena limit.

use std::path::PathBuf;

use chatspace_proto::ModelInfo;

use crate::batching;
use crate::binding::Memory;
use crate::config::{ModelConfig, ModelOptions, Side};
use crate::error::Result;
use crate::limits::{self, BatchLimits};
use crate::model::{Model, SessionSettings};
use crate::pipeline::{self, Runner};
use crate::readout::Readout;
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
    /// Encoders sharing this encoder's GPU, this one included (`--encoders-on-gpu`).
    pub encoders_on_gpu: u32,
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
    limits: BatchLimits,
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
    let gpu_mem_limit = rt
        .gpu
        .as_ref()
        .and_then(|g| limits::gpu_mem_limit(g.memory.total, opts.encoders_on_gpu));
    let settings = SessionSettings {
        threads: opts.threads.max(1),
        device: opts.device,
        gpu_mem_limit,
    };
    let skip = tokenizer.prompt_skip(&cfg)?;
    let model = Model::load(&rt, &cfg, settings, tokenizer.pad_id(), skip)?;
    let limits = BatchLimits {
        rows: opts.batch_size.max(1),
        tokens: opts.tokens_per_batch,
        scores: match opts.device {
            Device::Cpu => None,
            Device::Cuda(_) => {
                let heads = limits::attention_heads(&cfg.dir).unwrap_or(limits::DEFAULT_HEADS);
                let bytes = if model.is_half() { 2 } else { 4 };
                let memory = gpu_mem_limit.map(|l| l as u64).unwrap_or_else(|| {
                    rt.gpu
                        .as_ref()
                        .map_or(limits::DEFAULT_GPU_BYTES, |g| g.memory.total)
                        / u64::from(opts.encoders_on_gpu.max(1))
                });
                Some(limits::score_cap(heads, bytes, memory))
            }
        },
    };
    tracing::debug!(?limits, "batch limits");
    let info = ModelInfo {
        model: cfg.dir.display().to_string(),
        dim: model.dim() as u32,
        max_seq_length: cfg.max_seq_length as u32,
        pooling: model.pooling_name(),
        normalize: cfg.normalize,
        padding_side: cfg.padding_side.as_str().into(),
        inputs: model.input_names(),
        runtime: describe(&rt, opts, model.memory(), gpu_mem_limit),
        max_batch_rows: opts.batch_size.max(1) as u32,
        prompt: cfg.prompt.as_ref().map(|p| p.text.clone()),
        prompt_name: cfg.prompt.as_ref().and_then(|p| p.name.clone()),
        prompt_tokens_pooled: skip == 0,
        truncate_dim: cfg.truncate_dim.map(|t| t as u32),
    };
    tracing::info!(?info, onnx = %model.path().display(), lib = %rt.located.path.display(), "model loaded");
    let engine = Engine {
        model,
        limits,
        padding_side: cfg.padding_side,
        pad_id: tokenizer.pad_id(),
        _runtime: rt,
    };
    Ok((tokenizer, engine, info))
}

/// The manifest's runtime: version, device and provider; on a GPU, where outputs land and the
/// arena limit (`onnxruntime 1.31.1 CUDAExecutionProvider (GPU 0); device cuda:0; outputs in
/// pinned memory; gpu_mem_limit 30.4 GB, 4 encoders on this GPU`).
fn describe(rt: &Runtime, opts: &EngineOptions, memory: Memory, limit: Option<usize>) -> String {
    let mut out = format!("{}; device {}", rt.description, opts.device);
    if let Device::Cuda(_) = opts.device {
        out.push_str(match memory {
            Memory::Pinned(_) => "; outputs in pinned memory",
            Memory::Host => "; outputs in pageable memory (no pinned allocator)",
        });
        if let Some(l) = limit {
            out.push_str(&format!(
                "; gpu_mem_limit {:.1} GB, {} encoders on this GPU",
                l as f64 / 1e9,
                opts.encoders_on_gpu
            ));
        }
    }
    out
}

/// One unit's texts through one model, for [`pipeline::run_unit`].
struct UnitRunner<'a> {
    model: &'a mut Model,
    texts: &'a [Tokenized],
    side: Side,
    pad_id: u32,
}

impl Runner for UnitRunner<'_> {
    type Out = Readout;

    fn run(&mut self, rows: &[usize]) -> Result<(Readout, u64, u64)> {
        let refs: Vec<&Tokenized> = rows.iter().map(|&i| &self.texts[i]).collect();
        let batch = batching::pad(&refs, self.side, self.pad_id);
        let out = self.model.run(&batch)?;
        Ok((out, batch.real_tokens(), (batch.rows * batch.seq) as u64))
    }

    fn read(out: Readout) -> Result<Vec<f32>> {
        out.vectors()
    }

    fn padded(&self, rows: &[usize]) -> u64 {
        let longest = rows.iter().map(|&i| self.texts[i].ids.len()).max();
        (rows.len() * longest.unwrap_or(0).max(1)) as u64
    }
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
        let lengths: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let batches = batching::plan(&lengths, &self.limits);
        let mut runner = UnitRunner {
            model: &mut self.model,
            texts,
            side: self.padding_side,
            pad_id: self.pad_id,
        };
        let ran = pipeline::run_unit(&mut runner, batches, texts.len(), dim)?;
        if let Some(size) = ran.out_of_memory_at {
            // Later units: batches below the size that did not fit.
            let tokens = (size / 2).max(1) as usize;
            if self.limits.tokens.is_none_or(|t| t > tokens) {
                tracing::warn!(
                    tokens,
                    "lowering the padded tokens per batch after running out of memory"
                );
                self.limits.tokens = Some(tokens);
            }
        }
        Ok(UnitOutput {
            vectors: ran.vectors,
            tokens: ran.tokens,
            padded_tokens: ran.padded_tokens,
            truncated: texts.iter().filter(|t| t.truncated).count() as u32,
        })
    }
}
