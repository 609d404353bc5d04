//! The text field: which column (or field inside a struct column) `--text-field` names, its
//! default, and whether its type suits the extraction mode, all checked on the schema before
//! any row is read. Errors are one line naming the field and what is wrong with it.
//!
//! Conversation columns are lists of turn structs in one of the shapes seen on the Hub:
//! `{role, content}` (OpenAI style, smoltalk) or ShareGPT's `{from, value}`; the content is a
//! string, or a list of parts `{type, text}` (multimodal chat formats).

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema};

use super::text::is_string;
use crate::args::ExtractMode;
use crate::bad_input;

/// Where the texts of a conversation's turns are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnShape {
    /// Index of the role field (`role` or `from`) in the turn struct.
    pub role: usize,
    /// Index of the content field (`content` or `value`) in the turn struct.
    pub content: usize,
    /// When the content is a list of parts: where their text is.
    pub parts: Option<PartsShape>,
}

/// Where the text of a content part is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsShape {
    /// Index of the `text` field in the part struct.
    pub text: usize,
    /// Index of the `type` field, when the parts have one.
    pub kind: Option<usize>,
}

/// What the text field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Strings.
    Strings,
    /// Conversations: lists of turns.
    Conversations(TurnShape),
}

/// The text field, found in the schema and checked against the extraction mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextField {
    /// The field as named (given, or the default chosen).
    pub name: String,
    /// Index of the top-level column.
    pub column: usize,
    /// Indexes of the struct fields on the way down from the column to the field.
    pub children: Vec<usize>,
    /// What it holds.
    pub shape: Shape,
}

/// The text field in one record batch: the array, and the structs above it (a row is null when
/// any of them is).
pub struct Column<'a> {
    ancestors: Vec<&'a StructArray>,
    /// The text field's array.
    pub leaf: &'a ArrayRef,
}

impl Column<'_> {
    /// Whether row `i` has no value (it, or a struct above it, is null).
    pub fn is_null(&self, i: usize) -> bool {
        self.leaf.is_null(i) || self.ancestors.iter().any(|a| a.is_null(i))
    }
}

impl TextField {
    /// The field's array in `batch`, which has the schema the field was resolved in.
    pub fn column<'a>(&self, batch: &'a RecordBatch) -> Result<Column<'a>> {
        let mut ancestors = Vec::with_capacity(self.children.len());
        let mut leaf = batch.column(self.column);
        for &child in &self.children {
            let s = leaf.as_struct_opt().ok_or_else(|| {
                anyhow::anyhow!("text field `{}` changed type while reading", self.name)
            })?;
            ancestors.push(s);
            leaf = s.column(child);
        }
        Ok(Column { ancestors, leaf })
    }
}

fn list_item(dt: &DataType) -> Option<&Field> {
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => Some(f),
        _ => None,
    }
}

fn find<'a>(fields: &'a Fields, names: &[&str]) -> Option<(usize, &'a Field)> {
    names
        .iter()
        .find_map(|n| fields.iter().position(|f| f.name() == n))
        .map(|i| (i, fields[i].as_ref()))
}

/// A content part list: `list<struct<text: string, type?: string>>`.
fn parts_shape(dt: &DataType) -> Option<PartsShape> {
    let DataType::Struct(fields) = list_item(dt)?.data_type() else {
        return None;
    };
    let (text, f) = find(fields, &["text"])?;
    if !is_string(f.data_type()) {
        return None;
    }
    let kind = find(fields, &["type"])
        .filter(|(_, f)| is_string(f.data_type()))
        .map(|(i, _)| i);
    Some(PartsShape { text, kind })
}

/// The turn shape of a conversation column of type `dt`, or why it is not one (the words after
/// "text field `x` is").
pub fn turn_shape(dt: &DataType) -> Result<TurnShape, String> {
    let Some(item) = list_item(dt) else {
        return Err(format!(
            "of type {dt}, not a list of {{role, content}} turns"
        ));
    };
    let item = item.data_type();
    let DataType::Struct(fields) = item else {
        return Err(format!("a list of {item}, not of {{role, content}} turns"));
    };
    let mut problems = Vec::new();
    let role = match find(fields, &["role", "from"]) {
        None => {
            problems.push("no `role` or `from`".to_string());
            None
        }
        Some((_, f)) if !is_string(f.data_type()) => {
            problems.push(format!("`{}` of type {}", f.name(), f.data_type()));
            None
        }
        Some((i, _)) => Some(i),
    };
    let content = match find(fields, &["content", "value"]) {
        None => {
            problems.push("no `content` or `value`".to_string());
            None
        }
        Some((i, f)) if is_string(f.data_type()) => Some((i, None)),
        Some((i, f)) => match parts_shape(f.data_type()) {
            Some(parts) => Some((i, Some(parts))),
            None => {
                problems.push(format!(
                    "`{}` of type {}, neither a string nor a list of {{type, text}} parts",
                    f.name(),
                    f.data_type()
                ));
                None
            }
        },
    };
    match (role, content) {
        (Some(role), Some((content, parts))) => Ok(TurnShape {
            role,
            content,
            parts,
        }),
        _ => Err(format!(
            "a list of {item}, not of {{role, content}} turns (its turns have {})",
            problems.join(" and ")
        )),
    }
}

fn column_names(schema: &Schema) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names.join(", ")
}

/// The field's name: as given, or the mode's default (`text`; for conversations `messages`,
/// else `conversations`).
fn field_name(schema: &Schema, given: Option<&str>, mode: ExtractMode) -> Result<String> {
    if let Some(name) = given {
        return Ok(name.to_string());
    }
    if !mode.is_conversation() {
        return Ok("text".into());
    }
    for name in ["messages", "conversations"] {
        if schema.index_of(name).is_ok() {
            return Ok(name.into());
        }
    }
    Err(bad_input!(
        "no --text-field given, and the dataset has no `messages` or `conversations` column for --extract {}; columns: {} (pass --text-field)",
        mode.name(),
        column_names(schema)
    ))
}

/// Finds `name` in `schema`: a column, or a dotted path into struct columns. Returns the column,
/// the struct fields on the way, and the field's type.
fn locate<'a>(schema: &'a Schema, name: &str) -> Result<(usize, Vec<usize>, &'a DataType)> {
    if let Ok(idx) = schema.index_of(name) {
        return Ok((idx, Vec::new(), schema.field(idx).data_type()));
    }
    let mut parts = name.split('.');
    let head = parts.next().unwrap_or_default();
    let column = match schema.index_of(head) {
        Ok(i) if name.contains('.') => i,
        _ if schema.fields().is_empty() => {
            return Err(bad_input!(
                "text field `{name}` is not a column of the dataset: it has no columns (is it empty?)"
            ));
        }
        _ => {
            return Err(bad_input!(
                "text field `{name}` is not a column of the dataset; columns: {}",
                column_names(schema)
            ));
        }
    };
    let mut children = Vec::new();
    let mut dt = schema.field(column).data_type();
    let mut walked = head.to_string();
    for part in parts {
        let DataType::Struct(fields) = dt else {
            return Err(bad_input!(
                "text field `{name}`: `{walked}` is of type {dt}, not a struct with a field `{part}`"
            ));
        };
        let Some(i) = fields.iter().position(|f| f.name() == part) else {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(bad_input!(
                "text field `{name}`: `{walked}` has no field `{part}`; its fields: {}",
                names.join(", ")
            ));
        };
        children.push(i);
        dt = fields[i].data_type();
        walked = format!("{walked}.{part}");
    }
    Ok((column, children, dt))
}

/// Finds the text field (`given`, or the mode's default) in `schema` and checks that its type
/// suits `mode`, before any data is read.
pub fn resolve(schema: &Schema, given: Option<&str>, mode: ExtractMode) -> Result<TextField> {
    let name = field_name(schema, given, mode)?;
    let (column, children, dt) = locate(schema, &name)?;
    let shape = if mode.is_conversation() {
        match turn_shape(dt) {
            Ok(turns) => Shape::Conversations(turns),
            Err(_) if *dt == DataType::Null => {
                return Err(bad_input!(
                    "text field `{name}` holds only nulls (type {dt}), not conversations, so --extract {} cannot use it",
                    mode.name()
                ));
            }
            Err(why) => {
                return Err(bad_input!(
                    "text field `{name}` is {why}, so --extract {} cannot use it",
                    mode.name()
                ));
            }
        }
    } else if is_string(dt) {
        Shape::Strings
    } else if turn_shape(dt).is_ok() {
        return Err(bad_input!(
            "text field `{name}` holds conversations ({dt}), not strings; pass a conversation mode such as --extract first-assistant"
        ));
    } else if *dt == DataType::Null {
        return Err(bad_input!(
            "text field `{name}` holds only nulls (type {dt}), not strings"
        ));
    } else {
        return Err(bad_input!(
            "text field `{name}` is of type {dt}, not a string"
        ));
    };
    Ok(TextField {
        name,
        column,
        children,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn schema(fields: Vec<(&str, DataType)>) -> Schema {
        Schema::new(
            fields
                .into_iter()
                .map(|(n, dt)| Field::new(n, dt, true))
                .collect::<Vec<_>>(),
        )
    }

    fn list_of(dt: DataType) -> DataType {
        DataType::List(Arc::new(Field::new("item", dt, true)))
    }

    fn turn(a: (&str, DataType), b: (&str, DataType)) -> DataType {
        DataType::Struct(Fields::from(vec![
            Field::new(a.0, a.1, true),
            Field::new(b.0, b.1, true),
        ]))
    }

    fn openai() -> DataType {
        list_of(turn(("content", DataType::Utf8), ("role", DataType::Utf8)))
    }

    fn err(schema: &Schema, given: Option<&str>, mode: ExtractMode) -> String {
        resolve(schema, given, mode).unwrap_err().to_string()
    }

    #[test]
    fn both_hub_shapes_and_parts_content_are_conversations() {
        let t = turn_shape(&openai()).unwrap();
        assert_eq!((t.role, t.content, t.parts), (1, 0, None));
        let sharegpt = list_of(turn(
            ("from", DataType::Utf8),
            ("value", DataType::LargeUtf8),
        ));
        let t = turn_shape(&sharegpt).unwrap();
        assert_eq!((t.role, t.content), (0, 1));
        let part = turn(("type", DataType::Utf8), ("text", DataType::Utf8View));
        let parts = DataType::LargeList(Arc::new(Field::new("item", part, true)));
        let t = turn_shape(&list_of(turn(("role", DataType::Utf8), ("content", parts)))).unwrap();
        assert_eq!(
            t.parts,
            Some(PartsShape {
                text: 1,
                kind: Some(0)
            })
        );
    }

    #[test]
    fn defaults_follow_the_mode() {
        let s = schema(vec![("id", DataType::Int64), ("messages", openai())]);
        let f = resolve(&s, None, ExtractMode::PerTurn).unwrap();
        assert_eq!((f.name.as_str(), f.column), ("messages", 1));
        let s = schema(vec![("conversations", openai()), ("text", DataType::Utf8)]);
        let f = resolve(&s, None, ExtractMode::Transcript).unwrap();
        assert_eq!(f.name, "conversations");
        let f = resolve(&s, None, ExtractMode::None).unwrap();
        assert_eq!((f.name.as_str(), f.shape), ("text", Shape::Strings));
        let s = schema(vec![("id", DataType::Int64), ("chat", openai())]);
        assert_eq!(
            err(&s, None, ExtractMode::LastUser),
            "no --text-field given, and the dataset has no `messages` or `conversations` column for --extract last-user; columns: id, chat (pass --text-field)"
        );
    }

    #[test]
    fn a_dotted_path_reaches_into_structs() {
        let inner = DataType::Struct(Fields::from(vec![
            Field::new("lang", DataType::Utf8, true),
            Field::new("turns", openai(), true),
        ]));
        let s = schema(vec![("id", DataType::Int64), ("conversation", inner)]);
        let f = resolve(&s, Some("conversation.turns"), ExtractMode::PerTurn).unwrap();
        assert_eq!((f.column, f.children.clone()), (1, vec![1]));
        assert_eq!(
            err(&s, Some("conversation.messages"), ExtractMode::PerTurn),
            "text field `conversation.messages`: `conversation` has no field `messages`; its fields: lang, turns"
        );
        assert_eq!(
            err(&s, Some("conversation.lang.x"), ExtractMode::None),
            "text field `conversation.lang.x`: `conversation.lang` is of type Utf8, not a struct with a field `x`"
        );
        assert_eq!(
            err(&s, Some("talk.turns"), ExtractMode::PerTurn),
            "text field `talk.turns` is not a column of the dataset; columns: id, conversation"
        );
        let f = resolve(&s, Some("conversation.lang"), ExtractMode::None).unwrap();
        assert_eq!(f.shape, Shape::Strings);
    }

    #[test]
    fn missing_field_lists_columns() {
        let s = schema(vec![("messages", openai())]);
        assert_eq!(
            err(&s, Some("text"), ExtractMode::None),
            "text field `text` is not a column of the dataset; columns: messages"
        );
        assert!(err(&s, None, ExtractMode::None).contains("columns: messages"));
        let e = err(&s, Some("messages"), ExtractMode::None);
        assert!(e.contains("--extract first-assistant"), "{e}");
        let empty = Schema::empty();
        assert!(err(&empty, Some("text"), ExtractMode::None).contains("it has no columns"));
    }

    #[test]
    fn wrong_types_are_named() {
        let s = |dt: DataType| schema(vec![("t", dt)]);
        let none = ExtractMode::None;
        assert_eq!(
            err(&s(DataType::Int64), Some("t"), none),
            "text field `t` is of type Int64, not a string"
        );
        assert_eq!(
            err(&s(DataType::Null), Some("t"), none),
            "text field `t` holds only nulls (type Null), not strings"
        );
        let strings = list_of(DataType::Utf8);
        assert_eq!(
            err(&s(strings.clone()), Some("t"), none),
            "text field `t` is of type List(Utf8), not a string"
        );

        let fa = ExtractMode::FirstAssistant;
        assert_eq!(
            err(&s(strings), Some("t"), fa),
            "text field `t` is a list of Utf8, not of {role, content} turns, so --extract first-assistant cannot use it"
        );
        let odd = list_of(turn(
            ("speaker", DataType::Utf8),
            ("content", DataType::Int32),
        ));
        let e = err(&s(odd), Some("t"), ExtractMode::Transcript);
        assert!(
            e.contains("(its turns have no `role` or `from` and `content` of type Int32, neither a string nor a list of {type, text} parts), so --extract transcript cannot use it"),
            "{e}"
        );
        let e = err(&s(DataType::Utf8), Some("t"), fa);
        assert!(
            e.starts_with("text field `t` is of type Utf8, not a list of {role, content} turns"),
            "{e}"
        );
        assert_eq!(
            err(&s(DataType::Null), Some("t"), fa),
            "text field `t` holds only nulls (type Null), not conversations, so --extract first-assistant cannot use it"
        );
    }
}
