//! Getting the texts to embed out of each row: a string column as it is, or turns of a
//! conversation column (see [`crate::args::ExtractMode`] and the README's "Extraction modes").
//!
//! - [`field`]: which column `--text-field` names (or its default), and whether its type suits
//!   the mode; checked before any row is read.
//! - [`conversation`]: the conversation modes, over the turn shapes seen on the Hub.
//! - [`roles`]: role names (`assistant`/`model`/`gpt`, `user`/`human`, `system`) and
//!   `--filter-role`.
//! - [`text`]: string layouts, stripping, size caps and cutting texts into jobs.
//!
//! Input rows without a text are skipped and counted by reason: `null text`, `empty text`
//! (blank after Python's `str.strip()`, which the encoder applies too), `null conversation`,
//! `no assistant turn`, `no user turn`, `no turn`. In per-turn modes the turns that are selected
//! but give no row are counted too: `null turn`, `null role`, `null content`, `empty content`.
//! Texts are never sent empty to an encoder. A text longer than [`text::MAX_TEXT_BYTES`] is cut to it
//! (the encoder keeps only `max_seq_length` tokens anyway), and [`job_ranges`] keeps every job
//! well under the protocol's frame limit.

mod conversation;
mod field;
mod roles;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::Schema;

use self::conversation::{Conversations, Take};
use self::field::{Column, Shape, TextField};
use self::roles::RoleFilter;
pub use self::text::{MAX_JOB_BYTES, job_ranges};
use self::text::{Strings, capped, strip};
use crate::args::{EmbedArgs, ExtractMode, SystemPrompt};

/// Counts of rows (or turns) without a text, by reason.
pub type SkipReasons = BTreeMap<&'static str, u64>;

/// The texts of one record batch: which rows have one (or several), and what they are.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Position (within the batch) of the input row of each text, ascending; a position repeats
    /// when a row gives several texts (per-turn modes).
    pub keep: Vec<u32>,
    /// The texts.
    pub texts: Vec<String>,
    /// Per-turn modes: the turn index (position in its conversation) of each text; else empty.
    pub turns: Vec<i32>,
    /// Per-turn modes: the role of each text, as written in the dataset (`Utf8`).
    pub roles: Option<ArrayRef>,
    /// Input rows without a text, by reason.
    pub skipped: SkipReasons,
    /// Per-turn modes: selected turns without a text, by reason.
    pub turns_skipped: SkipReasons,
}

impl Extracted {
    fn push(&mut self, row: usize, text: String) {
        self.keep.push(row as u32);
        self.texts.push(text);
    }

    fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }

    fn skip_turn(&mut self, why: &'static str) {
        *self.turns_skipped.entry(why).or_default() += 1;
    }

    /// The turn index of text `j` (0 outside per-turn modes).
    pub fn turn(&self, j: usize) -> i32 {
        self.turns.get(j).copied().unwrap_or(0)
    }

    /// Removes the first `n` texts (with their rows, turns and roles).
    pub fn drop_front(&mut self, n: usize) {
        self.keep.drain(..n);
        self.texts.drain(..n);
        if !self.turns.is_empty() {
            self.turns.drain(..n);
        }
        if let Some(roles) = &mut self.roles {
            *roles = roles.slice(n, roles.len() - n);
        }
    }
}

/// Takes texts out of record batches the way the flags say; built once per run.
#[derive(Debug, Clone)]
pub struct Extractor {
    field: TextField,
    mode: ExtractMode,
    take: Option<Take>,
    /// `--filter-role`, as given.
    roles: Vec<String>,
}

impl Extractor {
    /// Checks the text field of `schema` against the extraction flags of `args` (before any
    /// data is read): a missing field or one of the wrong type is bad input, named.
    pub fn new(schema: &Schema, args: &EmbedArgs) -> Result<Self> {
        let mode = args.extract_mode();
        let field = field::resolve(schema, args.text_field.as_deref(), mode)?;
        let take = Take::new(
            mode,
            RoleFilter::new(&args.filter_role),
            args.system_prompt() == SystemPrompt::Drop,
        );
        Ok(Extractor {
            field,
            mode,
            take,
            roles: args.filter_role.clone(),
        })
    }

    /// The text field's name (as given, or the default chosen).
    pub fn field(&self) -> &str {
        &self.field.name
    }

    /// Whether each turn is its own output row (with `turn_index` and `role` columns).
    pub fn per_turn(&self) -> bool {
        self.mode.is_per_turn()
    }

    /// What was done to rows before embedding, for the manifest's `preprocessing`.
    pub fn describe(&self) -> Option<String> {
        let f = &self.field.name;
        let roles = if self.roles.is_empty() {
            String::new()
        } else {
            format!(" of roles {}", self.roles.join(", "))
        };
        Some(match &self.take {
            None => return None,
            Some(Take::One { .. }) => {
                let (which, who) = match self.mode {
                    ExtractMode::FirstAssistant => ("first", "assistant"),
                    ExtractMode::LastAssistant => ("last", "assistant"),
                    ExtractMode::FirstUser => ("first", "user"),
                    _ => ("last", "user"),
                };
                let what = if who == "assistant" {
                    "response"
                } else {
                    "message"
                };
                format!(
                    "Extracted {which} {who} {what} from '{f}' field; skipped rows without {who} {what}s"
                )
            }
            Some(Take::Transcript { drop_system, .. }) => format!(
                "Joined the turns{roles} with text of '{f}' field into 'role: content' lines{}; skipped rows without such turns",
                if *drop_system {
                    ", leaving system turns out"
                } else {
                    ""
                }
            ),
            Some(Take::Each { .. }) => format!(
                "One row per {}turn{roles} with text of '{f}' field, with turn_index and role; skipped rows without such turns",
                if self.mode == ExtractMode::PerAssistantTurn {
                    "assistant "
                } else {
                    ""
                }
            ),
        })
    }

    /// Extracts the texts of every row of `batch` (which has the schema the extractor was
    /// built for).
    pub fn extract(&self, batch: &RecordBatch) -> Result<Extracted> {
        let column = self.field.column(batch)?;
        let mut out = Extracted::default();
        match (&self.field.shape, &self.take) {
            (Shape::Strings, None) => strings(&column, batch.num_rows(), &mut out)?,
            (Shape::Conversations(shape), Some(take)) => {
                let conv = Conversations::new(column.leaf, shape)?;
                conversation::extract(&column, &conv, batch.num_rows(), take, &mut out)?;
            }
            _ => return Err(anyhow!("text field shape and extraction mode disagree")),
        }
        Ok(out)
    }
}

/// A string column: null and blank texts are skipped; texts are sent as they are (not stripped).
fn strings(column: &Column, rows: usize, out: &mut Extracted) -> Result<()> {
    let s = Strings::of(column.leaf.as_ref())
        .ok_or_else(|| anyhow!("the text column changed type while reading"))?;
    for i in 0..rows {
        match s.get(i).filter(|_| !column.is_null(i)) {
            None => out.skip("null text"),
            Some(t) if strip(t).is_empty() => out.skip("empty text"),
            Some(t) => out.push(i, capped(t).to_string()),
        }
    }
    Ok(())
}
