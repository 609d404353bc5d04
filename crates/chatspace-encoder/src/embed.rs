//! `embed` and `tokenize`: JSON lines in, JSON lines out, for checking a model by hand or from
//! scripts.
//!
//! Each stdin line is `{"text": "..."}` (other keys are ignored); each stdout line is
//! `{"embedding": [...]}` (`embed`) or `{"ids": [...], "truncated": bool}` (`tokenize`), in
//! input order. Lines are embedded `--batch-size` at a time.

use std::io::{self, BufRead, BufWriter, Write};

use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, ModelOptions};
use crate::engine::{self, Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

#[derive(Deserialize)]
struct InLine {
    text: String,
}

#[derive(Serialize)]
struct OutLine<'a> {
    embedding: &'a [f32],
}

/// Embeds stdin to stdout. A malformed line stops the run with an error naming it.
pub fn embed(opts: &EngineOptions) -> Result<()> {
    let (tokenizer, mut engine, _info) = engine::load(opts)?;
    let batch_size = opts.batch_size.max(1);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut texts = Vec::with_capacity(batch_size);
    for text in input_lines() {
        texts.push(text?);
        if texts.len() == batch_size {
            write_batch(&tokenizer, &mut engine, &texts, &mut out)?;
            texts.clear();
        }
    }
    write_batch(&tokenizer, &mut engine, &texts, &mut out)
}

#[derive(Serialize)]
struct TokensLine<'a> {
    ids: &'a [u32],
    truncated: bool,
}

/// Tokenizes stdin to stdout as the encoder would before embedding; with `exact`, through
/// Hugging Face `tokenizers` alone (no fast path), to compare the two.
pub fn tokenize(opts: &ModelOptions, exact: bool) -> Result<()> {
    let mut tokenizer = TextTokenizer::load(&ModelConfig::load(opts)?)?;
    if exact {
        tokenizer = tokenizer.exact_only();
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for text in input_lines() {
        let t = tokenizer.encode(&text?)?;
        let line = TokensLine {
            ids: &t.ids,
            truncated: t.truncated,
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| write_err(e.into()))?;
        out.write_all(b"\n").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// The texts of stdin's JSON lines, or an error naming the first bad line.
fn input_lines() -> impl Iterator<Item = Result<String>> {
    io::stdin().lock().lines().enumerate().map(|(i, line)| {
        let line = line.map_err(|source| Error::Io {
            what: "reading stdin",
            source,
        })?;
        let rec: InLine = serde_json::from_str(&line).map_err(|source| Error::BadLine {
            line: i + 1,
            source,
        })?;
        Ok(rec.text)
    })
}

fn write_err(source: io::Error) -> Error {
    Error::Io {
        what: "writing stdout",
        source,
    }
}

fn write_batch(
    tokenizer: &TextTokenizer,
    engine: &mut Engine,
    texts: &[String],
    out: &mut impl Write,
) -> Result<()> {
    if texts.is_empty() {
        return Ok(());
    }
    let unit = engine.embed_unit(&tokenizer.encode_all(texts)?)?;
    for embedding in unit.vectors.chunks(engine.dim()) {
        serde_json::to_writer(&mut *out, &OutLine { embedding })
            .map_err(|e| write_err(e.into()))?;
        out.write_all(b"\n").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}
