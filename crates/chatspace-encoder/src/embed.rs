//! `embed`: JSON lines in, JSON lines out, for checking a model by hand or from scripts.
//!
//! Each stdin line is `{"text": "..."}` (other keys are ignored); each stdout line is
//! `{"embedding": [...]}`, in input order. Lines are embedded `--batch-size` at a time.

use std::io::{self, BufRead, BufWriter, Write};

use serde::{Deserialize, Serialize};

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
    for (i, line) in io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            what: "reading stdin",
            source,
        })?;
        let rec: InLine = serde_json::from_str(&line).map_err(|source| Error::BadLine {
            line: i + 1,
            source,
        })?;
        texts.push(rec.text);
        if texts.len() == batch_size {
            write_batch(&tokenizer, &mut engine, &texts, &mut out)?;
            texts.clear();
        }
    }
    write_batch(&tokenizer, &mut engine, &texts, &mut out)
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
    let write_err = |source| Error::Io {
        what: "writing stdout",
        source,
    };
    for embedding in unit.vectors.chunks(engine.dim()) {
        serde_json::to_writer(&mut *out, &OutLine { embedding })
            .map_err(|e| write_err(e.into()))?;
        out.write_all(b"\n").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}
