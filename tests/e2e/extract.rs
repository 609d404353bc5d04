//! `--extract` modes end to end: hand-made conversations in each shape seen on the Hub (OpenAI
//! `{role, content}` in JSON Lines, ShareGPT `{from, value}` in Parquet, content as a list of
//! parts under a nested path), with the exact texts each mode must give, read back by pyarrow
//! and DuckDB; every mode on real chat data, against an independent Python implementation; and
//! per-turn output through an interruption and `--resume`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use chatspace_tests::{
    Ran, bin, check_output, model, python, read_json, run, run_ok, shared, wait_for_file,
};

/// One expected output row: `(row_index, turn_index, role, text)`; turn and role are checked
/// only in per-turn modes (pass `-1` and `""` otherwise).
type Want = (i64, i32, &'static str, &'static str);

/// Runs `chatspace embed-hf` on `dataset` with null-384 and `flags`, into `out`, with small
/// units and shards so that jobs and shards split conversations.
fn embed(dataset: &Path, flags: &[&str], out: &Path) -> Ran {
    run(bin("chatspace")
        .env("CHATSPACE_LOG", "error")
        .arg("embed-hf")
        .arg("--dataset")
        .arg(dataset)
        .arg("--model")
        .arg(model("null-384"))
        .args(["--unit-rows", "2", "--rows-per-shard", "3", "--no-progress"])
        .args(flags)
        .arg("--output-root")
        .arg(out))
}

/// Writes `rows` (JSON objects) as a Parquet file with pyarrow, in the schema that the Python
/// expression `schema` (using `pa`) gives.
fn write_parquet(path: &Path, schema: &str, rows: &Value) {
    let script = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
schema = eval(sys.argv[2], {"pa": pa})
pq.write_table(pa.Table.from_pylist(json.loads(sys.argv[3]), schema=schema), sys.argv[1])
"#;
    run_ok(
        python()
            .args(["-c", script])
            .arg(path)
            .arg(schema)
            .arg(rows.to_string()),
    );
}

/// Checks one run: exit 0, the shards' rows (pyarrow and DuckDB) are exactly `want`, the manifest
/// counts them and the `skipped` input rows by reason, and per-turn modes add `turn_index` and
/// `role` columns (others do not).
fn check_run(
    dataset: &Path,
    name: &str,
    flags: &[&str],
    want: &[Want],
    skipped: Value,
    turns_skipped: Value,
) {
    let out = tempfile::tempdir().unwrap();
    let ran = embed(dataset, flags, out.path());
    let at = format!("{name} {flags:?}");
    assert_eq!(ran.code, Some(0), "{at}: {}", ran.stderr);
    let per_turn = flags
        .iter()
        .any(|f| *f == "per-turn" || *f == "per-assistant-turn");
    let got = check_output(&[
        "rows",
        out.path()
            .join("embeddings/null-384")
            .join(name)
            .join("train")
            .to_str()
            .unwrap(),
    ]);
    let want_rows: Vec<Value> = want
        .iter()
        .map(|&(row, turn, role, text)| {
            if per_turn {
                json!([row, turn, role, text])
            } else {
                json!([row, null, null, text])
            }
        })
        .collect();
    assert_eq!(got["pyarrow"], Value::Array(want_rows.clone()), "{at}");
    assert_eq!(got["duckdb"], Value::Array(want_rows), "{at}");
    let schema = &got["schema"];
    if per_turn {
        assert_eq!(schema["turn_index"], "int32", "{at}");
        assert_eq!(schema["role"], "string", "{at}");
    } else {
        assert!(schema.get("turn_index").is_none(), "{at}: {schema}");
    }
    let manifest = read_json(
        &out.path()
            .join("indexes/null-384")
            .join(name)
            .join("manifest-train.json"),
    );
    assert_eq!(manifest["status"], "complete", "{at}");
    assert_eq!(manifest["rows_total"], want.len(), "{at}");
    assert_eq!(manifest["skipped_reasons"], skipped, "{at}");
    let total: u64 = skipped
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(manifest["rows_skipped"], total, "{at}");
    let turns = manifest.get("turns_skipped").cloned().unwrap_or(json!({}));
    assert_eq!(turns, turns_skipped, "{at}");
}

/// OpenAI-style `messages` in JSON Lines: every mode, `--system-prompt drop` and
/// `--filter-role`; the conversation column is found without `--text-field`.
#[test]
fn openai_style_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chats.jsonl");
    let rows = [
        json!({"id": 0, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "  What is 2+2? "},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": " 6\n"},
        ]}),
        json!({"id": 1, "messages": [{"role": "user", "content": "Hello?"}]}),
        json!({"id": 2, "messages": null}),
        json!({"id": 3, "messages": [
            {"role": "assistant", "content": "   "},
            {"role": "Assistant", "content": "Second try"},
            {"role": "user", "content": ""},
        ]}),
    ];
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&file, body).unwrap();
    let null = json!({"null conversation": 1});
    let none = json!({});
    let cases: Vec<(Vec<&str>, Vec<Want>, Value, Value)> = vec![
        (
            vec!["--extract", "first-assistant"],
            vec![(0, -1, "", "4"), (3, -1, "", "Second try")],
            json!({"null conversation": 1, "no assistant turn": 1}),
            none.clone(),
        ),
        (
            vec!["--extract", "last-assistant"],
            vec![(0, -1, "", "6"), (3, -1, "", "Second try")],
            json!({"null conversation": 1, "no assistant turn": 1}),
            none.clone(),
        ),
        (
            vec!["--extract", "first-user"],
            vec![(0, -1, "", "What is 2+2?"), (1, -1, "", "Hello?")],
            json!({"null conversation": 1, "no user turn": 1}),
            none.clone(),
        ),
        (
            vec!["--extract", "last-user"],
            vec![(0, -1, "", "And 3+3?"), (1, -1, "", "Hello?")],
            json!({"null conversation": 1, "no user turn": 1}),
            none.clone(),
        ),
        (
            vec!["--extract", "transcript"],
            vec![
                (
                    0,
                    -1,
                    "",
                    "system: You are terse.\nuser: What is 2+2?\nassistant: 4\nuser: And 3+3?\nassistant: 6",
                ),
                (1, -1, "", "user: Hello?"),
                (3, -1, "", "Assistant: Second try"),
            ],
            null.clone(),
            none.clone(),
        ),
        (
            vec!["--extract", "transcript", "--system-prompt", "drop"],
            vec![
                (
                    0,
                    -1,
                    "",
                    "user: What is 2+2?\nassistant: 4\nuser: And 3+3?\nassistant: 6",
                ),
                (1, -1, "", "user: Hello?"),
                (3, -1, "", "Assistant: Second try"),
            ],
            null.clone(),
            none.clone(),
        ),
        (
            vec!["--extract", "transcript", "--filter-role", "user"],
            vec![
                (0, -1, "", "user: What is 2+2?\nuser: And 3+3?"),
                (1, -1, "", "user: Hello?"),
            ],
            json!({"null conversation": 1, "no turn": 1}),
            none.clone(),
        ),
        (
            vec!["--extract", "per-turn"],
            vec![
                (0, 0, "system", "You are terse."),
                (0, 1, "user", "What is 2+2?"),
                (0, 2, "assistant", "4"),
                (0, 3, "user", "And 3+3?"),
                (0, 4, "assistant", "6"),
                (1, 0, "user", "Hello?"),
                (3, 1, "Assistant", "Second try"),
            ],
            null.clone(),
            json!({"empty content": 2}),
        ),
        (
            vec!["--extract", "per-turn", "--filter-role", "system,assistant"],
            vec![
                (0, 0, "system", "You are terse."),
                (0, 2, "assistant", "4"),
                (0, 4, "assistant", "6"),
                (3, 1, "Assistant", "Second try"),
            ],
            json!({"null conversation": 1, "no turn": 1}),
            json!({"empty content": 1}),
        ),
        (
            vec!["--extract", "per-assistant-turn"],
            vec![
                (0, 2, "assistant", "4"),
                (0, 4, "assistant", "6"),
                (3, 1, "Assistant", "Second try"),
            ],
            json!({"null conversation": 1, "no assistant turn": 1}),
            json!({"empty content": 1}),
        ),
    ];
    for (flags, want, skipped, turns) in cases {
        check_run(&file, "chats", &flags, &want, skipped, turns);
    }
}

/// ShareGPT `conversations` (`from`/`value`, `human`/`gpt`) in Parquet written by pyarrow: found
/// without `--text-field`, roles kept as the dataset writes them, and an input column named
/// `role` renamed in per-turn output.
#[test]
fn sharegpt_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sharegpt.parquet");
    let turn = |from: &str, value: &str| json!({"from": from, "value": value});
    let rows = json!([
        {"id": 0, "role": "sample", "conversations": [
            turn("system", "Answer in French."),
            turn("human", "Hi"),
            turn("gpt", "Bonjour"),
            turn("human", "Thanks"),
            turn("gpt", "De rien"),
        ]},
        {"id": 1, "role": "sample", "conversations": [turn("human", "Only me")]},
        {"id": 2, "role": "sample", "conversations": [turn("gpt", "I start"), turn("human", "ok")]},
    ]);
    write_parquet(
        &file,
        r#"pa.schema([("id", pa.int64()), ("role", pa.string()), ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())])))])"#,
        &rows,
    );
    let none = json!({});
    let no_gpt = json!({"no assistant turn": 1});
    let cases: Vec<(&str, Vec<Want>, Value)> = vec![
        (
            "first-assistant",
            vec![(0, -1, "", "Bonjour"), (2, -1, "", "I start")],
            no_gpt.clone(),
        ),
        (
            "last-assistant",
            vec![(0, -1, "", "De rien"), (2, -1, "", "I start")],
            no_gpt.clone(),
        ),
        (
            "first-user",
            vec![(0, -1, "", "Hi"), (1, -1, "", "Only me"), (2, -1, "", "ok")],
            none.clone(),
        ),
        (
            "last-user",
            vec![
                (0, -1, "", "Thanks"),
                (1, -1, "", "Only me"),
                (2, -1, "", "ok"),
            ],
            none.clone(),
        ),
        (
            "transcript",
            vec![
                (
                    0,
                    -1,
                    "",
                    "system: Answer in French.\nhuman: Hi\ngpt: Bonjour\nhuman: Thanks\ngpt: De rien",
                ),
                (1, -1, "", "human: Only me"),
                (2, -1, "", "gpt: I start\nhuman: ok"),
            ],
            none.clone(),
        ),
        (
            "per-turn",
            vec![
                (0, 0, "system", "Answer in French."),
                (0, 1, "human", "Hi"),
                (0, 2, "gpt", "Bonjour"),
                (0, 3, "human", "Thanks"),
                (0, 4, "gpt", "De rien"),
                (1, 0, "human", "Only me"),
                (2, 0, "gpt", "I start"),
                (2, 1, "human", "ok"),
            ],
            none.clone(),
        ),
        (
            "per-assistant-turn",
            vec![
                (0, 2, "gpt", "Bonjour"),
                (0, 4, "gpt", "De rien"),
                (2, 0, "gpt", "I start"),
            ],
            no_gpt.clone(),
        ),
    ];
    for (mode, want, skipped) in cases {
        check_run(
            &file,
            "sharegpt",
            &["--extract", mode],
            &want,
            skipped,
            none.clone(),
        );
    }
    // The input column `role` collides with the added one in per-turn modes only.
    let out = tempfile::tempdir().unwrap();
    let ran = embed(&file, &["--extract", "per-turn"], out.path());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let got = check_output(&[
        "rows",
        out.path()
            .join("embeddings/null-384/sharegpt/train")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(got["schema"]["_original_role"], "string", "{got}");
}

/// Content as a list of parts (`[{type, text}]`, with image parts to ignore) under a nested
/// path (`--text-field conversation.turns`), with a null parent struct.
#[test]
fn parts_content_under_a_nested_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested.parquet");
    let text = |t: &str| json!({"type": "text", "text": t});
    let image = json!({"type": "image", "text": null});
    let rows = json!([
        {"id": 0, "conversation": {"lang": "en", "turns": [
            {"role": "user", "content": [text("Describe this"), image.clone()]},
            {"role": "assistant", "content": [text("A cat"), text(" on a mat. ")]},
        ]}},
        {"id": 1, "conversation": null},
        {"id": 2, "conversation": {"lang": "de", "turns": [
            {"role": "user", "content": [image.clone()]},
        ]}},
        {"id": 3, "conversation": {"lang": "fr", "turns": [
            {"role": "user", "content": [text(" Salut ")]},
            {"role": "assistant", "content": [image, text("Coucou")]},
        ]}},
    ]);
    write_parquet(
        &file,
        r#"pa.schema([("id", pa.int64()), ("conversation", pa.struct([("lang", pa.string()), ("turns", pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string())])))])))]))])"#,
        &rows,
    );
    let no = |why: &str| json!({"null conversation": 1, why: 1});
    let cases: Vec<(&str, Vec<Want>, Value, Value)> = vec![
        (
            "first-assistant",
            vec![(0, -1, "", "A cat\non a mat."), (3, -1, "", "Coucou")],
            no("no assistant turn"),
            json!({}),
        ),
        (
            "last-assistant",
            vec![(0, -1, "", "A cat\non a mat."), (3, -1, "", "Coucou")],
            no("no assistant turn"),
            json!({}),
        ),
        (
            "first-user",
            vec![(0, -1, "", "Describe this"), (3, -1, "", "Salut")],
            no("no user turn"),
            json!({}),
        ),
        (
            "last-user",
            vec![(0, -1, "", "Describe this"), (3, -1, "", "Salut")],
            no("no user turn"),
            json!({}),
        ),
        (
            "transcript",
            vec![
                (
                    0,
                    -1,
                    "",
                    "user: Describe this\nassistant: A cat\non a mat.",
                ),
                (3, -1, "", "user: Salut\nassistant: Coucou"),
            ],
            no("no turn"),
            json!({}),
        ),
        (
            "per-turn",
            vec![
                (0, 0, "user", "Describe this"),
                (0, 1, "assistant", "A cat\non a mat."),
                (3, 0, "user", "Salut"),
                (3, 1, "assistant", "Coucou"),
            ],
            no("no turn"),
            json!({"empty content": 1}),
        ),
        (
            "per-assistant-turn",
            vec![
                (0, 1, "assistant", "A cat\non a mat."),
                (3, 1, "assistant", "Coucou"),
            ],
            no("no assistant turn"),
            json!({}),
        ),
    ];
    for (mode, want, skipped, turns) in cases {
        check_run(
            &file,
            "nested",
            &["--text-field", "conversation.turns", "--extract", mode],
            &want,
            skipped,
            turns,
        );
    }
}

fn debian() -> PathBuf {
    shared().join("data/debian-chat.parquet")
}

/// Every mode on the first 2,000 rows of real chat data: the shards hold exactly what an
/// independent Python implementation computes from the same file, and the manifest counts it.
#[test]
fn every_mode_on_debian_chat() {
    let cases: [(&str, &str); 9] = [
        ("first-assistant", ""),
        ("last-assistant", ""),
        ("first-user", ""),
        ("last-user", ""),
        ("transcript", ""),
        ("transcript", "assistant"),
        ("per-turn", ""),
        ("per-turn", "user"),
        ("per-assistant-turn", ""),
    ];
    for (mode, roles) in cases {
        let out = tempfile::tempdir().unwrap();
        let mut flags = vec!["--extract", mode];
        if !roles.is_empty() {
            flags.extend(["--filter-role", roles]);
        }
        let ran = run(bin("chatspace")
            .env("CHATSPACE_LOG", "error")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(debian())
            .arg("--model")
            .arg(model("null-384"))
            .args(&flags)
            .args(["--max-rows", "2000", "--unit-rows", "300"])
            .args(["--rows-per-shard", "777", "--no-progress"])
            .arg("--output-root")
            .arg(out.path()));
        let at = format!("{mode} {roles}");
        assert_eq!(ran.code, Some(0), "{at}: {}", ran.stderr);
        let shards = out.path().join("embeddings/null-384/debian-chat/train");
        let got = check_output(&[
            "extract-reference",
            shards.to_str().unwrap(),
            debian().to_str().unwrap(),
            mode,
            "2000",
            roles,
        ]);
        assert_eq!(got["differences"], json!([]), "{at}: {got}");
        let want_rows = got["expected_rows"].as_u64().unwrap();
        assert!(want_rows >= 2000, "{at}: {got}");
        assert_eq!(got["rows"], want_rows, "{at}");
        assert_eq!(got["duckdb"]["rows"], want_rows, "{at}");
        assert_eq!(got["duckdb"]["distinct_keys"], want_rows, "{at}");
        assert_eq!(
            got["duckdb"]["distinct_row_index"], got["expected_input_rows_with_text"],
            "{at}"
        );
        let m = read_json(
            &out.path()
                .join("indexes/null-384/debian-chat/manifest-train.json"),
        );
        assert_eq!(m["status"], "complete", "{at}");
        assert_eq!(m["rows_total"], want_rows, "{at}");
        assert_eq!(m["input_rows"], 2000, "{at}");
        assert_eq!(m["skipped_reasons"], got["expected_skipped"], "{at}");
        let in_shards: u64 = (m["shards"].as_array().unwrap().iter())
            .map(|s| s["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(in_shards, want_rows, "{at}");
        let summary = read_json(
            &out.path()
                .join("indexes/null-384/debian-chat/run-train.json"),
        );
        assert_eq!(summary["rows_read"], 2000, "{at}");
    }
}

/// Flags that do not fit together, a missing default column and a bad path: one line each.
#[test]
fn extraction_mistakes_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.jsonl");
    std::fs::write(
        &file,
        "{\"id\": 1, \"chat\": {\"turns\": [{\"role\": \"user\", \"content\": \"hi\"}]}}\n",
    )
    .unwrap();
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["--extract", "first-user", "--filter-role", "user"],
            2,
            "chatspace: --filter-role works with --extract transcript or per-turn, not --extract first-user",
        ),
        (
            &["--extract", "per-turn", "--system-prompt", "drop"],
            2,
            "chatspace: --system-prompt works with --extract transcript, not --extract per-turn",
        ),
        (
            &["--extract", "per-turn"],
            3,
            "chatspace: no --text-field given, and the dataset has no `messages` or `conversations` column for --extract per-turn; columns: chat, id (pass --text-field)",
        ),
        (
            &["--extract", "per-turn", "--text-field", "chat.messages"],
            3,
            "chatspace: text field `chat.messages`: `chat` has no field `messages`; its fields: turns",
        ),
        (
            &["--text-field", "chat.turns"],
            3,
            "chatspace: text field `chat.turns` holds conversations",
        ),
    ];
    for (flags, code, want) in cases {
        let out = dir.path().join("out");
        let ran = embed(&file, flags, &out);
        assert_eq!(ran.code, Some(code), "{flags:?}: {}", ran.stderr);
        assert_eq!(ran.stderr.lines().count(), 1, "{flags:?}: {}", ran.stderr);
        assert!(ran.stderr.starts_with(want), "{flags:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"));
    }
    let out = dir.path().join("ok");
    let ran = embed(
        &file,
        &["--extract", "per-turn", "--text-field", "chat.turns"],
        &out,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
}

// Per-turn output through a kill and `--resume`: shards end inside a row's turns.

const RESUME_ROWS: &str = "6000";
/// Odd, so that shard boundaries fall between the two turns of a debian-chat row.
const RESUME_PER_SHARD: u64 = 1499;

fn per_turn_run(out: &Path, mode: &str) -> Command {
    let mut cmd = bin("chatspace");
    cmd.env("CHATSPACE_LOG", "error")
        .arg("embed-hf")
        .arg("--dataset")
        .arg(debian())
        .args(["--extract", mode])
        .arg("--model")
        .arg(model("null-384"))
        .args(["--encoders", "2", "--unit-rows", "128"])
        .args(["--max-rows", RESUME_ROWS, "--no-progress"])
        .args(["--rows-per-shard", &RESUME_PER_SHARD.to_string()])
        .arg("--output-root")
        .arg(out);
    cmd
}

fn resume_shards(out: &Path) -> PathBuf {
    out.join("embeddings/null-384/debian-chat/train")
}

fn resume_manifest(out: &Path) -> Value {
    read_json(&out.join("indexes/null-384/debian-chat/manifest-train.json"))
}

/// `{shard file: {first, last, rows, digest}}` of a run's shards, by pyarrow; the digest covers
/// the keys, texts, roles and embeddings.
fn shard_digests(out: &Path) -> Value {
    let script = r#"
import glob, hashlib, json, os, sys
import pyarrow.parquet as pq
out = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.parquet"))):
    t = pq.read_table(f, columns=["row_index", "turn_index", "role", "text", "embedding"])
    cols = [t.column(c).to_pylist() for c in t.column_names]
    keys = list(zip(cols[0], cols[1]))
    h = hashlib.sha256(json.dumps(cols).encode()).hexdigest()
    out[os.path.basename(f)] = {"first": keys[0], "last": keys[-1], "rows": len(keys), "digest": h}
print(json.dumps(out))
"#;
    let ran = run_ok(python().args(["-c", script]).arg(resume_shards(out)));
    serde_json::from_str(&ran.stdout).unwrap()
}

#[test]
fn per_turn_killed_then_resumed_matches_a_clean_run() {
    let clean_dir = tempfile::tempdir().unwrap();
    run_ok(&mut per_turn_run(clean_dir.path(), "per-turn"));
    let clean = shard_digests(clean_dir.path());
    let m = resume_manifest(clean_dir.path());
    let shards = m["shards"].as_array().unwrap();
    // The test means something only if shards end inside a row's turns.
    assert!(
        shards.iter().any(|s| s["first_turn_index"] == 1),
        "no shard starts inside a row: {m}"
    );
    assert_eq!(m["rows_total"], 12000);
    assert_eq!(m["input_rows"], 6000);

    let out = tempfile::tempdir().unwrap();
    let mut child = per_turn_run(out.path(), "per-turn").spawn().unwrap();
    wait_for_file(
        &resume_shards(out.path()).join("shard-00001.parquet"),
        &mut child,
    );
    run_ok(Command::new("kill").args(["-KILL", &child.id().to_string()]));
    child.wait().unwrap();
    let before = resume_manifest(out.path());
    let kept = before["shards"].as_array().unwrap().len();
    // Shard 1 was on disk; the manifest may not have listed it yet. Either way the last kept
    // shard ends inside a row (after an odd number of turns).
    assert!(
        kept >= 1 && kept < shards.len(),
        "the kill did not land mid-run"
    );

    // Other settings are refused, naming the extraction mode.
    let ran = run(per_turn_run(out.path(), "per-assistant-turn").arg("--resume"));
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("extract per-turn → per-assistant-turn"),
        "{}",
        ran.stderr
    );
    let ran = run(per_turn_run(out.path(), "per-turn")
        .args(["--filter-role", "user"])
        .arg("--resume"));
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("filter_role [] → [\"user\"]"),
        "{}",
        ran.stderr
    );

    let ran = run(per_turn_run(out.path(), "per-turn").arg("--resume"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let after = resume_manifest(out.path());
    assert_eq!(after["status"], "complete");
    assert_eq!(after["rows_total"], 12000);
    let bounds = |m: &Value| -> Vec<Value> {
        (m["shards"].as_array().unwrap().iter())
            .map(|s| {
                json!([
                    s["rows"],
                    s["first_row_index"],
                    s["first_turn_index"],
                    s["last_row_index"],
                    s["last_turn_index"]
                ])
            })
            .collect()
    };
    assert_eq!(bounds(&after), bounds(&m));
    // Same rows, keys, texts, roles, embeddings and shard boundaries as the clean run.
    assert_eq!(shard_digests(out.path()), clean);
    let got = check_output(&[
        "extract-reference",
        resume_shards(out.path()).to_str().unwrap(),
        debian().to_str().unwrap(),
        "per-turn",
        RESUME_ROWS,
    ]);
    assert_eq!(got["differences"], json!([]), "{got}");
    assert_eq!(got["duckdb"]["distinct_keys"], 12000, "{got}");

    // A SIGINT flushes the open shard as partial (it may end anywhere in a row's turns);
    // --resume writes it again whole and goes on.
    let out = tempfile::tempdir().unwrap();
    let mut child = per_turn_run(out.path(), "per-turn").spawn().unwrap();
    wait_for_file(
        &resume_shards(out.path()).join("shard-00000.parquet"),
        &mut child,
    );
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let before = resume_manifest(out.path());
    assert_eq!(before["status"], "interrupted");
    let written = before["rows_total"].as_u64().unwrap();
    assert!(written < 12000, "the run was not interrupted");
    let ran = run(per_turn_run(out.path(), "per-turn").arg("--resume"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(bounds(&resume_manifest(out.path())), bounds(&m));
    assert_eq!(shard_digests(out.path()), clean);
}
