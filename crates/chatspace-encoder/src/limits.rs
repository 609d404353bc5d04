//! How large an inference batch may be: rows (`--batch-size`), padded tokens
//! (`--tokens-per-batch`) and, on GPUs, rows × seq², so that a batch of long texts is cut
//! smaller instead of running out of GPU memory.
//!
//! The token budget bounds activations (rows × seq × width), but unfused attention also holds
//! its scores, rows × heads × seq² of the model's float type, twice over (scores and softmax):
//! one 16k-token row of a 16-head model is 17 GB in fp32. [`score_cap`] gives a batch's most
//! rows × seq² from the model's heads (`num_attention_heads` in `config.json`), its float type,
//! and the GPU memory this encoder may use (the GPU's, divided among the encoders sharing it;
//! [`SCORE_SHARE`] of that for attention scores).
//!
//! [`gpu_mem_limit`] is ONNX Runtime's CUDA arena limit for one of several encoders sharing a
//! GPU: an equal share of [`USABLE`] of its memory (the rest is for CUDA contexts, cuBLAS and
//! cuDNN workspaces, which live outside the arena).

use std::path::Path;

/// The share of the GPU memory an encoder may use that attention scores may take.
pub const SCORE_SHARE: f64 = 0.25;

/// Live copies of the score tensor during attention (scores, softmax output).
const SCORE_COPIES: u64 = 2;

/// The share of a GPU's memory given to the arenas of the encoders sharing it.
pub const USABLE: f64 = 0.85;

/// Heads assumed when `config.json` does not say (as many as large Qwen3 models have).
pub const DEFAULT_HEADS: u64 = 32;

/// GPU memory assumed when CUDA did not report it.
pub const DEFAULT_GPU_BYTES: u64 = 16 << 30;

/// Every limit on one inference batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most rows.
    pub rows: usize,
    /// Most padded tokens, rows × longest row.
    pub tokens: Option<usize>,
    /// Most rows × longest row² (GPUs only).
    pub scores: Option<u64>,
}

/// `num_attention_heads` from the model folder's `config.json`, if it says.
pub fn attention_heads(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("num_attention_heads")?.as_u64().filter(|&h| h > 0)
}

/// The most rows × seq² one batch may hold, for a model of `heads` heads whose scores take
/// `score_bytes` bytes each, on `gpu_bytes` of GPU memory for this encoder.
pub fn score_cap(heads: u64, score_bytes: u64, gpu_bytes: u64) -> u64 {
    let budget = (gpu_bytes as f64 * SCORE_SHARE) as u64;
    let per = heads
        .max(1)
        .saturating_mul(score_bytes.max(1))
        .saturating_mul(SCORE_COPIES);
    (budget / per).max(1)
}

/// The arena limit for each of `sharing` encoders on a GPU of `total` bytes; `None` for one
/// encoder alone (ONNX Runtime's own default: no limit).
pub fn gpu_mem_limit(total: u64, sharing: u32) -> Option<usize> {
    (sharing > 1).then(|| (total as f64 * USABLE / f64::from(sharing)) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_come_from_config_json() {
        let minilm =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2");
        assert_eq!(attention_heads(&minilm), Some(12));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(attention_heads(dir.path()), None);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"num_attention_heads": 16}"#,
        )
        .unwrap();
        assert_eq!(attention_heads(dir.path()), Some(16));
        std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": 16}"#).unwrap();
        assert_eq!(attention_heads(dir.path()), None);
    }

    #[test]
    fn the_score_cap_follows_heads_type_and_memory() {
        // 80 GB, one encoder, 16 heads in fp32: 20 GB for scores, 128 bytes per row × seq².
        let cap = score_cap(16, 4, 80_000_000_000);
        assert_eq!(cap, 156_250_000);
        // One 16k-token row is over it (it still runs alone); 8k tokens fit twice.
        assert!(16_384u64 * 16_384 > cap);
        assert_eq!(cap / (8_192 * 8_192), 2);
        // fp16 scores take half: twice the rows; twice the encoders on the GPU: half.
        assert_eq!(score_cap(16, 2, 80_000_000_000), 2 * cap);
        assert_eq!(score_cap(16, 4, 40_000_000_000), cap / 2);
        assert_eq!(score_cap(u64::MAX, 4, 1), 1);
    }

    #[test]
    fn the_arena_is_limited_only_when_encoders_share_a_gpu() {
        assert_eq!(gpu_mem_limit(80_000_000_000, 1), None);
        assert_eq!(gpu_mem_limit(80_000_000_000, 4), Some(17_000_000_000));
    }
}
