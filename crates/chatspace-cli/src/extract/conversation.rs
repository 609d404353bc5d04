//! Turns of conversations: the modes that take one turn (`first-assistant`, `last-assistant`,
//! `first-user`, `last-user`), all of them as one transcript, or each as its own output row
//! (`per-turn`, `per-assistant-turn`).
//!
//! A turn has text when its struct, role and content are not null and its content, stripped as
//! Python's `str.strip()` does, is not empty. Content given as a list of parts contributes its
//! text parts (type `text`, `input_text` or `output_text`, or no type), each stripped, blank ones
//! left out, joined with a newline; other parts (images, audio) are ignored.

use std::borrow::Cow;
use std::ops::Range;

use anyhow::Result;
use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, GenericListViewArray, StructArray, UInt64Array,
};
use arrow::datatypes::DataType;

use super::Extracted;
use super::field::{Column, TurnShape};
use super::roles::{RoleFilter, RoleKind, kind};
use super::text::{Strings, cap_in_place, capped, strip};
use crate::args::ExtractMode;

/// Part types whose `text` is content (OpenAI's chat and responses formats, and the Hub's
/// multimodal datasets).
const TEXT_PARTS: [&str; 3] = ["text", "input_text", "output_text"];

/// Separator between the text parts of one turn, and between the lines of a transcript.
pub const JOIN: &str = "\n";

/// A list array in any of Arrow's four list layouts.
#[derive(Clone, Copy)]
enum Lists<'a> {
    Small(&'a GenericListArray<i32>),
    Large(&'a GenericListArray<i64>),
    View(&'a GenericListViewArray<i32>),
    LargeView(&'a GenericListViewArray<i64>),
}

impl<'a> Lists<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        Some(match array.data_type() {
            DataType::List(_) => Lists::Small(array.as_list_opt()?),
            DataType::LargeList(_) => Lists::Large(array.as_list_opt()?),
            DataType::ListView(_) => Lists::View(array.as_list_view_opt()?),
            DataType::LargeListView(_) => Lists::LargeView(array.as_list_view_opt()?),
            _ => return None,
        })
    }

    /// Positions in [`Lists::values`] of the items of list `i`.
    fn range(&self, i: usize) -> Range<usize> {
        match self {
            Lists::Small(a) => a.value_offsets()[i] as usize..a.value_offsets()[i + 1] as usize,
            Lists::Large(a) => a.value_offsets()[i] as usize..a.value_offsets()[i + 1] as usize,
            Lists::View(a) => {
                let start = a.value_offsets()[i] as usize;
                start..start + a.value_sizes()[i] as usize
            }
            Lists::LargeView(a) => {
                let start = a.value_offsets()[i] as usize;
                start..start + a.value_sizes()[i] as usize
            }
        }
    }

    fn values(&self) -> &'a ArrayRef {
        match self {
            Lists::Small(a) => a.values(),
            Lists::Large(a) => a.values(),
            Lists::View(a) => a.values(),
            Lists::LargeView(a) => a.values(),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Lists::Small(a) => a.is_null(i),
            Lists::Large(a) => a.is_null(i),
            Lists::View(a) => a.is_null(i),
            Lists::LargeView(a) => a.is_null(i),
        }
    }
}

/// A turn's content: a string, or a list of parts.
enum Content<'a> {
    Text(Strings<'a>),
    Parts {
        lists: Lists<'a>,
        parts: &'a StructArray,
        text: Strings<'a>,
        kind: Option<Strings<'a>>,
    },
}

impl<'a> Content<'a> {
    /// The text of turn `t`, stripped (empty when it has none); `None` when the content is null.
    fn text(&self, t: usize) -> Option<Cow<'a, str>> {
        match self {
            Content::Text(s) => s.get(t).map(|s| Cow::Borrowed(strip(s))),
            Content::Parts {
                lists,
                parts,
                text,
                kind,
            } => {
                if lists.is_null(t) {
                    return None;
                }
                let mut out: Cow<'a, str> = Cow::Borrowed("");
                for p in lists.range(t) {
                    if parts.is_null(p) {
                        continue;
                    }
                    if let Some(k) = kind.and_then(|k| k.get(p))
                        && !TEXT_PARTS.contains(&k)
                    {
                        continue;
                    }
                    let Some(part) = text.get(p).map(strip).filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    if out.is_empty() {
                        out = Cow::Borrowed(part);
                    } else {
                        let joined = out.to_mut();
                        joined.push_str(JOIN);
                        joined.push_str(part);
                    }
                }
                Some(out)
            }
        }
    }
}

/// The turns of one record batch's conversation column, ready to be read by position.
pub struct Conversations<'a> {
    lists: Lists<'a>,
    turns: &'a StructArray,
    role_array: &'a ArrayRef,
    role: Strings<'a>,
    content: Content<'a>,
}

/// The error for a batch whose arrays do not have the type the schema said (a bug).
fn changed(what: &str) -> anyhow::Error {
    anyhow::anyhow!("the conversation column's {what} changed type while reading")
}

impl<'a> Conversations<'a> {
    /// Views `column` (checked to have `shape` by [`super::field::resolve`]).
    pub fn new(column: &'a ArrayRef, shape: &TurnShape) -> Result<Self> {
        let lists = Lists::of(column.as_ref()).ok_or_else(|| changed("list"))?;
        let turns = lists
            .values()
            .as_struct_opt()
            .ok_or_else(|| changed("turns"))?;
        let role_array = turns.column(shape.role);
        let role = Strings::of(role_array.as_ref()).ok_or_else(|| changed("role"))?;
        let content_array = turns.column(shape.content);
        let content = match &shape.parts {
            None => Content::Text(
                Strings::of(content_array.as_ref()).ok_or_else(|| changed("content"))?,
            ),
            Some(p) => {
                let lists = Lists::of(content_array.as_ref()).ok_or_else(|| changed("content"))?;
                let parts = lists
                    .values()
                    .as_struct_opt()
                    .ok_or_else(|| changed("parts"))?;
                let text =
                    Strings::of(parts.column(p.text).as_ref()).ok_or_else(|| changed("text"))?;
                let kind = match p.kind {
                    Some(k) => {
                        Some(Strings::of(parts.column(k).as_ref()).ok_or_else(|| changed("type"))?)
                    }
                    None => None,
                };
                Content::Parts {
                    lists,
                    parts,
                    text,
                    kind,
                }
            }
        };
        Ok(Conversations {
            lists,
            turns,
            role_array,
            role,
            content,
        })
    }

    /// The role of turn `t` (as written) and its kind; `None` when the turn or its role is null.
    fn role(&self, t: usize) -> Option<(&'a str, RoleKind)> {
        if self.turns.is_null(t) {
            return None;
        }
        let r = self.role.get(t)?;
        Some((r, kind(r)))
    }

    /// The text of turn `t` when it is of kind `want` and has text.
    fn text_of(&self, t: usize, want: RoleKind) -> Option<Cow<'a, str>> {
        match self.role(t) {
            Some((_, k)) if k == want => self.content.text(t).filter(|s| !s.is_empty()),
            _ => None,
        }
    }
}

/// What a conversation mode takes, with its settings.
#[derive(Debug, Clone)]
pub enum Take {
    /// One turn of a kind: the first (or last) with text.
    One {
        /// The kind of speaker.
        kind: RoleKind,
        /// The last such turn rather than the first.
        last: bool,
    },
    /// Every selected turn with text, as `role: content` lines.
    Transcript {
        /// The turns selected.
        filter: RoleFilter,
        /// Leave system turns out.
        drop_system: bool,
    },
    /// Every selected turn with text, each its own output row.
    Each {
        /// The turns selected.
        filter: RoleFilter,
        /// The skip reason of a conversation without one.
        reason: &'static str,
    },
}

impl Take {
    /// What `mode` takes (`filter` for transcript and per-turn); `None` for `--extract none`.
    pub fn new(mode: ExtractMode, filter: RoleFilter, drop_system: bool) -> Option<Self> {
        let one = |kind, last| Take::One { kind, last };
        Some(match mode {
            ExtractMode::None => return None,
            ExtractMode::FirstAssistant => one(RoleKind::Assistant, false),
            ExtractMode::LastAssistant => one(RoleKind::Assistant, true),
            ExtractMode::FirstUser => one(RoleKind::User, false),
            ExtractMode::LastUser => one(RoleKind::User, true),
            ExtractMode::Transcript => Take::Transcript {
                filter,
                drop_system,
            },
            ExtractMode::PerTurn => Take::Each {
                filter,
                reason: "no turn",
            },
            ExtractMode::PerAssistantTurn => Take::Each {
                filter: RoleFilter::only(RoleKind::Assistant),
                reason: "no assistant turn",
            },
        })
    }

    /// The skip reason of a conversation that gives no text.
    fn reason(&self) -> &'static str {
        match self {
            Take::One {
                kind: RoleKind::User,
                ..
            } => "no user turn",
            Take::One { .. } => "no assistant turn",
            Take::Transcript { .. } => "no turn",
            Take::Each { reason, .. } => reason,
        }
    }
}

/// `text` as an owned string of at most [`super::text::MAX_TEXT_BYTES`], copied only when
/// borrowed.
fn owned(text: Cow<'_, str>) -> String {
    match text {
        Cow::Borrowed(s) => capped(s).to_string(),
        Cow::Owned(mut s) => {
            cap_in_place(&mut s);
            s
        }
    }
}

/// Takes the texts of the first `rows` conversations of `column` into `out`.
pub fn extract(
    column: &Column,
    conv: &Conversations,
    rows: usize,
    take: &Take,
    out: &mut Extracted,
) -> Result<()> {
    let reason = take.reason();
    // Per-turn modes: where each output's turn is in the turns array, for its role.
    let mut positions: Vec<u64> = Vec::new();
    for i in 0..rows {
        if column.is_null(i) {
            out.skip("null conversation");
            continue;
        }
        let turns = conv.lists.range(i);
        match take {
            Take::One { kind, last } => {
                let found = if *last {
                    turns.rev().find_map(|t| conv.text_of(t, *kind))
                } else {
                    turns.into_iter().find_map(|t| conv.text_of(t, *kind))
                };
                match found {
                    Some(text) => out.push(i, owned(text)),
                    None => out.skip(reason),
                }
            }
            Take::Transcript {
                filter,
                drop_system,
            } => {
                let mut lines = String::new();
                for t in turns {
                    let Some((role, k)) = conv.role(t) else {
                        continue;
                    };
                    if !filter.matches(role, k) || (*drop_system && k == RoleKind::System) {
                        continue;
                    }
                    let Some(text) = conv.content.text(t).filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    if !lines.is_empty() {
                        lines.push_str(JOIN);
                    }
                    lines.push_str(role);
                    lines.push_str(": ");
                    lines.push_str(&text);
                }
                if lines.is_empty() {
                    out.skip(reason);
                } else {
                    cap_in_place(&mut lines);
                    out.push(i, lines);
                }
            }
            Take::Each { filter, .. } => {
                let before = out.texts.len();
                let start = turns.start;
                for t in turns {
                    if conv.turns.is_null(t) {
                        out.skip_turn("null turn");
                        continue;
                    }
                    let Some(role) = conv.role.get(t) else {
                        out.skip_turn("null role");
                        continue;
                    };
                    if !filter.matches(role, kind(role)) {
                        continue;
                    }
                    match conv.content.text(t) {
                        None => out.skip_turn("null content"),
                        Some(text) if text.is_empty() => out.skip_turn("empty content"),
                        Some(text) => {
                            out.push(i, owned(text));
                            out.turns.push((t - start) as i32);
                            positions.push(t as u64);
                        }
                    }
                }
                if out.texts.len() == before {
                    out.skip(reason);
                }
            }
        }
    }
    if matches!(take, Take::Each { .. }) {
        let roles = arrow::compute::take(
            conv.role_array.as_ref(),
            &UInt64Array::from(positions),
            None,
        )?;
        out.roles = Some(if *roles.data_type() == DataType::Utf8 {
            roles
        } else {
            arrow::compute::cast(&roles, &DataType::Utf8)?
        });
    }
    Ok(())
}
