//! Reading a sentence-transformers model folder into a [`ModelConfig`].
//!
//! Files read (all JSON, all optional unless said otherwise):
//! - `modules.json`: which modules run. `Transformer`, `Pooling` and `Normalize` are supported;
//!   anything else (`Dense`, ...) is refused. Without it, mean pooling and no normalisation
//!   (what sentence-transformers does with a plain Hugging Face model).
//! - in the Transformer module's folder (the model folder itself, usually): `tokenizer.json`
//!   (required), `sentence_bert_config.json` (`max_seq_length`, `do_lower_case`),
//!   `tokenizer_config.json` (`padding_side`, `truncation_side`, `pad_token`, `model_max_length`)
//!   and, only when no `max_seq_length` is given, `config.json` (`max_position_embeddings`);
//! - `<Pooling path>/config.json` (required when `modules.json` names a Pooling module).
//!
//! The ONNX file is `--onnx-file` when given, else `onnx/model.onnx`, else `model.onnx`.
//! Nothing here touches ONNX Runtime.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Which end of a sequence padding (or truncation) happens at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// At the start (decoder models such as Qwen3-Embedding pad on the left).
    Left,
    /// At the end (the default).
    Right,
}

impl Side {
    /// `left` or `right`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// One pooling mode. Declaration order is the order sentence-transformers concatenates them in
/// when several are enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoolingMode {
    /// The first token's state.
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
    /// Mean over real tokens.
    Mean,
    /// Sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// Mean weighted by token position (1, 2, 3, ...).
    WeightedMean,
    /// The last real token's state.
    LastToken,
}

impl PoolingMode {
    /// Every mode, in concatenation order.
    pub const ALL: [PoolingMode; 6] = [
        PoolingMode::Cls,
        PoolingMode::Max,
        PoolingMode::Mean,
        PoolingMode::MeanSqrtLen,
        PoolingMode::WeightedMean,
        PoolingMode::LastToken,
    ];

    /// The mode named as in `1_Pooling/config.json`'s `pooling_mode` (`mean_sqrt_len_tokens`...).
    pub fn from_name(name: &str) -> Option<PoolingMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The name used in [`chatspace_proto::ModelInfo::pooling`].
    pub fn as_str(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
        }
    }
}

/// What the user chose about the model on the command line.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// The sentence-transformers folder.
    pub model: PathBuf,
    /// ONNX file relative to the folder; `None` for `onnx/model.onnx`, then `model.onnx`.
    pub onnx_file: Option<PathBuf>,
    /// Overrides the folder's `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// Overrides the folder's pooling modes (`--pooling`).
    pub pooling: Option<Vec<PoolingMode>>,
    /// Overrides whether `modules.json` normalises (`--normalize` / `--no-normalize`).
    pub normalize: Option<bool>,
    /// `--prompt` or `--prompt-name` (else the folder's `default_prompt_name`).
    pub prompt: PromptChoice,
    /// Keep only the first this many dimensions of each vector (before normalising).
    pub truncate_dim: Option<usize>,
}

impl ModelOptions {
    /// The folder as it is: no overrides.
    pub fn for_folder(model: PathBuf) -> Self {
        ModelOptions {
            model,
            onnx_file: None,
            max_seq_length: None,
            pooling: None,
            normalize: None,
            prompt: PromptChoice::Default,
            truncate_dim: None,
        }
    }
}

/// Which prompt the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PromptChoice {
    /// None: the folder's `default_prompt_name`, if it has one.
    #[default]
    Default,
    /// `--prompt-name NAME`: a key of `prompts` in `config_sentence_transformers.json`.
    Name(String),
    /// `--prompt TEXT`.
    Text(String),
}

/// Everything the encoder needs to know about a model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The model folder.
    pub dir: PathBuf,
    /// The ONNX file to load.
    pub onnx_path: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer_path: PathBuf,
    /// Token limit per text, special tokens included.
    pub max_seq_length: usize,
    /// Where batches are padded.
    pub padding_side: Side,
    /// Which end of a too-long text is cut.
    pub truncation_side: Side,
    /// The pad token's text, when `tokenizer_config.json` names it.
    pub pad_token: Option<String>,
    /// Lowercase texts before tokenizing (`do_lower_case` in `sentence_bert_config.json`).
    pub do_lower_case: bool,
    /// Pooling modes in concatenation order; empty when `modules.json` has no Pooling module.
    pub pooling: Vec<PoolingMode>,
    /// L2-normalise the pooled vector.
    pub normalize: bool,
    /// Pool over the prompt's tokens too (`include_prompt` in the Pooling config).
    pub include_prompt: bool,
    /// The prompt prepended to every text, and its name when it came from the folder; `None`
    /// without a prompt (an empty prompt counts as none, as in sentence-transformers).
    pub prompt: Option<crate::prompt::Prompt>,
    /// Keep only the first this many dimensions (`--truncate-dim`).
    pub truncate_dim: Option<usize>,
}

/// Used when neither the folder nor the model says how long a text may be.
const FALLBACK_MAX_SEQ_LENGTH: usize = 512;

impl ModelConfig {
    /// Reads the folder named in `opts`. Every error names the file at fault.
    pub fn load(opts: &ModelOptions) -> Result<Self> {
        let dir = opts.model.clone();
        if !dir.is_dir() {
            return Err(Error::ModelDirMissing(dir));
        }
        let onnx_path = find_onnx(&dir, opts.onnx_file.as_deref())?;

        let modules = read_json(&dir.join("modules.json"))?;
        let modules = match &modules {
            Some(v) => parse_modules(v).map_err(|reason| Error::BadConfig {
                path: dir.join("modules.json"),
                reason,
            })?,
            None => Modules::default_for_plain_model(),
        };
        let tdir = dir.join(&modules.transformer_path);
        let tokenizer_path = tdir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(Error::ModelFileMissing {
                dir: dir.clone(),
                file: rel(&dir, &tokenizer_path),
            });
        }

        let (pooling, include_prompt) = match &modules.pooling_path {
            None => (modules.default_pooling.clone(), true),
            Some(p) => {
                let path = dir.join(p).join("config.json");
                let Some(v) = read_json(&path)? else {
                    return Err(Error::ModelFileMissing {
                        dir: dir.clone(),
                        file: rel(&dir, &path),
                    });
                };
                let include = v
                    .get("include_prompt")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let modes =
                    parse_pooling(&v).map_err(|reason| Error::BadConfig { path, reason })?;
                (modes, include)
            }
        };
        let pooling = opts.pooling.clone().unwrap_or(pooling);
        let prompt = crate::prompt::resolve(&dir, &opts.prompt)?;
        if opts.truncate_dim == Some(0) {
            return Err(Error::BadOption("--truncate-dim must be at least 1".into()));
        }

        let st_path = tdir.join("sentence_bert_config.json");
        let st = object(read_json(&st_path)?, &st_path)?;
        let tc_path = tdir.join("tokenizer_config.json");
        let tc = object(read_json(&tc_path)?, &tc_path)?;

        let bad = |path: &Path, reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let padding_side = side(&tc, "padding_side").map_err(|r| bad(&tc_path, r))?;
        let truncation_side = side(&tc, "truncation_side").map_err(|r| bad(&tc_path, r))?;
        let pad_token = match tc.get("pad_token") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(String::from),
            _ => None,
        };
        let do_lower_case = st
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let max_seq_length = match opts.max_seq_length {
            Some(n) => n,
            None => match st.get("max_seq_length").and_then(Value::as_u64) {
                Some(n) => n as usize,
                None => {
                    let hf_path = tdir.join("config.json");
                    let hf = object(read_json(&hf_path)?, &hf_path)?;
                    fallback_max_seq_length(&tc, &hf)
                }
            },
        };
        if max_seq_length < 2 {
            return Err(bad(
                &st_path,
                format!("max_seq_length {max_seq_length} is too small"),
            ));
        }

        Ok(ModelConfig {
            dir,
            onnx_path,
            tokenizer_path,
            max_seq_length,
            padding_side,
            truncation_side,
            pad_token,
            do_lower_case,
            pooling,
            normalize: opts.normalize.unwrap_or(modules.normalize),
            include_prompt,
            prompt,
            truncate_dim: opts.truncate_dim,
        })
    }
}

/// `path` relative to `dir`, for messages.
fn rel(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

fn find_onnx(dir: &Path, chosen: Option<&Path>) -> Result<PathBuf> {
    let (candidates, shown): (Vec<PathBuf>, String) = match chosen {
        Some(rel) => (vec![dir.join(rel)], rel.display().to_string()),
        None => (
            vec![dir.join("onnx/model.onnx"), dir.join("model.onnx")],
            "onnx/model.onnx (nor model.onnx)".into(),
        ),
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::ModelFileMissing {
            dir: dir.to_path_buf(),
            file: shown,
        })
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadConfig {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::ParseConfig {
            path: path.to_path_buf(),
            source,
        })
}

/// The object in an optional JSON file (empty when the file is absent).
fn object(v: Option<Value>, path: &Path) -> Result<Map<String, Value>> {
    match v {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(Error::BadConfig {
            path: path.to_path_buf(),
            reason: "expected a JSON object".into(),
        }),
    }
}

fn side(cfg: &Map<String, Value>, key: &str) -> Result<Side, String> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(Side::Right),
        Some(Value::String(s)) if s == "right" => Ok(Side::Right),
        Some(Value::String(s)) if s == "left" => Ok(Side::Left),
        Some(other) => Err(format!("{key} must be \"left\" or \"right\", not {other}")),
    }
}

/// What sentence-transformers does without `max_seq_length`: the smaller of the tokenizer's
/// `model_max_length` and the model's `max_position_embeddings` (ignoring the "unlimited"
/// placeholders tokenizers use), else [`FALLBACK_MAX_SEQ_LENGTH`].
fn fallback_max_seq_length(tc: &Map<String, Value>, hf: &Map<String, Value>) -> usize {
    let tok = tc
        .get("model_max_length")
        .and_then(Value::as_f64)
        .filter(|n| *n >= 1.0 && *n < 1e7);
    let pos = hf
        .get("max_position_embeddings")
        .and_then(Value::as_f64)
        .filter(|n| *n >= 1.0);
    match (tok, pos) {
        (Some(a), Some(b)) => a.min(b) as usize,
        (Some(a), None) | (None, Some(a)) => a as usize,
        (None, None) => FALLBACK_MAX_SEQ_LENGTH,
    }
}

/// The parts of `modules.json` the encoder acts on.
#[derive(Debug, Clone, PartialEq)]
struct Modules {
    transformer_path: String,
    pooling_path: Option<String>,
    default_pooling: Vec<PoolingMode>,
    normalize: bool,
}

impl Modules {
    fn default_for_plain_model() -> Self {
        Modules {
            transformer_path: String::new(),
            pooling_path: None,
            default_pooling: vec![PoolingMode::Mean],
            normalize: false,
        }
    }
}

fn parse_modules(v: &Value) -> Result<Modules, String> {
    let list = v.as_array().ok_or("expected a JSON list of modules")?;
    let mut out = Modules {
        transformer_path: String::new(),
        pooling_path: None,
        default_pooling: Vec::new(),
        normalize: false,
    };
    for m in list {
        let ty = m
            .get("type")
            .and_then(Value::as_str)
            .ok_or("a module has no \"type\"")?;
        let path = m.get("path").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        match short {
            "Transformer" => out.transformer_path = path.to_string(),
            "Pooling" => out.pooling_path = Some(path.to_string()),
            "Normalize" => out.normalize = true,
            _ => return Err(format!("module type {ty} is not supported")),
        }
    }
    Ok(out)
}

fn parse_pooling(v: &Value) -> Result<Vec<PoolingMode>, String> {
    let cfg = v.as_object().ok_or("expected a JSON object")?;
    if let Some(mode) = cfg.get("pooling_mode").and_then(Value::as_str) {
        let m = match mode {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            "mean" => PoolingMode::Mean,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            "weightedmean" => PoolingMode::WeightedMean,
            "lasttoken" => PoolingMode::LastToken,
            other => return Err(format!("pooling_mode {other:?} is not supported")),
        };
        return Ok(vec![m]);
    }
    let keys = [
        ("pooling_mode_cls_token", PoolingMode::Cls),
        ("pooling_mode_max_tokens", PoolingMode::Max),
        ("pooling_mode_mean_tokens", PoolingMode::Mean),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            PoolingMode::MeanSqrtLen,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            PoolingMode::WeightedMean,
        ),
        ("pooling_mode_lasttoken", PoolingMode::LastToken),
    ];
    let modes: Vec<_> = keys
        .iter()
        .filter(|(k, _)| cfg.get(*k).and_then(Value::as_bool).unwrap_or(false))
        .map(|&(_, m)| m)
        .collect();
    if modes.is_empty() {
        return Err("no pooling mode is enabled".into());
    }
    Ok(modes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn several_pooling_flags_come_in_sentence_transformers_order() {
        let v = json!({
            "pooling_mode_lasttoken": true,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_cls_token": true,
            "pooling_mode_max_tokens": false,
        });
        assert_eq!(
            parse_pooling(&v).unwrap(),
            [PoolingMode::Cls, PoolingMode::Mean, PoolingMode::LastToken]
        );
    }

    #[test]
    fn pooling_mode_string_form() {
        let v = json!({"pooling_mode": "lasttoken", "pooling_mode_mean_tokens": true});
        assert_eq!(parse_pooling(&v).unwrap(), [PoolingMode::LastToken]);
        assert!(parse_pooling(&json!({"pooling_mode": "median"})).is_err());
        assert!(parse_pooling(&json!({"pooling_mode_mean_tokens": false})).is_err());
    }

    #[test]
    fn modules_find_pooling_and_normalize_and_refuse_dense() {
        let v = json!([
            {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]);
        let m = parse_modules(&v).unwrap();
        assert_eq!(m.pooling_path.as_deref(), Some("1_Pooling"));
        assert!(m.normalize);
        let dense = json!([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]);
        assert!(parse_modules(&dense).unwrap_err().contains("Dense"));
    }

    #[test]
    fn max_seq_length_fallback_follows_sentence_transformers() {
        let tc = json!({"model_max_length": 512})
            .as_object()
            .unwrap()
            .clone();
        let hf = json!({"max_position_embeddings": 8192})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(fallback_max_seq_length(&tc, &hf), 512);
        let unlimited = json!({"model_max_length": 1e30})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(fallback_max_seq_length(&unlimited, &hf), 8192);
        assert_eq!(fallback_max_seq_length(&unlimited, &Map::new()), 512);
    }

    #[test]
    fn padding_side_defaults_to_right() {
        let left = json!({"padding_side": "left"}).as_object().unwrap().clone();
        assert_eq!(side(&left, "padding_side"), Ok(Side::Left));
        assert_eq!(side(&Map::new(), "padding_side"), Ok(Side::Right));
        let odd = json!({"padding_side": 3}).as_object().unwrap().clone();
        assert!(side(&odd, "padding_side").is_err());
    }

    #[test]
    fn reads_the_shared_minilm_folder() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2");
        if !dir.is_dir() {
            eprintln!("skipped: {} is absent", dir.display());
            return;
        }
        let cfg = ModelConfig::load(&ModelOptions::for_folder(dir.clone())).unwrap();
        assert_eq!(cfg.max_seq_length, 256);
        assert_eq!(cfg.pooling, [PoolingMode::Mean]);
        assert!(cfg.normalize);
        assert_eq!(cfg.padding_side, Side::Right);
        assert_eq!(cfg.onnx_path, dir.join("onnx/model.onnx"));
        assert_eq!(cfg.pad_token.as_deref(), Some("[PAD]"));
        assert!(cfg.include_prompt);
        assert_eq!(cfg.prompt, None);
    }

    #[test]
    fn pooling_names_round_trip() {
        for m in PoolingMode::ALL {
            assert_eq!(PoolingMode::from_name(m.as_str()), Some(m));
        }
        assert_eq!(PoolingMode::from_name("median"), None);
    }
}
