//! Getting the text to embed out of each row: a string column as it is, or one turn of a
//! conversation stored as a list of `{role, content}` structs.
//!
//! Rows without a usable text are skipped and counted by reason: `null text`, `empty text`
//! (blank after Python's `str.strip()`, which the encoder applies too), `null conversation`,
//! `no assistant turn`. Texts are never sent empty to an encoder. A text longer than
//! [`MAX_TEXT_BYTES`] is cut to it (the encoder keeps only `max_seq_length` tokens anyway), and
//! [`job_ranges`] keeps every job well under the protocol's frame limit.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::Result;
use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::args::ExtractMode;
use crate::bad_input;

/// Why a row produced no text.
pub type SkipReasons = BTreeMap<&'static str, u64>;

/// The most bytes of one text sent to an encoder; a longer text is cut (on a character boundary)
/// to this. Tokenizers keep only the first `max_seq_length` tokens, which fit in far less.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// The most text bytes in one job (unless a single text is larger), so that a job always fits
/// in one protocol frame ([`chatspace_proto::frame::MAX_FRAME`]) with room to spare.
pub const MAX_JOB_BYTES: usize = chatspace_proto::frame::MAX_FRAME / 2;

const _: () = assert!(MAX_TEXT_BYTES <= MAX_JOB_BYTES);

/// The texts of one record batch: which rows have one, and what it is.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Positions (within the batch) of the rows that have a text, ascending.
    pub keep: Vec<u32>,
    /// The text of each kept row.
    pub texts: Vec<String>,
    /// Rows without a text, counted by reason.
    pub skipped: SkipReasons,
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn conversation_struct(dt: &DataType) -> Option<&arrow::datatypes::Fields> {
    let item = match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => f,
        _ => return None,
    };
    match item.data_type() {
        DataType::Struct(fields) => {
            let has = |name: &str| {
                fields
                    .iter()
                    .any(|f| f.name() == name && is_string(f.data_type()))
            };
            (has("role") && has("content")).then_some(fields)
        }
        _ => None,
    }
}

/// Why a column's type is not a list of `{role, content}` turns, in words.
fn not_conversation(dt: &DataType) -> String {
    let item = match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => f.data_type(),
        _ => return format!("of type {dt}, not a list of {{role, content}} turns"),
    };
    let DataType::Struct(fields) = item else {
        return format!("a list of {item}, not of {{role, content}} turns");
    };
    let problems: Vec<String> = ["role", "content"]
        .iter()
        .filter_map(|name| match fields.iter().find(|f| f.name() == name) {
            None => Some(format!("no `{name}`")),
            Some(f) if !is_string(f.data_type()) => {
                Some(format!("`{name}` of type {}", f.data_type()))
            }
            Some(_) => None,
        })
        .collect();
    format!(
        "a list of {item}, not of {{role, content}} turns (its turns have {})",
        problems.join(" and ")
    )
}

/// Checks, before any data is read, that `field` exists in `schema` and suits `mode`.
pub fn check_field(schema: &Schema, field: &str, mode: ExtractMode) -> Result<usize> {
    let Ok(idx) = schema.index_of(field) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        if names.is_empty() {
            return Err(bad_input!(
                "text field `{field}` is not a column of the dataset: it has no columns (is it empty?)"
            ));
        }
        return Err(bad_input!(
            "text field `{field}` is not a column of the dataset; columns: {}",
            names.join(", ")
        ));
    };
    let dt = schema.field(idx).data_type();
    match mode {
        ExtractMode::None if is_string(dt) => Ok(idx),
        ExtractMode::None if conversation_struct(dt).is_some() => Err(bad_input!(
            "text field `{field}` holds conversations ({dt}), not strings; pass --extract first-assistant"
        )),
        ExtractMode::None if *dt == DataType::Null => Err(bad_input!(
            "text field `{field}` holds only nulls (type {dt}), not strings"
        )),
        ExtractMode::None => Err(bad_input!(
            "text field `{field}` is of type {dt}, not a string"
        )),
        ExtractMode::FirstAssistant if conversation_struct(dt).is_some() => Ok(idx),
        ExtractMode::FirstAssistant if *dt == DataType::Null => Err(bad_input!(
            "text field `{field}` holds only nulls (type {dt}), not conversations, so --extract first-assistant cannot use it"
        )),
        ExtractMode::FirstAssistant => Err(bad_input!(
            "text field `{field}` is {}, so --extract first-assistant cannot use it",
            not_conversation(dt)
        )),
    }
}

fn string_at(array: &dyn Array, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Some(array.as_string_view().value(i)),
        _ => None,
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the four ASCII separators `\x1c`..`\x1f`,
/// which Python counts as whitespace and Rust does not (the encoder strips texts the same way).
pub fn strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `text`, cut to at most [`MAX_TEXT_BYTES`] on a character boundary.
fn capped(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first turn whose role is `assistant` or `model` (any case) and whose content is not blank,
/// stripped of surrounding whitespace. Turns with a null role or content are not matches.
fn first_assistant(turns: &StructArray) -> Option<String> {
    let role = turns.column_by_name("role")?;
    let content = turns.column_by_name("content")?;
    (0..turns.len()).find_map(|t| {
        if turns.is_null(t) {
            return None;
        }
        let r = string_at(role.as_ref(), t)?;
        if !(r.eq_ignore_ascii_case("assistant") || r.eq_ignore_ascii_case("model")) {
            return None;
        }
        let text = strip(string_at(content.as_ref(), t)?);
        (!text.is_empty()).then(|| capped(text).to_string())
    })
}

/// Extracts the text of every row of `batch` from column `idx` (checked by [`check_field`]).
pub fn extract(batch: &RecordBatch, idx: usize, mode: ExtractMode) -> Extracted {
    let column = batch.column(idx);
    let mut out = Extracted::default();
    let keep = |out: &mut Extracted, i: usize, text: Option<String>, why: &'static str| match text {
        Some(t) => {
            out.keep.push(i as u32);
            out.texts.push(t);
        }
        None => *out.skipped.entry(why).or_default() += 1,
    };
    match mode {
        ExtractMode::None => {
            for i in 0..batch.num_rows() {
                match string_at(column.as_ref(), i) {
                    None => keep(&mut out, i, None, "null text"),
                    Some(t) if strip(t).is_empty() => keep(&mut out, i, None, "empty text"),
                    Some(t) => keep(&mut out, i, Some(capped(t).to_string()), ""),
                }
            }
        }
        ExtractMode::FirstAssistant => {
            let turns_of = |i: usize| -> Option<arrow::array::ArrayRef> {
                if column.is_null(i) {
                    return None;
                }
                match column.data_type() {
                    DataType::List(_) => Some(column.as_list::<i32>().value(i)),
                    DataType::LargeList(_) => Some(column.as_list::<i64>().value(i)),
                    DataType::ListView(_) => Some(column.as_list_view::<i32>().value(i)),
                    _ => None,
                }
            };
            for i in 0..batch.num_rows() {
                match turns_of(i) {
                    None => keep(&mut out, i, None, "null conversation"),
                    Some(turns) => {
                        let text = first_assistant(turns.as_struct());
                        keep(&mut out, i, text, "no assistant turn");
                    }
                }
            }
        }
    }
    out
}

/// Cuts `texts` into consecutive jobs of at most `max_rows` texts and (unless one text alone is
/// larger) at most `max_bytes` bytes of text.
pub fn job_ranges(texts: &[String], max_rows: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, t) in texts.iter().enumerate() {
        let full = i - start == max_rows || (i > start && bytes + t.len() > max_bytes);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += t.len();
    }
    if start < texts.len() {
        out.push(start..texts.len());
    }
    out
}

/// The field an input column gets in the output: renamed `_original_<name>` when it would
/// collide with a column chatspace adds.
pub fn output_field(field: &Field, added: &[&str]) -> Field {
    if added.contains(&field.name().as_str()) {
        field
            .clone()
            .with_name(format!("_original_{}", field.name()))
    } else {
        field.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ListBuilder, StringBuilder, StructBuilder};
    use arrow::datatypes::Fields;

    use super::*;

    fn conversations(rows: &[Option<&[(&str, &str)]>]) -> RecordBatch {
        let fields = Fields::from(vec![
            Field::new("content", DataType::Utf8, true),
            Field::new("role", DataType::Utf8, true),
        ]);
        let mut b = ListBuilder::new(StructBuilder::from_fields(fields, 0));
        for row in rows {
            match row {
                None => b.append(false),
                Some(turns) => {
                    for (role, content) in *turns {
                        let s = b.values();
                        s.field_builder::<StringBuilder>(0)
                            .unwrap()
                            .append_value(content);
                        s.field_builder::<StringBuilder>(1)
                            .unwrap()
                            .append_value(role);
                        s.append(true);
                    }
                    b.append(true);
                }
            }
        }
        let array = Arc::new(b.finish());
        let schema = Schema::new(vec![Field::new(
            "messages",
            array.data_type().clone(),
            true,
        )]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    #[test]
    fn first_assistant_turn_is_stripped_and_missing_ones_counted() {
        let batch = conversations(&[
            Some(&[
                ("system", "be nice"),
                ("user", "hi"),
                ("assistant", "  hello \n"),
            ]),
            Some(&[("user", "anyone?")]),
            Some(&[("user", "q"), ("assistant", "   "), ("MODEL", "second")]),
            None,
        ]);
        check_field(&batch.schema(), "messages", ExtractMode::FirstAssistant).unwrap();
        let ex = extract(&batch, 0, ExtractMode::FirstAssistant);
        assert_eq!(ex.keep, vec![0, 2]);
        assert_eq!(ex.texts, vec!["hello", "second"]);
        assert_eq!(ex.skipped.get("no assistant turn"), Some(&1));
        assert_eq!(ex.skipped.get("null conversation"), Some(&1));
    }

    #[test]
    fn missing_field_lists_columns() {
        let batch = conversations(&[]);
        let err = check_field(&batch.schema(), "text", ExtractMode::None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text field `text` is not a column of the dataset; columns: messages"
        );
        let err = check_field(&batch.schema(), "messages", ExtractMode::None).unwrap_err();
        assert!(
            err.to_string().contains("--extract first-assistant"),
            "{err}"
        );
    }

    fn strings(values: &[Option<&str>]) -> RecordBatch {
        let array = Arc::new(arrow::array::StringArray::from(values.to_vec()));
        let schema = Schema::new(vec![Field::new("text", DataType::Utf8, true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    #[test]
    fn null_and_blank_texts_are_skipped_and_counted() {
        let batch = strings(&[
            Some("a"),
            None,
            Some(""),
            Some(" \t\n\u{3000}"),
            Some("\x1c\x1f"),
            Some(" b "),
        ]);
        let ex = extract(&batch, 0, ExtractMode::None);
        assert_eq!(ex.keep, vec![0, 5]);
        assert_eq!(ex.texts, vec!["a", " b "]);
        assert_eq!(ex.skipped.get("null text"), Some(&1));
        assert_eq!(ex.skipped.get("empty text"), Some(&3));
    }

    #[test]
    fn wrong_types_are_named() {
        let schema = |dt: DataType| Schema::new(vec![Field::new("t", dt, true)]);
        let none = ExtractMode::None;
        let err = check_field(&schema(DataType::Int64), "t", none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text field `t` is of type Int64, not a string"
        );
        let err = check_field(&schema(DataType::Null), "t", none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text field `t` holds only nulls (type Null), not strings"
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let err = check_field(&schema(list.clone()), "t", none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text field `t` is of type List(Utf8), not a string"
        );

        let fa = ExtractMode::FirstAssistant;
        let err = check_field(&schema(list), "t", fa).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text field `t` is a list of Utf8, not of {role, content} turns, so --extract first-assistant cannot use it"
        );
        let turn = DataType::Struct(Fields::from(vec![
            Field::new("speaker", DataType::Utf8, true),
            Field::new("content", DataType::Int32, true),
        ]));
        let turns = DataType::List(Arc::new(Field::new("item", turn, true)));
        let err = check_field(&schema(turns), "t", fa).unwrap_err();
        assert!(
            err.to_string()
                .contains("(its turns have no `role` and `content` of type Int32)"),
            "{err}"
        );
        let err = check_field(&schema(DataType::Utf8), "t", fa).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("text field `t` is of type Utf8, not a list of {role, content} turns"),
            "{err}"
        );
    }

    #[test]
    fn null_roles_and_contents_are_not_matches() {
        let fields = Fields::from(vec![
            Field::new("role", DataType::Utf8, true),
            Field::new("content", DataType::Utf8, true),
        ]);
        let mut b = ListBuilder::new(StructBuilder::from_fields(fields, 0));
        for (role, content) in [
            (None, Some("x")),
            (Some("assistant"), None),
            (Some("assistant"), Some("\x1c \x1f")),
            (Some("assistant"), Some(" yes ")),
        ] {
            let s = b.values();
            s.field_builder::<StringBuilder>(0)
                .unwrap()
                .append_option(role);
            s.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_option(content);
            s.append(true);
        }
        b.append(true);
        let array = Arc::new(b.finish());
        let schema = Schema::new(vec![Field::new("m", array.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap();
        let ex = extract(&batch, 0, ExtractMode::FirstAssistant);
        assert_eq!(ex.texts, vec!["yes"]);
    }

    #[test]
    fn huge_texts_are_capped_on_a_char_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES / 2 + 10);
        let cut = capped(&text);
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.len() > MAX_TEXT_BYTES - 4);
        assert_eq!(capped("short"), "short");
    }

    #[test]
    fn jobs_are_cut_by_rows_and_bytes() {
        let texts: Vec<String> = [3, 3, 3, 10, 1, 1, 1, 1]
            .iter()
            .map(|&n| "x".repeat(n))
            .collect();
        assert_eq!(job_ranges(&texts, 3, 7), vec![0..2, 2..3, 3..4, 4..7, 7..8]);
        assert_eq!(job_ranges(&texts, 100, 1000), vec![0..8]);
        assert!(job_ranges(&[], 3, 7).is_empty());
    }
}
