//! Every extraction mode on every conversation shape (OpenAI `{role, content}`, ShareGPT
//! `{from, value}`, content as a list of parts, a nested path, other Arrow layouts), on
//! record batches built in memory.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::args::{Cli, Command};

fn args(extra: &[&str]) -> EmbedArgs {
    let mut full = vec!["chatspace", "embed-hf", "--dataset", "d.parquet"];
    full.extend_from_slice(extra);
    let Command::EmbedHf(a) = Cli::try_parse_from(full).unwrap().command else {
        unreachable!("embed-hf parsed")
    };
    a
}

fn list_of(dt: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", dt, true)))
}

fn strukt(fields: &[(&str, DataType)]) -> DataType {
    DataType::Struct(Fields::from(
        fields
            .iter()
            .map(|(n, dt)| Field::new(*n, dt.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A batch with one column `name` of type `dt`, decoded from one JSON value per row.
fn batch(name: &str, dt: DataType, rows: &[Value]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(name, dt, true)]));
    let body: String = rows
        .iter()
        .map(|v| format!("{}\n", json!({ name: v })))
        .collect();
    arrow::json::ReaderBuilder::new(schema)
        .build(Cursor::new(body))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A turn: role and content (`None` for null).
type Turn = (&'static str, Option<&'static str>);

/// The conversations every shape is tested with.
fn conversations() -> Vec<Option<Vec<Turn>>> {
    vec![
        Some(vec![
            ("system", Some("Be brief.")),
            ("user", Some(" Hi ")),
            ("assistant", Some("Hello!")),
            ("user", Some("Bye")),
            ("assistant", Some("  See you \n")),
        ]),
        Some(vec![("user", Some("only a question"))]),
        None,
        Some(vec![]),
        Some(vec![
            ("user", Some("q")),
            ("assistant", Some(" \u{3000}\x1f")),
            ("MODEL", Some("second")),
        ]),
        Some(vec![
            ("tool", Some("42")),
            ("assistant", None),
            ("assistant", Some("done")),
        ]),
    ]
}

/// How a shape writes a conversation: its column type, role names and turn JSON.
struct ShapeCase {
    name: &'static str,
    dt: DataType,
    role: fn(&str) -> &str,
    turn: fn(&str, Option<&str>) -> Value,
}

fn openai() -> ShapeCase {
    ShapeCase {
        name: "openai",
        dt: list_of(strukt(&[
            ("role", DataType::Utf8),
            ("content", DataType::Utf8),
        ])),
        role: |r| r,
        turn: |r, c| json!({"role": r, "content": c}),
    }
}

fn sharegpt() -> ShapeCase {
    ShapeCase {
        name: "sharegpt",
        dt: list_of(strukt(&[
            ("from", DataType::Utf8),
            ("value", DataType::Utf8),
        ])),
        role: |r| match r {
            "user" => "human",
            "assistant" => "gpt",
            "MODEL" => "GPT",
            other => other,
        },
        turn: |r, c| json!({"from": r, "value": c}),
    }
}

fn parts() -> ShapeCase {
    let part = strukt(&[("type", DataType::Utf8), ("text", DataType::Utf8)]);
    ShapeCase {
        name: "parts",
        dt: list_of(strukt(&[
            ("role", DataType::Utf8),
            ("content", list_of(part)),
        ])),
        role: |r| r,
        // An image part before the text, which is ignored.
        turn: |r, c| json!({"role": r, "content": c.map(|c| json!([{"type": "image", "text": null}, {"type": "text", "text": c}]))}),
    }
}

fn rows_of(shape: &ShapeCase) -> Vec<Value> {
    conversations()
        .into_iter()
        .map(|conv| match conv {
            None => Value::Null,
            Some(turns) => Value::Array(
                turns
                    .into_iter()
                    .map(|(r, c)| (shape.turn)((shape.role)(r), c))
                    .collect(),
            ),
        })
        .collect()
}

/// One output: `(row, turn, role, text)`.
type Out = (u32, i32, &'static str, &'static str);

/// What a mode gives on [`conversations`]: `(row, turn, role, text)` per output, with roles
/// as the plain (OpenAI) names, and the skip reasons.
fn expected(mode: &str) -> (Vec<Out>, Vec<(&'static str, u64)>) {
    match mode {
        "first-assistant" => (
            vec![
                (0, 0, "", "Hello!"),
                (4, 0, "", "second"),
                (5, 0, "", "done"),
            ],
            vec![("no assistant turn", 2), ("null conversation", 1)],
        ),
        "last-assistant" => (
            vec![
                (0, 0, "", "See you"),
                (4, 0, "", "second"),
                (5, 0, "", "done"),
            ],
            vec![("no assistant turn", 2), ("null conversation", 1)],
        ),
        "first-user" => (
            vec![
                (0, 0, "", "Hi"),
                (1, 0, "", "only a question"),
                (4, 0, "", "q"),
            ],
            vec![("no user turn", 2), ("null conversation", 1)],
        ),
        "last-user" => (
            vec![
                (0, 0, "", "Bye"),
                (1, 0, "", "only a question"),
                (4, 0, "", "q"),
            ],
            vec![("no user turn", 2), ("null conversation", 1)],
        ),
        "transcript" => (
            vec![
                (
                    0,
                    0,
                    "",
                    "system: Be brief.\nuser: Hi\nassistant: Hello!\nuser: Bye\nassistant: See you",
                ),
                (1, 0, "", "user: only a question"),
                (4, 0, "", "user: q\nMODEL: second"),
                (5, 0, "", "tool: 42\nassistant: done"),
            ],
            vec![("no turn", 1), ("null conversation", 1)],
        ),
        "per-turn" => (
            vec![
                (0, 0, "system", "Be brief."),
                (0, 1, "user", "Hi"),
                (0, 2, "assistant", "Hello!"),
                (0, 3, "user", "Bye"),
                (0, 4, "assistant", "See you"),
                (1, 0, "user", "only a question"),
                (4, 0, "user", "q"),
                (4, 2, "MODEL", "second"),
                (5, 0, "tool", "42"),
                (5, 2, "assistant", "done"),
            ],
            vec![("no turn", 1), ("null conversation", 1)],
        ),
        "per-assistant-turn" => (
            vec![
                (0, 2, "assistant", "Hello!"),
                (0, 4, "assistant", "See you"),
                (4, 2, "MODEL", "second"),
                (5, 2, "assistant", "done"),
            ],
            vec![("no assistant turn", 2), ("null conversation", 1)],
        ),
        other => panic!("no expectation for {other}"),
    }
}

const MODES: [&str; 7] = [
    "first-assistant",
    "last-assistant",
    "first-user",
    "last-user",
    "transcript",
    "per-turn",
    "per-assistant-turn",
];

fn run(b: &RecordBatch, flags: &[&str]) -> Extracted {
    let ex = Extractor::new(&b.schema(), &args(flags)).unwrap();
    ex.extract(b).unwrap()
}

fn roles_of(ex: &Extracted) -> Vec<String> {
    ex.roles.as_ref().map_or(Vec::new(), |r| {
        r.as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect()
    })
}

fn reasons(s: &SkipReasons) -> Vec<(&str, u64)> {
    s.iter().map(|(k, v)| (*k, *v)).collect()
}

#[test]
fn every_mode_on_every_shape() {
    for shape in [openai(), sharegpt(), parts()] {
        let b = batch("messages", shape.dt.clone(), &rows_of(&shape));
        for mode in MODES {
            let ex = run(&b, &["--extract", mode]);
            let (want, skipped) = expected(mode);
            let at = format!("{} {mode}", shape.name);
            assert_eq!(
                ex.keep,
                want.iter().map(|w| w.0).collect::<Vec<_>>(),
                "{at}"
            );
            let texts: Vec<String> = want
                .iter()
                .map(|w| {
                    // Transcripts name roles as the dataset writes them.
                    w.3.lines()
                        .map(|l| match l.split_once(": ") {
                            Some((r, c)) if mode == "transcript" => {
                                format!("{}: {c}", (shape.role)(r))
                            }
                            _ => l.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            assert_eq!(ex.texts, texts, "{at}");
            assert_eq!(reasons(&ex.skipped), skipped, "{at}");
            if mode.starts_with("per-") {
                assert_eq!(ex.turns, want.iter().map(|w| w.1).collect::<Vec<_>>());
                let roles: Vec<&str> = want.iter().map(|w| (shape.role)(w.2)).collect();
                assert_eq!(roles_of(&ex), roles, "{at}");
                assert_eq!(
                    reasons(&ex.turns_skipped),
                    vec![("empty content", 1), ("null content", 1)],
                    "{at}"
                );
            } else {
                assert!(ex.turns.is_empty() && ex.roles.is_none(), "{at}");
                assert!(ex.turns_skipped.is_empty(), "{at}");
            }
        }
    }
}

#[test]
fn filter_role_and_system_prompt() {
    let shape = sharegpt();
    let b = batch("conversations", shape.dt.clone(), &rows_of(&shape));
    let ex = run(&b, &["--extract", "transcript", "--system-prompt", "drop"]);
    assert_eq!(
        ex.texts[0],
        "human: Hi\ngpt: Hello!\nhuman: Bye\ngpt: See you"
    );
    let ex = run(&b, &["--extract", "transcript", "--filter-role", "user"]);
    assert_eq!(
        ex.texts,
        vec![
            "human: Hi\nhuman: Bye",
            "human: only a question",
            "human: q"
        ]
    );
    assert_eq!(
        reasons(&ex.skipped),
        vec![("no turn", 2), ("null conversation", 1)]
    );
    let ex = run(
        &b,
        &["--extract", "per-turn", "--filter-role", "system,tool"],
    );
    assert_eq!(ex.texts, vec!["Be brief.", "42"]);
    assert_eq!(ex.keep, vec![0, 5]);
    assert_eq!(ex.turns, vec![0, 0]);
    assert_eq!(roles_of(&ex), vec!["system", "tool"]);
    // Turns left out by the filter are not counted as skipped; selected ones without text are.
    assert!(ex.turns_skipped.is_empty());
    let ex = run(&b, &["--extract", "per-turn", "--filter-role", "gpt"]);
    assert_eq!(ex.texts, vec!["Hello!", "See you", "second", "done"]);
    assert_eq!(
        reasons(&ex.turns_skipped),
        vec![("empty content", 1), ("null content", 1)]
    );
}

#[test]
fn parts_are_joined_and_non_text_parts_ignored() {
    let shape = parts();
    let rows = vec![json!([
        {"role": "user", "content": [
            {"type": "text", "text": " Look "},
            {"type": "image", "text": null},
            {"type": "image_url", "text": "not content"},
            {"type": "text", "text": "  "},
            {"type": null, "text": "here"},
            {"type": "input_text", "text": "and here"},
        ]},
        {"role": "user", "content": [{"type": "image", "text": null}]},
        {"role": "user", "content": []},
        {"role": "user", "content": null},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ])];
    let b = batch("messages", shape.dt.clone(), &rows);
    let ex = run(&b, &["--extract", "per-turn"]);
    assert_eq!(ex.texts, vec!["Look\nhere\nand here", "ok"]);
    assert_eq!(ex.turns, vec![0, 4]);
    assert_eq!(
        reasons(&ex.turns_skipped),
        vec![("empty content", 2), ("null content", 1)]
    );
    let ex = run(&b, &["--extract", "transcript"]);
    assert_eq!(ex.texts, vec!["user: Look\nhere\nand here\nassistant: ok"]);
}

#[test]
fn nested_path_with_null_parents() {
    let turns = openai().dt;
    let dt = strukt(&[("lang", DataType::Utf8), ("turns", turns)]);
    let rows = vec![
        json!({"lang": "en", "turns": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        Value::Null,
        json!({"lang": "de", "turns": null}),
        json!({"lang": "fr", "turns": [{"role": "assistant", "content": "c"}]}),
    ];
    let b = batch("conversation", dt, &rows);
    let flags = ["--text-field", "conversation.turns", "--extract"];
    let ex = run(&b, &[&flags[..], &["per-assistant-turn"]].concat());
    assert_eq!(ex.keep, vec![0, 3]);
    assert_eq!(ex.texts, vec!["b", "c"]);
    assert_eq!(ex.turns, vec![1, 0]);
    assert_eq!(reasons(&ex.skipped), vec![("null conversation", 2)]);
    let ex = run(&b, &["--text-field", "conversation.lang"]);
    assert_eq!(ex.texts, vec!["en", "de", "fr"]);
    assert_eq!(reasons(&ex.skipped), vec![("null text", 1)]);
}

#[test]
fn other_arrow_layouts_read_alike() {
    let shape = openai();
    let b = batch("messages", shape.dt.clone(), &rows_of(&shape));
    let want = run(&b, &["--extract", "per-turn"]);
    let large_strings = strukt(&[
        ("role", DataType::LargeUtf8),
        ("content", DataType::Utf8View),
    ]);
    let layouts = [
        DataType::LargeList(Arc::new(Field::new("item", large_strings.clone(), true))),
        DataType::ListView(Arc::new(Field::new("item", large_strings.clone(), true))),
        DataType::LargeListView(Arc::new(Field::new("item", large_strings, true))),
    ];
    for dt in layouts {
        let cast = arrow::compute::cast(b.column(0), &dt).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("messages", dt.clone(), true)]));
        let other = RecordBatch::try_new(schema, vec![cast]).unwrap();
        let got = run(&other, &["--extract", "per-turn"]);
        assert_eq!(got.texts, want.texts, "{dt}");
        assert_eq!(got.keep, want.keep, "{dt}");
        assert_eq!(got.turns, want.turns, "{dt}");
        assert_eq!(roles_of(&got), roles_of(&want), "{dt}");
        assert_eq!(got.roles.unwrap().data_type(), &DataType::Utf8);
    }
    // A batch sliced as the reader does for --max-rows reads its own rows only.
    let sliced = b.slice(4, 2);
    let ex = run(&sliced, &["--extract", "per-assistant-turn"]);
    assert_eq!(ex.keep, vec![0, 1]);
    assert_eq!(ex.texts, vec!["second", "done"]);
    assert_eq!(roles_of(&ex), vec!["MODEL", "assistant"]);
}

#[test]
fn drop_front_keeps_texts_turns_and_roles_together() {
    let shape = openai();
    let b = batch("messages", shape.dt.clone(), &rows_of(&shape));
    let mut ex = run(&b, &["--extract", "per-turn"]);
    ex.drop_front(3);
    assert_eq!(ex.keep[0], 0);
    assert_eq!((ex.turn(0), ex.texts[0].as_str()), (3, "Bye"));
    assert_eq!(roles_of(&ex)[0], "user");
    assert_eq!(roles_of(&ex).len(), ex.texts.len());
}

fn strings(values: &[Option<&str>]) -> RecordBatch {
    let array = Arc::new(StringArray::from(values.to_vec()));
    let schema = Schema::new(vec![Field::new("text", DataType::Utf8, true)]);
    RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
}

#[test]
fn null_and_blank_texts_are_skipped_and_counted() {
    let b = strings(&[
        Some("a"),
        None,
        Some(""),
        Some(" \t\n\u{3000}"),
        Some("\x1c\x1f"),
        Some(" b "),
    ]);
    let ex = run(&b, &[]);
    assert_eq!(ex.keep, vec![0, 5]);
    assert_eq!(ex.texts, vec!["a", " b "]);
    assert_eq!(ex.skipped.get("null text"), Some(&1));
    assert_eq!(ex.skipped.get("empty text"), Some(&3));
}

#[test]
fn null_roles_and_contents_are_not_matches() {
    let shape = openai();
    let rows = vec![json!([
        {"role": null, "content": "x"},
        null,
        {"role": "assistant", "content": null},
        {"role": "assistant", "content": "\x1c \x1f"},
        {"role": "assistant", "content": " yes "},
    ])];
    let b = batch("messages", shape.dt, &rows);
    assert_eq!(
        run(&b, &["--extract", "first-assistant"]).texts,
        vec!["yes"]
    );
    assert_eq!(
        run(&b, &["--extract", "transcript"]).texts,
        vec!["assistant: yes"]
    );
    let ex = run(&b, &["--extract", "per-turn"]);
    assert_eq!(
        (ex.texts.clone(), ex.turns.clone()),
        (vec!["yes".to_string()], vec![4])
    );
    assert_eq!(
        reasons(&ex.turns_skipped),
        vec![
            ("empty content", 1),
            ("null content", 1),
            ("null role", 1),
            ("null turn", 1)
        ]
    );
}

#[test]
fn descriptions_name_the_field_and_mode() {
    let shape = openai();
    let b = batch("messages", shape.dt, &[json!([])]);
    let d = |flags: &[&str]| {
        Extractor::new(&b.schema(), &args(flags))
            .unwrap()
            .describe()
            .unwrap()
    };
    assert_eq!(
        d(&["--extract-first-assistant"]),
        "Extracted first assistant response from 'messages' field; skipped rows without assistant responses"
    );
    assert!(d(&["--extract", "last-user"]).starts_with("Extracted last user message"));
    let t = d(&["--extract", "transcript", "--system-prompt", "drop"]);
    assert!(t.contains("leaving system turns out"), "{t}");
    let p = d(&["--extract", "per-turn", "--filter-role", "user"]);
    assert!(p.contains("turn of roles user"), "{p}");
}
