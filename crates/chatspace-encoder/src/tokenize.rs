//! Tokenizing texts the way sentence-transformers does.
//!
//! A hub `tokenizer.json` carries its own padding and truncation (all-MiniLM-L6-v2's pads every
//! text to 128 tokens and cuts at 128); sentence-transformers overrides both, and so do we:
//! padding is switched off (batches are padded in [`crate::batching`] to their own longest row)
//! and truncation is set to `max_seq_length`, counted with the special tokens, cutting the longest
//! side first like Hugging Face's `truncation="longest_first"`.
//!
//! Tokenizers tokenize the whole text before truncating it, which for a 1 MB text costs about
//! 0.4 s and 200 MB of memory, growing with the text. So a long text is first cut to a window
//! of [`CHARS_PER_TOKEN`] characters per allowed token, at a whitespace boundary when there is
//! one near the end of the window (on the kept side: the end for right truncation, the start for
//! left), and only if the cut text still fills the token limit is it used; otherwise the window
//! grows eightfold and the text is tokenized again (whitespace-heavy texts), at most up to
//! [`CHARS_PER_TOKEN`] × 64 characters per token (1 Mi characters for 256 tokens), where the cut
//! text is kept whatever it gives. The tokens kept are the same as for the whole text (below that
//! bound), and the text counts as truncated either way.

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::config::{ModelConfig, Side};
use crate::error::{Error, Result};
use crate::wordpiece::FastWordPiece;

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

/// Characters of text allowed per token of `max_seq_length` before a text is cut ahead of
/// tokenizing (see the module docs).
pub const CHARS_PER_TOKEN: usize = 64;

/// How far the window may grow (two eightfold steps): past that the cut text is kept.
const MAX_GROWTH: usize = 64;

/// A `tokenizer.json` set up for a model folder.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    lower: bool,
    /// Characters tokenized at first for a long text.
    window: usize,
    /// Which end truncation keeps (and so which end a long text is cut from).
    side: Side,
    /// The fast path for BERT WordPiece on ASCII text, when it applies to this tokenizer.
    fast: Option<FastWordPiece>,
    /// Prepended to every text (see [`crate::prompt`]).
    prompt: Option<String>,
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
        let fast = FastWordPiece::new(
            &inner,
            cfg.max_seq_length,
            cfg.truncation_side,
            cfg.do_lower_case,
        );
        tracing::debug!(fast = fast.is_some(), "tokenizer loaded");
        Ok(TextTokenizer {
            inner,
            pad_id,
            lower: cfg.do_lower_case,
            window: cfg.max_seq_length.max(16).saturating_mul(CHARS_PER_TOKEN),
            side: cfg.truncation_side,
            fast,
            prompt: cfg.prompt.as_ref().map(|p| p.text.clone()),
        })
    }

    /// How many tokens pooling leaves out at the start of every row: the prompt's, when there is
    /// a prompt and the Pooling config says `include_prompt: false`, else 0. The prompt is
    /// tokenized alone as any text is; a trailing special token (`[SEP]`, EOS) does not count,
    /// as in sentence-transformers.
    pub fn prompt_skip(&self, cfg: &ModelConfig) -> Result<usize> {
        let Some(prompt) = cfg.prompt.as_ref().filter(|_| !cfg.include_prompt) else {
            return Ok(0);
        };
        let t = self.encode_plain(&prompt.text)?;
        let special = self.inner.get_added_tokens_decoder();
        let last_special = t
            .ids
            .last()
            .is_some_and(|id| special.get(id).is_some_and(|tok| tok.special));
        Ok(t.ids.len() - usize::from(last_special))
    }

    /// Turns the fast path off: every text goes through Hugging Face `tokenizers`.
    pub fn exact_only(mut self) -> Self {
        self.fast = None;
        self
    }

    /// The fast path, when this tokenizer has one.
    #[cfg(test)]
    pub fn fast(&self) -> Option<&FastWordPiece> {
        self.fast.as_ref()
    }

    /// The id padding positions get (they are masked out, so any valid id would do).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes one text: stripped of surrounding whitespace like sentence-transformers does,
    /// lowercased when the folder says so, with special tokens, cut to the limit. A long text is
    /// cut to a window first (see the module docs).
    pub fn encode(&self, text: &str) -> Result<Tokenized> {
        match &self.prompt {
            Some(prompt) => self.encode_plain(&format!("{prompt}{text}")),
            None => self.encode_plain(text),
        }
    }

    /// [`Self::encode`] without the prompt.
    fn encode_plain(&self, text: &str) -> Result<Tokenized> {
        let text = strip(text);
        if let Some(t) = self.fast.as_ref().and_then(|f| f.encode(text)) {
            return Ok(t);
        }
        let mut window = self.window;
        loop {
            let (part, whole) = cut(text, window, self.side);
            let mut t = self.encode_exact(part)?;
            if whole || t.truncated {
                return Ok(t);
            }
            if window >= self.window.saturating_mul(MAX_GROWTH) {
                // Still short of the limit after this many characters (a pathological text,
                // such as one enormous word): keep this, and count the text as cut.
                t.truncated = true;
                return Ok(t);
            }
            window = window.saturating_mul(8);
        }
    }

    /// Tokenizes `text` as it is (already stripped) with Hugging Face `tokenizers`.
    pub fn encode_exact(&self, text: &str) -> Result<Tokenized> {
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

/// The part of `text` within `window` characters of the end truncation keeps (the start for
/// [`Side::Right`]), ending (or starting) at whitespace when some lies in the window's outer
/// half; and whether that is the whole text.
fn cut(text: &str, window: usize, side: Side) -> (&str, bool) {
    // Fewer bytes than the window means fewer characters too.
    if text.len() <= window {
        return (text, true);
    }
    match side {
        Side::Right => {
            let Some((end, _)) = text.char_indices().nth(window) else {
                return (text, true);
            };
            let part = &text[..end];
            match part.rfind(char::is_whitespace) {
                Some(ws) if ws >= end / 2 => (&text[..ws], false),
                _ => (part, false),
            }
        }
        Side::Left => {
            let Some((start, _)) = text.char_indices().rev().nth(window - 1) else {
                return (text, true);
            };
            if start == 0 {
                return (text, true);
            }
            let part = &text[start..];
            match part.find(char::is_whitespace) {
                Some(ws) if ws <= part.len() / 2 => (&part[ws..], false),
                _ => (part, false),
            }
        }
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the four ASCII separators `\x1c`..`\x1f`,
/// which Python counts as whitespace and Rust does not.
pub fn strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ModelOptions;

    #[test]
    fn long_texts_are_cut_at_whitespace_on_the_kept_side() {
        assert_eq!(cut("short text", 100, Side::Right), ("short text", true));
        assert_eq!(cut("aaa bbb ccc ddd", 9, Side::Right), ("aaa bbb", false));
        assert_eq!(cut("aaa bbb ccc ddd", 9, Side::Left), (" ccc ddd", false));
        assert_eq!(cut("ééééé ééééééééé", 8, Side::Right), ("ééééé", false));
        // No whitespace in the outer half: a plain cut on a character boundary.
        assert_eq!(cut("abcdefghij", 4, Side::Right), ("abcd", false));
        assert_eq!(cut("abc défghij", 8, Side::Right), ("abc défg", false));
        assert_eq!(cut("abcdefghij", 4, Side::Left), ("ghij", false));
    }

    /// A prompt is text prepended: the fast path gives `tokenizers`' ids for it too, and the
    /// tokens pooling skips are the prompt's without its trailing `[SEP]`.
    #[test]
    fn prompts_are_prepended_and_their_tokens_counted() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2");
        if !dir.is_dir() {
            eprintln!("skipped: {} is absent", dir.display());
            return;
        }
        let opts = ModelOptions {
            prompt: crate::config::PromptChoice::Text("query: ".into()),
            ..ModelOptions::for_folder(dir.clone())
        };
        let mut cfg = ModelConfig::load(&opts).unwrap();
        let tok = TextTokenizer::load(&cfg).unwrap();
        assert!(tok.fast().is_some());
        let plain =
            TextTokenizer::load(&ModelConfig::load(&ModelOptions::for_folder(dir)).unwrap())
                .unwrap();
        for text in ["Hello there", "  spaced  ", ""] {
            let fast = tok.encode(text).unwrap();
            let exact = tok.encode_exact(strip(&format!("query: {text}"))).unwrap();
            assert_eq!(fast, exact, "{text:?}");
            // [CLS] query : ... [SEP]
            let without = plain.encode(text).unwrap();
            assert_eq!(fast.ids.len(), without.ids.len() + 2, "{text:?}");
            assert_eq!(fast.ids[3..], without.ids[1..], "{text:?}");
        }
        assert_eq!(tok.prompt_skip(&cfg).unwrap(), 0, "include_prompt is true");
        cfg.include_prompt = false;
        assert_eq!(tok.prompt_skip(&cfg).unwrap(), 3);
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(strip("  a b \t\n"), "a b");
        assert_eq!(strip("\x1fa\u{3000}"), "a");
        // Python keeps zero-width space and NUL.
        assert_eq!(strip("\u{200b}a\0"), "\u{200b}a\0");
        assert_eq!(strip(" \n "), "");
    }

    /// A xorshift generator from `seed`: each call gives a number below its argument.
    pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// Long texts of several kinds, from a fixed seed.
    fn long_texts() -> Vec<String> {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let words = [
            "the",
            "Debian",
            "package",
            "apt-get",
            "isn't",
            "1234567",
            "naïve",
            "über",
            "日本語",
            "😀",
            "--",
            "x86_64",
            "HTTP/1.1",
            "a.b.c",
            "\t",
            "\n",
        ];
        let mut prose = String::new();
        while prose.len() < 300_000 {
            prose.push_str(words[next(words.len() as u64) as usize]);
            prose.push(if next(7) == 0 { '\n' } else { ' ' });
        }
        let cjk: String = (0..60_000)
            .map(|_| char::from_u32(0x4e00 + next(0x5000) as u32).unwrap())
            .collect();
        let spaced = format!(
            "{}{}{}",
            "start here ".repeat(30),
            " ".repeat(200_000),
            prose
        );
        let long_word = format!("{} tail words at the end", "a".repeat(100_000));
        let long_words = "abcdefghij"
            .repeat(15)
            .repeat(2_000)
            .replace("jabc", "j abc");
        vec![prose, cjk, spaced, long_word, long_words]
    }

    #[test]
    fn cutting_a_long_text_first_keeps_the_same_tokens() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models");
        let mut checked = 0;
        for name in ["all-MiniLM-L6-v2", "tiny-qwen3-lasttoken"] {
            let dir = models.join(name);
            if !dir.is_dir() {
                eprintln!("skipped: {} is absent", dir.display());
                continue;
            }
            let opts = ModelOptions::for_folder(dir);
            for side in [Side::Right, Side::Left] {
                let mut cfg = ModelConfig::load(&opts).unwrap();
                cfg.truncation_side = side;
                let tok = TextTokenizer::load(&cfg).unwrap();
                for (i, text) in long_texts().iter().enumerate() {
                    let fast = tok.encode(text).unwrap();
                    let exact = tok.encode_exact(strip(text)).unwrap();
                    assert_eq!(fast, exact, "{name}, {side:?}, text {i}");
                    // Text 3 is one word past the limit plus four: few tokens, found by regrowing.
                    assert_eq!(fast.truncated, i != 3, "{name}, {side:?}, text {i}");
                    checked += 1;
                }
            }
        }
        eprintln!("{checked} texts checked");
    }
}
