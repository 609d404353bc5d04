//! Command-line flags (what the user typed, checked without I/O) and their resolution into a
//! [`RunPlan`] (which touches the file system: finds files, checks the model, creates folders).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::devices::DeviceSpec;

/// Turn chat datasets into sentence embeddings: Parquet shards plus a manifest.
#[derive(Debug, Parser)]
#[command(name = "chatspace", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only add noise"
)]
pub enum Command {
    /// Embed a dataset with a sentence-transformers model (ONNX) into Parquet shards.
    EmbedHf(EmbedArgs),
    /// Check that every task of a split run (--num-shards) completed and covered each input row
    /// once, and write the combined manifest.
    Merge(crate::merge::MergeArgs),
}

/// Which part of a row becomes the text to embed (see the README's "Extraction modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtractMode {
    /// The text field as it is (a string column).
    None,
    /// The first assistant turn (role `assistant`, `model` or `gpt`) with text, stripped.
    FirstAssistant,
    /// The last assistant turn with text, stripped.
    LastAssistant,
    /// The first user turn (role `user` or `human`) with text, stripped.
    FirstUser,
    /// The last user turn with text, stripped.
    LastUser,
    /// Every turn with text, as `role: content` lines.
    Transcript,
    /// One output row per turn with text, with `turn_index` and `role` columns.
    PerTurn,
    /// One output row per assistant turn with text, with `turn_index` and `role` columns.
    PerAssistantTurn,
}

impl ExtractMode {
    /// The mode as typed on the command line (`first-assistant`).
    pub fn name(self) -> &'static str {
        match self {
            ExtractMode::None => "none",
            ExtractMode::FirstAssistant => "first-assistant",
            ExtractMode::LastAssistant => "last-assistant",
            ExtractMode::FirstUser => "first-user",
            ExtractMode::LastUser => "last-user",
            ExtractMode::Transcript => "transcript",
            ExtractMode::PerTurn => "per-turn",
            ExtractMode::PerAssistantTurn => "per-assistant-turn",
        }
    }

    /// Whether the mode reads a conversation column (every mode but `none`).
    pub fn is_conversation(self) -> bool {
        self != ExtractMode::None
    }

    /// Whether the mode gives one output row per turn (with `turn_index` and `role` columns).
    pub fn is_per_turn(self) -> bool {
        matches!(self, ExtractMode::PerTurn | ExtractMode::PerAssistantTurn)
    }
}

/// What `--extract transcript` does with system turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemPrompt {
    /// System turns are lines of the transcript like any other turn.
    #[default]
    Keep,
    /// System turns are left out of the transcript.
    Drop,
}

/// A sentence-transformers pooling mode, as `1_Pooling/config.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
pub enum PoolingArg {
    /// The first token's state (`[CLS]`).
    #[value(name = "cls")]
    #[serde(rename = "cls")]
    Cls,
    /// Element-wise maximum over the tokens.
    #[value(name = "max")]
    #[serde(rename = "max")]
    Max,
    /// Mean over the tokens.
    #[value(name = "mean")]
    #[serde(rename = "mean")]
    Mean,
    /// Sum over the tokens divided by the square root of their count.
    #[value(name = "mean_sqrt_len_tokens")]
    #[serde(rename = "mean_sqrt_len_tokens")]
    MeanSqrtLen,
    /// Mean weighted by token position.
    #[value(name = "weightedmean")]
    #[serde(rename = "weightedmean")]
    WeightedMean,
    /// The last token's state.
    #[value(name = "lasttoken")]
    #[serde(rename = "lasttoken")]
    LastToken,
}

impl PoolingArg {
    /// The name the encoder's `--pooling` takes.
    pub fn name(self) -> &'static str {
        match self {
            PoolingArg::Cls => "cls",
            PoolingArg::Max => "max",
            PoolingArg::Mean => "mean",
            PoolingArg::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingArg::WeightedMean => "weightedmean",
            PoolingArg::LastToken => "lasttoken",
        }
    }
}

/// How the shards store embedding values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    /// 32-bit floats, as the model computes them.
    #[default]
    Float32,
    /// IEEE half precision (Parquet FLOAT16): half the size, about 3 significant digits.
    Float16,
}

/// Flags of `chatspace embed-hf` (the original tool's, plus chatspace's own).
#[derive(Debug, Clone, Args, Serialize)]
pub struct EmbedArgs {
    /// Dataset: a Hugging Face Hub dataset id (org/name), or a local .parquet/.jsonl/.json
    /// file, a folder of them, or a glob.
    #[arg(long)]
    pub dataset: String,
    /// Dataset revision on the Hub: a branch, tag or commit (the manifest records the commit).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Dataset config/subset name (see the README for how files are picked).
    #[arg(long)]
    pub subset: Option<String>,
    /// Dataset split.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Column holding the text to embed [default: text]; with a conversation --extract mode, the
    /// conversation column [default: messages, else conversations]. A dotted path reaches into
    /// struct columns (`conversation.turns`).
    #[arg(long)]
    pub text_field: Option<String>,
    /// How to get text out of the text field: the string as it is, or turns of a conversation.
    #[arg(long, value_enum, default_value_t = ExtractMode::None)]
    pub extract: ExtractMode,
    /// Same as `--extract first-assistant` (the original tool's flag).
    #[arg(long, conflicts_with = "extract")]
    pub extract_first_assistant: bool,
    /// With --extract transcript or per-turn: only turns of these roles (comma-separated, or the
    /// flag repeated); `assistant` also matches `model` and `gpt`, `user` matches `human`, other
    /// names match the role as written (any case).
    #[arg(long, value_name = "ROLE[,ROLE]", value_delimiter = ',')]
    pub filter_role: Vec<String>,
    /// With --extract transcript: keep or drop system turns [default: keep].
    #[arg(long, value_enum)]
    pub system_prompt: Option<SystemPrompt>,
    /// Model: a Hub model id with an ONNX export, or a local folder in the sentence-transformers
    /// layout.
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: String,
    /// Model revision on the Hub: a branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub model_revision: String,
    /// ONNX file inside the model folder.
    #[arg(long, default_value = "onnx/model.onnx")]
    pub onnx_file: String,
    /// Pooling modes, overriding the model's 1_Pooling/config.json (comma-separated modes are
    /// concatenated in sentence-transformers' order: cls, max, mean, mean_sqrt_len_tokens,
    /// weightedmean, lasttoken).
    #[arg(long, value_enum, value_name = "MODE[,MODE]", value_delimiter = ',')]
    pub pooling: Vec<PoolingArg>,
    /// L2-normalise the vectors, whatever the model's modules.json says.
    #[arg(long, conflicts_with = "no_normalize")]
    pub normalize: bool,
    /// Do not normalise the vectors, whatever the model's modules.json says.
    #[arg(long)]
    pub no_normalize: bool,
    /// Prepend the model's prompt of this name (from config_sentence_transformers.json) to every
    /// text [default: the model's default_prompt_name, if any].
    #[arg(long, value_name = "NAME", conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
    /// Prepend this text to every text, as sentence-transformers' `prompt=` does.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Keep the first N dimensions of every vector (Matryoshka), then normalise if the model
    /// normalises; N must not exceed the model's dimension.
    #[arg(long, value_name = "N", value_parser = positive::<u32>)]
    pub truncate_dim: Option<u32>,
    /// How the shards store embedding values.
    #[arg(long, value_enum, default_value_t = EmbeddingDtype::Float32)]
    pub embedding_dtype: EmbeddingDtype,
    /// Token limit per text (special tokens included), overriding the model's max_seq_length.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub max_seq_length: Option<u32>,
    /// Rows per inference batch [default: 32 on CPU, 512 on GPUs].
    #[arg(long, value_parser = positive::<u32>)]
    pub batch_size: Option<u32>,
    /// Padded tokens (rows × longest row) per inference batch, with --batch-size as the row cap;
    /// 0 for no limit. Texts are sorted by length within each unit, so batches stay dense
    /// [default: 512 on CPU, 16384 on GPUs].
    #[arg(long)]
    pub tokens_per_batch: Option<u32>,
    /// Rows per unit of work sent to an encoder (the first is one batch, the last ones shrink so
    /// encoders finish together); encoders sort a unit by length before cutting batches, so larger
    /// units pad less and fill batches; at most 2,048 [default: 1024 on CPU, 2048 on GPUs].
    #[arg(long, value_parser = positive::<u32>)]
    pub unit_rows: Option<u32>,
    /// Rows per Parquet shard.
    #[arg(long, default_value_t = 8192, value_parser = positive::<u64>)]
    pub rows_per_shard: u64,
    /// Read at most this many input rows (rows skipped by extraction count too).
    #[arg(long, value_parser = positive::<u64>)]
    pub max_rows: Option<u64>,
    /// Base output folder.
    #[arg(long, default_value = "./chatspace-output")]
    pub output_root: PathBuf,
    /// Number of encoder processes [default: on CPU, one per available core divided by
    /// --threads; on GPUs, one per GPU].
    #[arg(long, value_parser = positive::<u32>)]
    pub encoders: Option<u32>,
    /// Where encoders run: cpu, cuda (one encoder per visible GPU, as CUDA_VISIBLE_DEVICES
    /// allows), or cuda:N[,N...] for those GPUs.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// ONNX Runtime intra-op threads per encoder.
    #[arg(long, default_value_t = 1, value_parser = positive::<u32>)]
    pub threads: u32,
    /// Seconds an encoder may spend on one unit of rows before it is killed and restarted.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = positive::<u64>)]
    pub unit_timeout: u64,
    /// Restarts in a row per encoder (without a unit answered in between) before the run fails.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_restarts: u32,
    /// Rows that may fail (crash or hang an encoder, or make it answer an error, even alone)
    /// and be skipped, recorded in the manifest, before the run fails.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_failed_rows: u64,
    /// Path to the ONNX Runtime shared library (else ORT_DYLIB_PATH, else scripts/setup.sh's copy).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Disable the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Replace the shards and manifest an earlier run left in the same output folder.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue the run recorded in the output folder's manifest: verify its shards, skip
    /// their rows, write the rest (the settings must be the same).
    #[arg(long)]
    pub resume: bool,
    /// Run identifier recorded in every row and the manifest (default: from the start time).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Split the input among this many tasks of an indexed job, each embedding a contiguous
    /// range of rows into its own folder (`chatspace merge` combines them) [default:
    /// SLURM_ARRAY_TASK_COUNT in a Slurm job array].
    #[arg(long, value_name = "N", value_parser = positive::<u32>)]
    pub num_shards: Option<u32>,
    /// This task's index, from 0, with --num-shards [default: SLURM_ARRAY_TASK_ID minus
    /// SLURM_ARRAY_TASK_MIN, else JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)].
    #[arg(long, value_name = "I")]
    pub shard_index: Option<u32>,
    /// Where the task index came from (`flags`, `slurm`, `kubernetes`), once resolved.
    #[arg(skip)]
    #[serde(skip)]
    pub task_engine: Option<&'static str>,
    /// The encoder executable (default: `chatspace-encoder` next to `chatspace`).
    #[arg(long, hide = true, env = "CHATSPACE_ENCODER")]
    #[serde(skip)]
    pub encoder_bin: Option<PathBuf>,
}

/// Parses a whole number of at least 1.
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!(
            "`{s}` is not allowed: must be a whole number of at least 1"
        )),
    }
}

impl EmbedArgs {
    /// `(rows, tokens)` per inference batch: the flags, else the defaults for `--device`.
    pub fn batch_limits(&self) -> (u32, u32) {
        let (rows, tokens) = self.device.kind().batch_defaults();
        (
            self.batch_size.unwrap_or(rows),
            self.tokens_per_batch.unwrap_or(tokens),
        )
    }

    /// The extraction mode, folding in the original tool's `--extract-first-assistant`.
    pub fn extract_mode(&self) -> ExtractMode {
        if self.extract_first_assistant {
            ExtractMode::FirstAssistant
        } else {
            self.extract
        }
    }

    /// What to do with system turns (`keep` unless `--system-prompt drop`).
    pub fn system_prompt(&self) -> SystemPrompt {
        self.system_prompt.unwrap_or_default()
    }

    /// Checks the flags that only make sense together (without I/O); the error is one line.
    pub fn check(&self) -> Result<(), String> {
        let mode = self.extract_mode();
        if !self.filter_role.is_empty()
            && !matches!(mode, ExtractMode::Transcript | ExtractMode::PerTurn)
        {
            return Err(format!(
                "--filter-role works with --extract transcript or per-turn, not --extract {}",
                mode.name()
            ));
        }
        if let Some(bad) = self.filter_role.iter().find(|r| r.trim().is_empty()) {
            return Err(format!("--filter-role has an empty role name ({bad:?})"));
        }
        if self.system_prompt.is_some() && mode != ExtractMode::Transcript {
            return Err(format!(
                "--system-prompt works with --extract transcript, not --extract {}",
                mode.name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatspace_proto::Device;

    fn parse(args: &[&str]) -> Result<EmbedArgs, clap::Error> {
        let mut full = vec!["chatspace", "embed-hf", "--dataset", "d.parquet"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|cli| match cli.command {
            Command::EmbedHf(a) => a,
            Command::Merge(_) => unreachable!("embed-hf parsed"),
        })
    }

    #[test]
    fn defaults_match_the_original_tool() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.split, "train");
        assert_eq!(a.text_field, None);
        assert_eq!(a.batch_size, None);
        assert_eq!(a.batch_limits(), (32, 512));
        assert_eq!(a.rows_per_shard, 8192);
        assert_eq!(a.extract_mode(), ExtractMode::None);
        assert_eq!(a.unit_timeout, 300);
        assert_eq!(a.max_restarts, 5);
        assert_eq!(a.max_failed_rows, 10);
    }

    #[test]
    fn batch_defaults_follow_the_device_and_flags_win() {
        assert_eq!(
            parse(&["--device", "cuda"]).unwrap().batch_limits(),
            Device::Cuda(0).batch_defaults()
        );
        assert_eq!(
            parse(&["--device", "cuda:1"]).unwrap().batch_limits(),
            (512, 16_384)
        );
        let a = parse(&["--device", "cuda", "--batch-size", "64"]).unwrap();
        assert_eq!(a.batch_limits(), (64, 16_384));
        let a = parse(&["--tokens-per-batch", "0"]).unwrap();
        assert_eq!(a.batch_limits(), (32, 0));
        let gpu = parse(&["--device", "cuda"]).unwrap();
        assert_eq!((a.unit_rows(), gpu.unit_rows()), (1024, 2048));
    }

    #[test]
    fn both_spellings_of_first_assistant() {
        let a = parse(&["--extract-first-assistant"]).unwrap();
        assert_eq!(a.extract_mode(), ExtractMode::FirstAssistant);
        let b = parse(&["--extract", "first-assistant"]).unwrap();
        assert_eq!(b.extract_mode(), ExtractMode::FirstAssistant);
    }

    #[test]
    fn every_mode_parses_by_its_name() {
        for mode in ExtractMode::value_variants() {
            let a = parse(&["--extract", mode.name()]).unwrap();
            assert_eq!(a.extract_mode(), *mode);
            let json = serde_json::to_value(mode).unwrap();
            assert_eq!(json, mode.name());
        }
    }

    #[test]
    fn filter_role_takes_a_list_and_needs_a_mode_that_uses_it() {
        let a = parse(&[
            "--extract",
            "transcript",
            "--filter-role",
            "user,assistant",
            "--filter-role",
            "tool",
        ])
        .unwrap();
        assert_eq!(a.filter_role, vec!["user", "assistant", "tool"]);
        a.check().unwrap();
        let b = parse(&["--extract", "first-user", "--filter-role", "user"]).unwrap();
        assert_eq!(
            b.check().unwrap_err(),
            "--filter-role works with --extract transcript or per-turn, not --extract first-user"
        );
        let c = parse(&["--extract", "per-turn", "--filter-role", "user,"]).unwrap();
        assert!(c.check().unwrap_err().contains("empty role name"));
    }

    #[test]
    fn system_prompt_is_for_transcripts_only() {
        let a = parse(&["--extract", "transcript", "--system-prompt", "drop"]).unwrap();
        a.check().unwrap();
        assert_eq!(a.system_prompt(), SystemPrompt::Drop);
        assert_eq!(parse(&[]).unwrap().system_prompt(), SystemPrompt::Keep);
        let b = parse(&["--extract", "per-turn", "--system-prompt", "keep"]).unwrap();
        assert!(
            b.check()
                .unwrap_err()
                .starts_with("--system-prompt works with")
        );
    }

    #[test]
    fn model_options_parse_and_conflict() {
        let a = parse(&[
            "--pooling",
            "mean_sqrt_len_tokens,cls",
            "--no-normalize",
            "--prompt-name",
            "query",
            "--truncate-dim",
            "64",
            "--embedding-dtype",
            "float16",
        ])
        .unwrap();
        assert_eq!(a.pooling, [PoolingArg::MeanSqrtLen, PoolingArg::Cls]);
        assert!(a.no_normalize && !a.normalize);
        assert_eq!(a.truncate_dim, Some(64));
        assert_eq!(a.embedding_dtype, EmbeddingDtype::Float16);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json["pooling"],
            serde_json::json!(["mean_sqrt_len_tokens", "cls"])
        );
        assert_eq!(json["embedding_dtype"], "float16");
        assert_eq!(parse(&[]).unwrap().embedding_dtype, EmbeddingDtype::Float32);
        for bad in [
            &["--prompt", "x", "--prompt-name", "q"][..],
            &["--normalize", "--no-normalize"],
            &["--pooling", "median"],
            &["--truncate-dim", "0"],
            &["--max-seq-length", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_rows_per_shard_is_refused() {
        let err = parse(&["--rows-per-shard", "0"]).unwrap_err();
        assert!(err.to_string().contains("--rows-per-shard"), "{err}");
    }
}
