//! Tokenizing texts the way sentence-transformers does.
//!
//! A hub `tokenizer.json` carries its own padding and truncation (all-MiniLM-L6-v2's pads every
//! text to 128 tokens and cuts at 128); sentence-transformers overrides both, and so do we:
//! padding is switched off (batches are padded in [`crate::batching`] to their own longest row)
//! and truncation is set to `max_seq_length`, counted with the special tokens, cutting the longest
//! side first like Hugging Face's `truncation="longest_first"`.

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::config::{ModelConfig, Side};
use crate::error::{Error, Result};

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokenized {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, as long as `ids`.
    pub type_ids: Vec<u32>,
    /// Whether the text was cut to the token limit.
    pub truncated: bool,
}

/// A `tokenizer.json` set up for a model folder.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    lower: bool,
}

impl TextTokenizer {
    /// Loads `cfg.tokenizer_path` and applies the folder's padding, truncation and case rules.
    pub fn load(cfg: &ModelConfig) -> Result<Self> {
        let err = |source| Error::Tokenizer {
            path: cfg.tokenizer_path.clone(),
            source,
        };
        let mut inner = Tokenizer::from_file(&cfg.tokenizer_path).map_err(err)?;
        // The file's own padding config names the pad token too: read it before dropping it.
        let file_pad_id = inner.get_padding().map(|p| p.pad_id);
        let pad_id = cfg
            .pad_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .or(file_pad_id)
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: cfg.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: match cfg.truncation_side {
                    Side::Left => TruncationDirection::Left,
                    Side::Right => TruncationDirection::Right,
                },
            }))
            .map_err(err)?;
        Ok(TextTokenizer {
            inner,
            pad_id,
            lower: cfg.do_lower_case,
        })
    }

    /// The id padding positions get (they are masked out, so any valid id would do).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes one text: stripped of surrounding whitespace like sentence-transformers does,
    /// lowercased when the folder says so, with special tokens, cut to the limit.
    pub fn encode(&self, text: &str) -> Result<Tokenized> {
        let text = strip(text);
        let lowered;
        let text = if self.lower {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self
            .inner
            .encode_fast(text, true)
            .map_err(Error::Tokenize)?;
        Ok(Tokenized {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Tokenizes every text, in order.
    pub fn encode_all(&self, texts: &[String]) -> Result<Vec<Tokenized>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the four ASCII separators `\x1c`..`\x1f`,
/// which Python counts as whitespace and Rust does not.
pub fn strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_matches_python() {
        assert_eq!(strip("  a b \t\n"), "a b");
        assert_eq!(strip("\x1fa\u{3000}"), "a");
        // Python keeps zero-width space and NUL.
        assert_eq!(strip("\u{200b}a\0"), "\u{200b}a\0");
        assert_eq!(strip(" \n "), "");
    }
}
