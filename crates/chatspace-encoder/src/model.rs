//! The ONNX session: what the model takes and gives, and running one padded batch to pooled,
//! normalised vectors.
//!
//! The session's inputs are read once at load. The encoder feeds `input_ids`, `attention_mask`,
//! `token_type_ids` and `position_ids` (each only if declared; `int64` or `int32`); any other input
//! is an error naming it. For the output, `sentence_embedding` is used as is when the graph has
//! it (pooling `model`); otherwise `last_hidden_state`, `token_embeddings` or the first rank-3
//! output is pooled here with the folder's pooling modes.
//!
//! Runs go through an I/O binding ([`crate::binding`]): inputs staged in host memory on CPU and
//! pinned host memory on CUDA, the output bound to the same, and read in place by a
//! [`Readout`] (which [`crate::pipeline`] reads on another thread while the next batch runs).
//!
//! On a GPU, a CUDA, cuBLAS or cuDNN failure while the session is made or the test batch runs
//! is a GPU error ([`crate::cuda::gpu_error`]), never a bad model.

use std::path::PathBuf;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{Outlet, TensorElementType};

use crate::batching::{self, Padded};
use crate::binding::{Binding, Memory};
use crate::config::ModelConfig;
use crate::cuda;
use crate::error::{Error, Result};
use crate::readout::{Head, ReadSettings, Readout};
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

/// Session-level settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Where the session runs.
    pub device: Device,
    /// On a GPU shared with other encoders: the most bytes this session's CUDA arena takes
    /// (`gpu_mem_limit`; the arena then grows by what is asked, not in powers of two).
    pub gpu_mem_limit: Option<usize>,
}

/// A loaded model, ready to embed padded batches.
pub struct Model {
    session: Session,
    path: PathBuf,
    inputs: Vec<Input>,
    output: String,
    binding: Binding,
    dim: usize,
    /// How outputs become vectors.
    read: ReadSettings,
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
        let mut builder = session_builder(rt, s)?;
        // A path, not bytes: external weights (`model.onnx_data`) load from beside the file.
        let session = match builder.commit_from_file(&path) {
            Ok(session) => session,
            Err(source) => {
                if let Device::Cuda(k) = s.device
                    && let Some(e) = cuda::gpu_error(k, "creating the session on the GPU", &source)
                {
                    return Err(e);
                }
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
        let memory = match s.device {
            Device::Cpu => Memory::Host,
            Device::Cuda(k) => Memory::Pinned(k),
        };
        let bind = |session: &Session, output: &str, memory| {
            Binding::new(session, output, memory).map_err(|e| {
                unsupported(format!(
                    "could not bind output {output} to {memory:?} memory: {e}"
                ))
            })
        };
        let binding = match bind(&session, &output, memory) {
            Ok(b) => b,
            Err(e) if memory != Memory::Host => {
                tracing::warn!(
                    "{}; staging batches in ordinary host memory",
                    crate::error::one_line(&e)
                );
                bind(&session, &output, Memory::Host)?
            }
            Err(e) => return Err(e),
        };
        let mut model = Model {
            session,
            path: path.clone(),
            read: ReadSettings {
                output: output.clone(),
                head,
                half,
                skip: 0,
                truncate: None,
                normalize: cfg.normalize,
            },
            inputs,
            output,
            binding,
            dim: 0,
        };
        let probe = Tokenized {
            ids: vec![probe_id],
            type_ids: vec![0],
            truncated: false,
        };
        let batch = batching::pad(&[&probe], cfg.padding_side, probe_id);
        let mut probed = model.embed(&batch);
        if let Err(e) = &probed
            && model.binding.memory() != Memory::Host
        {
            // A provider without a working pinned allocator: still CUDA, through pageable memory.
            tracing::warn!(
                "a test batch through pinned memory failed ({}); staging batches in ordinary host memory",
                crate::error::one_line(e)
            );
            model.binding = bind(&model.session, &model.output, Memory::Host)?;
            probed = model.embed(&batch);
        }
        if let (Device::Cuda(k), Err(Error::Inference(e))) = (s.device, &probed)
            && let Some(gpu) = cuda::gpu_error(k, "running a test batch on the GPU", e)
        {
            return Err(gpu);
        }
        let v = probed.map_err(|e| {
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
        model.read.skip = skip;
        model.read.truncate = cfg.truncate_dim.filter(|&t| t < v.len());
        model.dim = model.read.truncate.unwrap_or(v.len());
        Ok(model)
    }

    /// Width of every vector this model returns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `model` when the graph pools, else the modes joined with `+` (`mean`, `cls+mean`, ...).
    pub fn pooling_name(&self) -> String {
        match &self.read.head {
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
        self.run(b)?.vectors()
    }

    /// Runs one batch and returns its output unread (see [`Readout::vectors`]).
    pub fn run(&mut self, b: &Padded) -> Result<Readout> {
        let shape = [b.rows, b.seq];
        for input in &self.inputs {
            let data = match input.feed {
                Feed::Ids => &b.ids,
                Feed::Mask => &b.mask,
                Feed::TypeIds => &b.type_ids,
                Feed::Positions => &b.positions,
            };
            if input.int32 {
                self.binding.bind(&input.name, shape, data, |x| x as i32)
            } else {
                self.binding.bind(&input.name, shape, data, |x| x)
            }
            .map_err(Error::Inference)?;
        }
        let out = self
            .binding
            .run(&mut self.session, &self.output)
            .map_err(Error::Inference)?;
        Ok(Readout::new(
            out,
            self.read.clone(),
            b.rows,
            b.seq,
            b.mask.clone(),
        ))
    }

    /// Where batches are staged: pinned memory on a GPU unless the provider had none.
    pub fn memory(&self) -> Memory {
        self.binding.memory()
    }

    /// The output is float16 (an fp16 export).
    pub fn is_half(&self) -> bool {
        self.read.half
    }

    /// The ONNX file this model came from.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

/// A session builder with the command line's settings and, on a GPU, the CUDA provider
/// registered (with `gpu_mem_limit` when encoders share the GPU).
fn session_builder(rt: &Runtime, s: SessionSettings) -> Result<SessionBuilder> {
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
        let mut ep = ort::ep::CUDA::default().with_device_id(k as i32);
        if let Some(limit) = s.gpu_mem_limit {
            ep = ep
                .with_memory_limit(limit)
                .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
        }
        // Never a silent CPU run: registration failing is an error.
        builder = builder
            .with_execution_providers([ep.build().error_on_failure()])
            .map_err(|e| {
                cuda::provider_error(k, "registering the CUDA execution provider", &e.into())
            })?;
    }
    Ok(builder)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ModelOptions;
    use crate::tokenize::TextTokenizer;

    /// MiniLM's folder and the checkout's runtime (both required: `scripts/setup.sh --no-build`).
    fn minilm() -> (ModelConfig, Runtime) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = root.join("../shared/models/all-MiniLM-L6-v2");
        assert!(dir.is_dir(), "{} is missing", dir.display());
        let cfg = ModelConfig::load(&ModelOptions::for_folder(dir)).unwrap();
        let lib = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".onnxruntime/libonnxruntime.so"));
        let rt = crate::runtime::load(Some(&lib), Device::Cpu).unwrap();
        (cfg, rt)
    }

    /// Batches of every shape go through the one I/O binding: each row's vector is the one it
    /// gets alone, whatever the batch's shape before it (the output is re-bound every run).
    #[test]
    fn batches_of_changing_shapes_run_through_one_binding() {
        let (cfg, rt) = minilm();
        let tok = TextTokenizer::load(&cfg).unwrap();
        let s = SessionSettings {
            threads: 1,
            device: Device::Cpu,
            gpu_mem_limit: None,
        };
        let mut model = Model::load(&rt, &cfg, s, tok.pad_id(), 0).unwrap();
        assert_eq!(model.binding.memory(), Memory::Host);
        let texts = [
            "a",
            "a longer sentence about Debian packages",
            "mid length text here",
            "one two three four five six seven eight nine ten eleven twelve",
        ];
        let toks: Vec<Tokenized> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        let alone: Vec<Vec<f32>> = toks
            .iter()
            .map(|t| {
                let b = batching::pad(&[t], cfg.padding_side, tok.pad_id());
                model.embed(&b).unwrap()
            })
            .collect();
        let dim = model.dim();
        assert_eq!(dim, 384);
        // Growing, shrinking, then growing again: [2 x short], [4 x long], [1 x short], [3 x mid].
        for rows in [&[0usize, 2][..], &[0, 1, 2, 3], &[0], &[3, 1, 2]] {
            let refs: Vec<&Tokenized> = rows.iter().map(|&i| &toks[i]).collect();
            let b = batching::pad(&refs, cfg.padding_side, tok.pad_id());
            let v = model.embed(&b).unwrap();
            assert_eq!(v.len(), rows.len() * dim, "batch {rows:?}");
            for (k, &i) in rows.iter().enumerate() {
                let got = &v[k * dim..(k + 1) * dim];
                let diff = got
                    .iter()
                    .zip(&alone[i])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "row {i} in batch {rows:?} differs by {diff}");
            }
        }
    }
}
