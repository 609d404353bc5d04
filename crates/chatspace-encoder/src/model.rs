//! The ONNX session: what the model takes and gives, and running one padded batch to pooled,
//! normalised vectors.
//!
//! The session's inputs are read once at load. The encoder feeds `input_ids`, `attention_mask`,
//! `token_type_ids` and `position_ids` (each only if declared; `int64` or `int32`); any other input
//! is an error naming it. For the output, `sentence_embedding` is used as is when the graph has
//! it (pooling `model`); otherwise `last_hidden_state`, `token_embeddings` or the first rank-3
//! output is pooled here with the folder's pooling modes.

use std::borrow::Cow;
use std::path::PathBuf;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Outlet, Tensor, TensorElementType};

use crate::batching::{self, Padded};
use crate::config::{ModelConfig, PoolingMode};
use crate::error::{Error, Result};
use crate::pooling::{self, Dims};
use crate::runtime::{Device, Runtime};
use crate::tokenize::Tokenized;

/// Which tensor of a [`Padded`] batch an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Ids,
    Mask,
    TypeIds,
    Positions,
}

/// One model input: its name, what it gets, and whether it wants `int32` instead of `int64`.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    feed: Feed,
    int32: bool,
}

/// How the output is turned into one vector per row.
#[derive(Debug, Clone, PartialEq)]
enum Head {
    /// The graph pools: `[rows, dim]`.
    Pooled,
    /// Token states `[rows, seq, width]`, pooled with these modes.
    Tokens(Vec<PoolingMode>),
}

/// Session-level settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Where the session runs.
    pub device: Device,
}

/// A loaded model, ready to embed padded batches.
pub struct Model {
    session: Session,
    path: PathBuf,
    inputs: Vec<Input>,
    output: String,
    head: Head,
    normalize: bool,
    run_options: RunOptions<HasSelectedOutputs>,
    dim: usize,
    /// The output is float16 (an fp16 export): widened to f32 before pooling.
    half: bool,
    /// Real tokens left out of pooling at the start of each row (an excluded prompt's).
    skip: usize,
    /// `--truncate-dim`: keep the first this many dimensions, then normalise.
    truncate: Option<usize>,
}

impl Model {
    /// Builds the session for `cfg.onnx_path`, works out its inputs and output, and runs one
    /// one-token probe batch (with token `probe_id`) to learn the vector width. Pooling leaves
    /// out the first `skip` real tokens of each row (see [`pooling::pool`]).
    pub fn load(
        rt: &Runtime,
        cfg: &ModelConfig,
        s: SessionSettings,
        probe_id: u32,
        skip: usize,
    ) -> Result<Self> {
        let path = cfg.onnx_path.clone();
        let setup = |e: ort::Error<_>| Error::RuntimeSetup(e.into());
        let mut builder = Session::builder(&rt.env)
            .map_err(Error::RuntimeSetup)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(setup)?
            .with_intra_threads(s.threads)
            .map_err(setup)?
            .with_inter_threads(1)
            .map_err(setup)?
            .with_parallel_execution(false)
            .map_err(setup)?;
        if let Device::Cuda(k) = s.device {
            // Never a silent CPU run: registration failing is an error.
            let cuda = ort::ep::CUDA::default()
                .with_device_id(k as i32)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| Error::CudaSetup {
                    device: k,
                    source: e.into(),
                })?;
        }
        // A path, not bytes: external weights (`model.onnx_data`) load from beside the file.
        let session = match builder.commit_from_file(&path) {
            Ok(session) => session,
            Err(source) => {
                let retry = crate::ir_version::unsupported_ir(&source.to_string())
                    .and_then(|(model_ir, max_ir)| {
                        let bytes = std::fs::read(&path).ok()?;
                        let patched = crate::ir_version::with_ir_version(&bytes, max_ir)?;
                        // Nothing for the user to do: say it only at info level.
                        tracing::info!(
                            "{} declares ONNX IR version {model_ir}, newer than this ONNX Runtime's {max_ir}; loading it as IR version {max_ir}",
                            path.display()
                        );
                        builder.commit_from_memory(&patched).ok()
                    });
                retry.ok_or_else(|| Error::LoadModel {
                    path: path.clone(),
                    source: load_detail(&path, &source),
                })?
            }
        };
        let unsupported = |reason: String| Error::UnsupportedModel {
            path: path.clone(),
            reason,
        };
        for o in session.inputs() {
            tracing::debug!(name = o.name(), dtype = ?o.dtype(), "model input");
        }
        for o in session.outputs() {
            tracing::debug!(name = o.name(), dtype = ?o.dtype(), "model output");
        }
        let inputs = discover_inputs(session.inputs()).map_err(unsupported)?;
        let (output, pooled, half) = pick_output(session.outputs()).map_err(unsupported)?;
        let head = if pooled {
            Head::Pooled
        } else if cfg.pooling.is_empty() {
            return Err(unsupported(format!(
                "output {output} holds token states, but modules.json has no Pooling module"
            )));
        } else {
            Head::Tokens(cfg.pooling.clone())
        };
        tracing::debug!(%output, ?head, "model output in use");
        let run_options = RunOptions::new()
            .map_err(Error::RuntimeSetup)?
            .with_outputs(OutputSelector::no_default().with(output.clone()));
        let mut model = Model {
            session,
            path: path.clone(),
            inputs,
            output,
            head,
            normalize: cfg.normalize,
            run_options,
            dim: 0,
            half,
            skip: 0,
            truncate: None,
        };
        let probe = Tokenized {
            ids: vec![probe_id],
            type_ids: vec![0],
            truncated: false,
        };
        let batch = batching::pad(&[&probe], cfg.padding_side, probe_id);
        let v = model.embed(&batch).map_err(|e| {
            unsupported(format!(
                "a one-token test batch failed: {}",
                crate::error::one_line(&e)
            ))
        })?;
        if v.is_empty() {
            return Err(unsupported(format!(
                "output {} has zero width",
                model.output
            )));
        }
        if let Some(t) = cfg.truncate_dim.filter(|&t| t > v.len()) {
            return Err(Error::BadOption(format!(
                "--truncate-dim {t} is more than the {} dimensions of {}'s vectors",
                v.len(),
                cfg.dir.display()
            )));
        }
        model.skip = skip;
        model.truncate = cfg.truncate_dim.filter(|&t| t < v.len());
        model.dim = model.truncate.unwrap_or(v.len());
        Ok(model)
    }

    /// Width of every vector this model returns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `model` when the graph pools, else the modes joined with `+` (`mean`, `cls+mean`, ...).
    pub fn pooling_name(&self) -> String {
        match &self.head {
            Head::Pooled => "model".into(),
            Head::Tokens(modes) => modes
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join("+"),
        }
    }

    /// The names of the inputs fed, in the session's order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// Runs one batch; returns `[rows, dim]` vectors, pooled and (if configured) normalised.
    pub fn embed(&mut self, b: &Padded) -> Result<Vec<f32>> {
        let shape = [b.rows, b.seq];
        let mut feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for input in &self.inputs {
            let data = match input.feed {
                Feed::Ids => &b.ids,
                Feed::Mask => &b.mask,
                Feed::TypeIds => &b.type_ids,
                Feed::Positions => &b.positions,
            };
            let value: SessionInputValue<'_> = if input.int32 {
                let v: Vec<i32> = data.iter().map(|&x| x as i32).collect();
                Tensor::from_array((shape, v))
                    .map_err(Error::Inference)?
                    .into()
            } else {
                Tensor::from_array((shape, data.clone()))
                    .map_err(Error::Inference)?
                    .into()
            };
            feeds.push((Cow::Borrowed(input.name.as_str()), value));
        }
        let outputs = self
            .session
            .run_with_options(feeds, &self.run_options)
            .map_err(Error::Inference)?;
        let widened: Vec<f32>;
        let (out_shape, data): (Vec<i64>, &[f32]) = if self.half {
            // fp16 exports: pooled in f32 like sentence-transformers' `model.half()` outputs
            // are after `.float()`.
            let (shape, data) = outputs[self.output.as_str()]
                .try_extract_tensor::<half::f16>()
                .map_err(Error::Inference)?;
            widened = data.iter().map(|x| x.to_f32()).collect();
            (shape.to_vec(), &widened)
        } else {
            let (shape, data) = outputs[self.output.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(Error::Inference)?;
            (shape.to_vec(), data)
        };
        let bad_shape = |expected: String| Error::OutputShape {
            name: self.output.clone(),
            shape: out_shape.clone(),
            expected,
        };
        let mut vectors = match &self.head {
            Head::Pooled => {
                if out_shape.len() != 2 || out_shape[0] as usize != b.rows {
                    return Err(bad_shape(format!("[{}, dim]", b.rows)));
                }
                data.to_vec()
            }
            Head::Tokens(modes) => {
                if out_shape.len() != 3
                    || out_shape[0] as usize != b.rows
                    || out_shape[1] as usize != b.seq
                {
                    return Err(bad_shape(format!("[{}, {}, width]", b.rows, b.seq)));
                }
                let d = Dims {
                    rows: b.rows,
                    seq: b.seq,
                    width: out_shape[2] as usize,
                };
                pooling::pool(data, &b.mask, d, modes, self.skip)
            }
        };
        if let Some(t) = self.truncate {
            let full = vectors.len() / b.rows.max(1);
            vectors = vectors
                .chunks(full.max(1))
                .flat_map(|v| &v[..t])
                .copied()
                .collect();
        }
        if self.normalize {
            let dim = vectors.len() / b.rows.max(1);
            pooling::normalize(&mut vectors, dim);
        }
        Ok(vectors)
    }

    /// The ONNX file this model came from.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

/// ONNX Runtime's reason for not loading `path`, without the `Load model from <path> failed:`
/// that repeats what our message says.
fn load_detail(path: &std::path::Path, err: &ort::Error) -> crate::error::Detail {
    let text = err.to_string();
    let prefix = format!("Load model from {} failed:", path.display());
    let reason = text.strip_prefix(&prefix).unwrap_or(&text).trim();
    crate::error::Detail(reason.to_string())
}

/// Maps the session's inputs to what the encoder feeds; an error names any input it cannot feed.
fn discover_inputs(outlets: &[Outlet]) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for o in outlets {
        let feed = match o.name() {
            "input_ids" => Feed::Ids,
            "attention_mask" => Feed::Mask,
            "token_type_ids" => Feed::TypeIds,
            "position_ids" => Feed::Positions,
            other => {
                return Err(format!(
                    "input {other} is not one the encoder can feed \
                     (input_ids, attention_mask, token_type_ids, position_ids)"
                ));
            }
        };
        let int32 = match o.dtype().tensor_type() {
            Some(TensorElementType::Int64) => false,
            Some(TensorElementType::Int32) => true,
            _ => {
                return Err(format!(
                    "input {} has type {:?}; int64 or int32 expected",
                    o.name(),
                    o.dtype()
                ));
            }
        };
        out.push(Input {
            name: o.name().to_string(),
            feed,
            int32,
        });
    }
    if !out.iter().any(|i| i.feed == Feed::Ids) {
        return Err("the model has no input_ids input".into());
    }
    Ok(out)
}

/// Picks the output to read: `(name, already pooled)`.
fn pick_output(outlets: &[Outlet]) -> Result<(String, bool, bool), String> {
    let rank = |o: &Outlet| o.dtype().tensor_shape().map(|s| s.len());
    let by_name = |n: &str| outlets.iter().find(|o| o.name() == n);
    let (chosen, pooled) = if let Some(o) = by_name("sentence_embedding") {
        (o, true)
    } else if let Some(o) = by_name("last_hidden_state")
        .or_else(|| by_name("token_embeddings"))
        .or_else(|| outlets.iter().find(|o| rank(o) == Some(3)))
    {
        (o, false)
    } else {
        let names: Vec<_> = outlets.iter().map(Outlet::name).collect();
        return Err(format!(
            "no sentence_embedding, last_hidden_state, token_embeddings or rank-3 output \
             among {names:?}"
        ));
    };
    let half = match chosen.dtype().tensor_type() {
        Some(TensorElementType::Float32) => false,
        Some(TensorElementType::Float16) => true,
        _ => {
            return Err(format!(
                "output {} has type {:?}; float32 or float16 expected",
                chosen.name(),
                chosen.dtype()
            ));
        }
    };
    Ok((chosen.name().to_string(), pooled, half))
}
