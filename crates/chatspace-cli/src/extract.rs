//! Getting the text to embed out of each row: a string column as it is, or one turn of a
//! conversation stored as a list of `{role, content}` structs.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::args::ExtractMode;
use crate::bad_input;

/// Why a row produced no text.
pub type SkipReasons = BTreeMap<&'static str, u64>;

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

/// Checks, before any data is read, that `field` exists in `schema` and suits `mode`.
pub fn check_field(schema: &Schema, field: &str, mode: ExtractMode) -> Result<usize> {
    let Ok(idx) = schema.index_of(field) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
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
        ExtractMode::None => Err(bad_input!(
            "text field `{field}` is of type {dt}, not a string"
        )),
        ExtractMode::FirstAssistant if conversation_struct(dt).is_some() => Ok(idx),
        ExtractMode::FirstAssistant => Err(bad_input!(
            "text field `{field}` is of type {dt}, not a list of {{role, content}} turns, so --extract first-assistant cannot use it"
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

/// The first turn whose role is `assistant` or `model` (any case) and whose content is not blank,
/// stripped of surrounding whitespace.
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
        let text = string_at(content.as_ref(), t)?.trim();
        (!text.is_empty()).then(|| text.to_string())
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
                let text = string_at(column.as_ref(), i).map(str::to_string);
                keep(&mut out, i, text, "null text");
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
}
