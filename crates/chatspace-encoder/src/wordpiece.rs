//! A fast path for BERT-style WordPiece tokenizers on ASCII text.
//!
//! Hugging Face `tokenizers` is general: it keeps every character's offsets through the
//! normalizer, splits through a string-of-strings structure, and allocates per word. For the
//! commonest embedding tokenizer, BERT's uncased WordPiece (all-MiniLM, BGE, E5, GTE...), and
//! the commonest text, ASCII, the same result comes from one pass over the bytes: drop control
//! characters, split at whitespace and ASCII punctuation, lowercase, and look each word's
//! pieces up, greedy longest first. That is several times faster, and tokenization is what
//! bounds an encoder on a small model (see `scripts/bench.sh`).
//!
//! The fast path is taken only where it gives exactly the ids Hugging Face would:
//! - the tokenizer is `BertNormalizer` (with `clean_text`) + `BertPreTokenizer` + `WordPiece`,
//!   and a post-processor that puts fixed special tokens around the sequence, which
//!   [`FastWordPiece::new`] reads off Hugging Face's own output for a probe word;
//! - the text is ASCII and holds no added token's content (such as `[SEP]`) in any case;
//! - a built-in sample tokenizes identically both ways when the tokenizer is loaded.
//!
//! Otherwise [`FastWordPiece::encode`] returns `None` and the caller uses Hugging Face.
//! `chatspace-encoder tokenize --exact` runs Hugging Face alone, for comparing the two.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::config::Side;
use crate::tokenize::Tokenized;

/// Texts both paths must agree on before the fast one is used: punctuation, control
/// characters, digits, case, unknown and over-long words, subword splits.
const PROBES: &[&str] = &[
    "Hello, World! Isn't it great?",
    "apt-get install x86_64-linux-gnu HTTP/1.1 a.b.c 1234567 3.14159",
    "tab\there\nnew line\r\n  spaces\x0bvt\x0cff\x1fus\x7fdel\x01ctl",
    "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious",
    "#hash ##double $dollar %pct ^caret `tick` ~tilde |pipe| <a> {b} (c) [d] \\e/ _f_ +g= @h",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
    "MiXeD CaSe WORDS and lower ones",
    "",
];

/// FxHash (rustc's hasher): fast on the short keys of a vocabulary.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fast = BuildHasherDefault<Fx>;

/// Word pieces and their ids: pieces of up to 15 bytes packed with their length into one
/// integer (one multiply-rotate per half to hash, one comparison to match), longer ones by
/// their bytes.
#[derive(Default)]
struct Vocab {
    short: HashMap<u128, u32, Fast>,
    long: HashMap<Box<[u8]>, u32, Fast>,
    /// The longest piece, in bytes.
    longest: usize,
}

impl Vocab {
    fn insert(&mut self, piece: &[u8], id: u32) {
        if piece.len() < 16 {
            self.short.insert(pack(piece), id);
        } else {
            self.long.insert(piece.into(), id);
        }
        self.longest = self.longest.max(piece.len());
    }

    #[inline]
    fn get(&self, piece: &[u8]) -> Option<u32> {
        if piece.len() < 16 {
            self.short.get(&pack(piece)).copied()
        } else {
            self.long.get(piece).copied()
        }
    }
}

/// Up to 15 bytes and their count in one integer.
#[inline]
fn pack(piece: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..piece.len()].copy_from_slice(piece);
    b[15] = piece.len() as u8;
    u128::from_le_bytes(b)
}

/// An ASCII-only re-implementation of one BERT WordPiece tokenizer (see the module docs).
pub struct FastWordPiece {
    /// Pieces that may start a word.
    starts: Vocab,
    /// Pieces that may continue a word, without the continuation prefix (`##`).
    conts: Vocab,
    unk: u32,
    /// Longer words become one unknown token.
    max_word: usize,
    lowercase: bool,
    /// Special tokens around the sequence, and the type ids of everything.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    prefix_types: Vec<u32>,
    suffix_types: Vec<u32>,
    seq_type: u32,
    /// Pieces kept of the text: `max_seq_length` less the special tokens.
    limit: usize,
    side: Side,
    /// Added tokens' contents, lowercase, and which bytes (either case) start one.
    added: Vec<Vec<u8>>,
    added_first: [bool; 256],
}

impl FastWordPiece {
    /// The fast path for `hf` (padding off, truncation at `max_len` tokens from `side`, as
    /// [`crate::tokenize::TextTokenizer`] sets it up), or `None` when it is not a BERT
    /// WordPiece tokenizer this path reproduces exactly. `lower` is sentence-transformers'
    /// `do_lower_case`, applied before the tokenizer.
    pub fn new(hf: &Tokenizer, max_len: usize, side: Side, lower: bool) -> Option<Self> {
        let json: Value = serde_json::from_str(&hf.to_string(false).ok()?).ok()?;
        let norm = &json["normalizer"];
        if norm["type"] != "BertNormalizer" || norm["clean_text"] != true {
            return None;
        }
        if json["pre_tokenizer"]["type"] != "BertPreTokenizer" {
            return None;
        }
        let model = &json["model"];
        if model["type"] != "WordPiece" {
            return None;
        }
        let prefix = model["continuing_subword_prefix"].as_str()?.as_bytes();
        let vocab = model["vocab"].as_object()?;
        let unk = vocab.get(model["unk_token"].as_str()?)?.as_u64()? as u32;
        let max_word = model["max_input_chars_per_word"].as_u64()? as usize;

        let (mut starts, mut conts) = (Vocab::default(), Vocab::default());
        for (piece, id) in vocab {
            let (bytes, id) = (piece.as_bytes(), id.as_u64()? as u32);
            if !piece.is_ascii() {
                continue; // never matches ASCII text
            }
            starts.insert(bytes, id);
            if let Some(rest) = bytes.strip_prefix(prefix).filter(|r| !r.is_empty()) {
                conts.insert(rest, id);
            }
        }

        let mut added: Vec<Vec<u8>> = hf
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.to_ascii_lowercase().into_bytes())
            .filter(|c| !c.is_empty())
            .collect();
        added.sort();
        let mut added_first = [false; 256];
        for c in &added {
            added_first[c[0].to_ascii_lowercase() as usize] = true;
            added_first[c[0].to_ascii_uppercase() as usize] = true;
        }

        let mut fast = FastWordPiece {
            starts,
            conts,
            unk,
            max_word,
            lowercase: lower || norm["lowercase"] == true,
            prefix: Vec::new(),
            suffix: Vec::new(),
            prefix_types: Vec::new(),
            suffix_types: Vec::new(),
            seq_type: 0,
            limit: usize::MAX,
            side,
            added,
            added_first,
        };
        // The special tokens around a sequence, from Hugging Face's own output for one word.
        let probe = "hello";
        let mut pieces = Vec::new();
        fast.push_word(probe.as_bytes(), &mut pieces);
        let enc = hf.encode_fast(probe, true).ok()?;
        let (ids, types) = (enc.get_ids(), enc.get_type_ids());
        let at = ids.windows(pieces.len()).position(|w| w == pieces)?;
        let end = at + pieces.len();
        fast.prefix = ids[..at].to_vec();
        fast.suffix = ids[end..].to_vec();
        fast.prefix_types = types[..at].to_vec();
        fast.suffix_types = types[end..].to_vec();
        fast.seq_type = types[at];
        if types[at..end].iter().any(|&t| t != fast.seq_type) {
            return None;
        }
        fast.limit = max_len
            .checked_sub(at + fast.suffix.len())
            .filter(|&n| n > 0)?;

        let agrees = PROBES.iter().all(|&text| {
            let lowered = if lower {
                text.to_lowercase()
            } else {
                text.to_string()
            };
            let exact = hf.encode_fast(lowered.as_str(), true).ok();
            match (fast.encode(text), exact) {
                (Some(f), Some(e)) => {
                    f.ids == e.get_ids()
                        && f.type_ids == e.get_type_ids()
                        && f.truncated != e.get_overflowing().is_empty()
                }
                _ => false,
            }
        });
        if !agrees {
            tracing::warn!("the fast WordPiece path disagrees with tokenizers; not using it");
            return None;
        }
        Some(fast)
    }

    /// Tokenizes `text` (already stripped) exactly as Hugging Face would, or `None` when the
    /// text is not plain ASCII or holds an added token: then Hugging Face must do it.
    pub fn encode(&self, text: &str) -> Option<Tokenized> {
        let bytes = text.as_bytes();
        if !text.is_ascii() || self.has_added_token(bytes) {
            return None;
        }
        // Right truncation stops one piece past the limit: enough to know the text was cut.
        let stop = match self.side {
            Side::Right => self.limit + 1,
            Side::Left => usize::MAX,
        };
        let mut pieces = Vec::with_capacity((bytes.len() / 4).min(stop) + 2);
        let mut word = Vec::with_capacity(32);
        for &b in bytes {
            if pieces.len() >= stop {
                break;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.end_word(&mut word, &mut pieces),
                0..=0x1f | 0x7f => {} // control characters are removed, joining what is around
                _ if b.is_ascii_punctuation() => {
                    self.end_word(&mut word, &mut pieces);
                    self.push_word(&[b], &mut pieces);
                }
                _ => word.push(if self.lowercase {
                    b.to_ascii_lowercase()
                } else {
                    b
                }),
            }
        }
        if pieces.len() < stop {
            self.end_word(&mut word, &mut pieces);
        }
        let truncated = pieces.len() > self.limit;
        if truncated {
            match self.side {
                Side::Right => pieces.truncate(self.limit),
                Side::Left => {
                    pieces.drain(..pieces.len() - self.limit);
                }
            }
        }
        let mut ids = Vec::with_capacity(self.prefix.len() + pieces.len() + self.suffix.len());
        ids.extend_from_slice(&self.prefix);
        ids.extend_from_slice(&pieces);
        ids.extend_from_slice(&self.suffix);
        let mut type_ids = Vec::with_capacity(ids.len());
        type_ids.extend_from_slice(&self.prefix_types);
        type_ids.resize(self.prefix.len() + pieces.len(), self.seq_type);
        type_ids.extend_from_slice(&self.suffix_types);
        Some(Tokenized {
            ids,
            type_ids,
            truncated,
        })
    }

    /// Whether an added token's content occurs in `text`, ignoring ASCII case (a superset of
    /// where Hugging Face would match one, normalized or not).
    fn has_added_token(&self, text: &[u8]) -> bool {
        text.iter().enumerate().any(|(i, &b)| {
            self.added_first[b as usize]
                && self.added.iter().any(|a| {
                    text.len() - i >= a.len() && text[i..i + a.len()].eq_ignore_ascii_case(a)
                })
        })
    }

    /// Tokenizes the word gathered in `word`, if any, and empties it.
    fn end_word(&self, word: &mut Vec<u8>, out: &mut Vec<u32>) {
        if !word.is_empty() {
            self.push_word(word, out);
            word.clear();
        }
    }

    /// WordPiece on one word: the longest known piece from the start, then the longest known
    /// continuation, and so on; a word with a part no piece covers, or longer than
    /// `max_input_chars_per_word`, becomes one unknown token.
    fn push_word(&self, w: &[u8], out: &mut Vec<u32>) {
        if w.len() > self.max_word {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < w.len() {
            let map = if start == 0 {
                &self.starts
            } else {
                &self.conts
            };
            let mut end = w.len().min(start + map.longest);
            loop {
                if end == start {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
                if let Some(id) = map.get(&w[start..end]) {
                    out.push(id);
                    start = end;
                    break;
                }
                end -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ModelConfig, ModelOptions};
    use crate::tokenize::TextTokenizer;

    fn minilm() -> Option<ModelConfig> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2");
        if !dir.is_dir() {
            eprintln!("skipped: {} is absent", dir.display());
            return None;
        }
        let opts = ModelOptions::for_folder(dir);
        Some(ModelConfig::load(&opts).unwrap())
    }

    /// Random ASCII texts from a fixed seed, rich in what tokenizers treat specially.
    fn random_texts(n: usize) -> Vec<String> {
        let mut next = crate::tokenize::tests::xorshift(0x9e37_79b9_7f4a_7c15);
        let words = [
            "the",
            "Debian",
            "package",
            "apt-get",
            "isn't",
            "1234567",
            "x86_64",
            "HTTP/1.1",
            "a.b.c",
            "unaffable",
            "GNOME",
            "libfoo-dev",
            "[MASK",
            "##",
            "#",
            "e.g.",
            "C++",
            "don't",
            "3.14",
            "UTF-8",
            "JSON",
            "qwertyuiopasdfghjkl",
        ];
        let special = ["[CLS]", "[sep]", "naïve", "日本"];
        (0..n)
            .map(|_| {
                let mut t = String::new();
                for _ in 0..next(60) {
                    match next(10) {
                        0 => t.push(char::from(next(128) as u8)),
                        9 if next(40) == 0 => t.push_str(special[next(4) as usize]),
                        1 => t.push_str(&"z".repeat(next(130) as usize)),
                        2 => t.push(char::from(b"\t\n\r\x0b\x0c\x1f\x7f\x00 "[next(9) as usize])),
                        _ => t.push_str(words[next(words.len() as u64) as usize]),
                    }
                    if next(3) > 0 {
                        t.push(' ');
                    }
                }
                t
            })
            .collect()
    }

    #[test]
    fn gives_the_ids_hugging_face_gives() {
        let Some(mut cfg) = minilm() else { return };
        for (side, max_len) in [(Side::Right, 256), (Side::Left, 24), (Side::Right, 12)] {
            cfg.truncation_side = side;
            cfg.max_seq_length = max_len;
            let tok = TextTokenizer::load(&cfg).unwrap();
            let fast = tok.fast().expect("MiniLM's tokenizer takes the fast path");
            let (mut checked, mut fell_back) = (0, 0);
            for text in random_texts(3000) {
                let text = crate::tokenize::strip(&text);
                let exact = tok.encode_exact(text).unwrap();
                match fast.encode(text) {
                    Some(f) => {
                        assert_eq!(f, exact, "{side:?} {max_len}: {text:?}");
                        checked += 1;
                    }
                    None => fell_back += 1,
                }
            }
            // Texts with `[CLS]`-like words or non-ASCII bytes go to Hugging Face.
            assert!(checked > 1000 && fell_back > 100, "{checked} {fell_back}");
        }
    }

    #[test]
    fn leaves_what_it_cannot_do_to_hugging_face() {
        let Some(cfg) = minilm() else { return };
        let tok = TextTokenizer::load(&cfg).unwrap();
        let fast = tok.fast().unwrap();
        assert!(fast.encode("naïve café").is_none());
        assert!(fast.encode("a [SEP] b").is_none());
        assert!(fast.encode("a [mask] b").is_none());
        assert!(fast.encode("a [Mask] b").is_none()); // any case: conservative
        assert!(fast.encode("a [maskless] b [mask").is_some());
    }

    #[test]
    fn is_not_used_for_other_tokenizers() {
        let Some(cfg) = minilm() else { return };
        let text = std::fs::read_to_string(&cfg.tokenizer_path).unwrap();
        // As TextTokenizer sets it up: no padding (the file pads to 128), cut at 128.
        let hf = |json: &str| {
            let mut t = json.parse::<Tokenizer>().unwrap();
            t.with_padding(None);
            t
        };
        assert!(FastWordPiece::new(&hf(&text), 128, Side::Right, false).is_some());
        let edits = [
            (r#""type":"BertPreTokenizer""#, r#""type":"Whitespace""#),
            (r#""clean_text":true"#, r#""clean_text":false"#),
            (r#""type":"BertNormalizer""#, r#""type":"NFC""#),
        ];
        let compact =
            serde_json::to_string(&serde_json::from_str::<Value>(&text).unwrap()).unwrap();
        for (from, to) in edits {
            assert!(compact.contains(from), "{from}");
            let other = hf(&compact.replace(from, to));
            assert!(
                FastWordPiece::new(&other, 128, Side::Right, false).is_none(),
                "{to}"
            );
        }
    }
}
