"""Reads chatspace's output with pyarrow and DuckDB (not chatspace's own code) and prints JSON.

  check_output.py inspect SHARD_DIR MANIFEST
      rows, columns and types, row_index order, per-shard sha256/size/ranges vs the manifest,
      and DuckDB's view of the same files.
  check_output.py cosine SHARD_DIR REFERENCE.parquet
      per-row cosine between the shards' embeddings and the reference's, matched by `id`; the
      largest difference of their norms; the (ours, reference) widths; and the largest
      difference between the embeddings as DuckDB and as pyarrow read them.
  check_output.py compare SHARD_DIR_A SHARD_DIR_B
      two runs' shards matched by `row_index`: the rows only one has, and the smallest cosine
      between the embeddings of the rows both have.
  check_output.py rows SHARD_DIR
      every output row as [row_index, turn_index, role, text] (turn_index and role null when
      the shards have no such columns), read by pyarrow and, separately, by DuckDB.
  check_output.py extract-reference SHARD_DIR DATASET MODE MAX_ROWS [FILTER_ROLES]
      computes what `--extract MODE` should give on the first MAX_ROWS rows of the `messages`
      column of DATASET (Parquet), in plain Python on pyarrow's rows, and compares it with the
      shards: counts, skip reasons and the first differing rows.
"""

import glob
import hashlib
import json
import os
import sys

import duckdb
import numpy as np  # noqa: F401  (pyarrow's to_numpy needs it)
import pyarrow.parquet as pq


def shard_files(shard_dir):
    return sorted(glob.glob(os.path.join(shard_dir, "shard-*.parquet")))


def inspect(shard_dir, manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    files = shard_files(shard_dir)
    table = pq.ParquetDataset(files).read() if files else None
    row_index = table.column("row_index").to_pylist() if table is not None else []
    root = os.path.dirname(manifest_path)
    shards = []
    for entry, path in zip(manifest["shards"], files):
        data = open(path, "rb").read()
        t = pq.read_table(path, columns=["row_index"])
        ri = t.column("row_index").to_pylist()
        shards.append(
            {
                "file": os.path.basename(path),
                "manifest_path_matches": os.path.normpath(entry["path"]).endswith(
                    os.path.join(*path.split(os.sep)[-5:])
                ),
                "sha256_ok": hashlib.sha256(data).hexdigest() == entry["sha256"],
                "bytes_ok": len(data) == entry["bytes"],
                "rows": t.num_rows,
                "rows_ok": t.num_rows == entry["rows"],
                "range_ok": bool(ri)
                and ri[0] == entry["first_row_index"]
                and ri[-1] == entry["last_row_index"],
            }
        )
    glob_pattern = os.path.join(shard_dir, "*.parquet")
    con = duckdb.connect()
    dk = con.execute(
        "SELECT count(*), count(DISTINCT row_index), min(row_index), max(row_index), "
        "min(len(embedding)), max(len(embedding)) FROM read_parquet(?)",
        [glob_pattern],
    ).fetchone()
    schema = {f.name: str(f.type) for f in table.schema} if table is not None else {}
    out = {
        "files": len(files),
        "tmp_files": len(glob.glob(os.path.join(shard_dir, "*.tmp"))),
        "rows": len(row_index),
        "row_index_sorted": row_index == sorted(row_index),
        "row_index_unique": len(set(row_index)) == len(row_index),
        "row_index_first": row_index[0] if row_index else None,
        "row_index_last": row_index[-1] if row_index else None,
        "schema": schema,
        "shards": shards,
        "duckdb": {
            "rows": dk[0],
            "distinct_row_index": dk[1],
            "min_row_index": dk[2],
            "max_row_index": dk[3],
            "min_dim": dk[4],
            "max_dim": dk[5],
        },
        "texts_sample": table.column("text").to_pylist()[:3] if table is not None else [],
        "manifest_root": root,
    }
    print(json.dumps(out))


def cosine(shard_dir, reference):
    ours = pq.ParquetDataset(shard_files(shard_dir)).read()
    ref = pq.read_table(reference)
    ref_by_id = dict(zip(ref.column("id").to_pylist(), ref.column("embedding").to_numpy(zero_copy_only=False)))
    worst = 1.0
    worst_id = None
    norm_diff = 0.0
    dims = set()
    ids = ours.column("id").to_pylist()
    embs = ours.column("embedding").to_numpy(zero_copy_only=False)
    for i, e in zip(ids, embs):
        r = ref_by_id[i]
        a = np.asarray(e, dtype=np.float64)
        b = np.asarray(r, dtype=np.float64)
        c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
        norm_diff = max(norm_diff, abs(float(np.linalg.norm(a) - np.linalg.norm(b))))
        dims.add((len(a), len(b)))
        if c < worst:
            worst, worst_id = c, i
    by_id = dict(zip(ids, embs))
    con = duckdb.connect()
    duck = con.execute(
        "SELECT id, embedding FROM read_parquet(?)", [os.path.join(shard_dir, "shard-*.parquet")]
    ).fetchall()
    duck_diff = max(
        float(np.max(np.abs(np.asarray(e, dtype=np.float64) - np.asarray(by_id[i], dtype=np.float64))))
        for i, e in duck
    )
    print(
        json.dumps(
            {
                "rows": len(ids),
                "reference_rows": ref.num_rows,
                "distinct_ids": len(set(ids)),
                "min_cosine": worst,
                "worst_id": str(worst_id),
                "max_norm_diff": norm_diff,
                "dims": sorted(dims),
                "duckdb_rows": len(duck),
                "duckdb_max_abs_diff": duck_diff,
            }
        )
    )


def compare(dir_a, dir_b):
    def load(shard_dir):
        t = pq.ParquetDataset(shard_files(shard_dir)).read(columns=["row_index", "embedding"])
        return dict(
            zip(
                t.column("row_index").to_pylist(),
                t.column("embedding").to_numpy(zero_copy_only=False),
            )
        )

    a, b = load(dir_a), load(dir_b)
    common = sorted(set(a) & set(b))
    worst, worst_row = None, None
    for r in common:
        x = np.asarray(a[r], dtype=np.float64)
        y = np.asarray(b[r], dtype=np.float64)
        c = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))
        if worst is None or c < worst:
            worst, worst_row = c, r
    print(
        json.dumps(
            {
                "rows_a": len(a),
                "rows_b": len(b),
                "common": len(common),
                "only_a": sorted(set(a) - set(b))[:100],
                "only_b": sorted(set(b) - set(a))[:100],
                "min_cosine": worst,
                "worst_row_index": worst_row,
            }
        )
    )


def rows(shard_dir):
    files = shard_files(shard_dir)
    table = pq.ParquetDataset(files).read()
    per_turn = "turn_index" in table.column_names
    cols = ["row_index", "turn_index", "role", "text"] if per_turn else ["row_index", "text"]
    got = [list(r) for r in zip(*(table.column(c).to_pylist() for c in cols))]
    con = duckdb.connect()
    order = "row_index, turn_index" if per_turn else "row_index"
    dk = con.execute(
        f"SELECT {', '.join(cols)} FROM read_parquet(?) ORDER BY {order}",
        [os.path.join(shard_dir, "*.parquet")],
    ).fetchall()
    if not per_turn:
        got = [[r, None, None, t] for r, t in got]
        dk = [[r, None, None, t] for r, t in dk]
    print(
        json.dumps(
            {
                "pyarrow": got,
                "duckdb": [list(r) for r in dk],
                "schema": {f.name: str(f.type) for f in table.schema},
            }
        )
    )


# An implementation of the extraction modes of chatspace's README, independent of its Rust code.
ASSISTANT = {"assistant", "model", "gpt"}
USER = {"user", "human"}
TEXT_PARTS = {None, "text", "input_text", "output_text"}


def kind(role):
    r = role.strip().lower()
    if r in ASSISTANT:
        return "assistant"
    if r in USER:
        return "user"
    return "system" if r == "system" else "other"


def content_text(content):
    """Stripped text of a turn's content; None when null."""
    if content is None:
        return None
    if isinstance(content, str):
        return content.strip()
    texts = [
        p["text"].strip()
        for p in content
        if p is not None and p.get("type") in TEXT_PARTS and p.get("text") is not None
    ]
    return "\n".join(t for t in texts if t)


def expected_outputs(conversations, mode, filter_roles):
    """[(row_index, turn_index, role, text)] and input-row skip reasons."""
    wanted = [kind(r) if kind(r) != "other" else r.strip().lower() for r in filter_roles]

    def selected(role):
        return not wanted or kind(role) in wanted or role.strip().lower() in wanted

    out, skipped = [], {}

    def skip(why):
        skipped[why] = skipped.get(why, 0) + 1

    for i, conv in enumerate(conversations):
        if conv is None:
            skip("null conversation")
            continue
        turns = [
            (t, turn["role"], content_text(turn["content"]))
            for t, turn in enumerate(conv)
            if turn is not None and turn["role"] is not None
        ]
        with_text = [(t, r, c) for t, r, c in turns if c]
        if mode in ("first-assistant", "last-assistant", "first-user", "last-user"):
            which, who = mode.split("-")
            found = [c for t, r, c in with_text if kind(r) == who]
            if found:
                out.append((i, None, None, found[0] if which == "first" else found[-1]))
            else:
                skip(f"no {who} turn")
        elif mode == "transcript":
            lines = [f"{r}: {c}" for t, r, c in with_text if selected(r)]
            if lines:
                out.append((i, None, None, "\n".join(lines)))
            else:
                skip("no turn")
        else:
            keep = [(t, r, c) for t, r, c in with_text if selected(r)]
            if mode == "per-assistant-turn":
                keep = [(t, r, c) for t, r, c in keep if kind(r) == "assistant"]
            for t, r, c in keep:
                out.append((i, t, r, c))
            if not keep:
                skip("no assistant turn" if mode == "per-assistant-turn" else "no turn")
    return out, skipped


def extract_reference(shard_dir, dataset, mode, max_rows, filter_roles=""):
    conversations = pq.read_table(dataset, columns=["messages"]).column("messages")
    conversations = conversations.slice(0, int(max_rows)).to_pylist()
    roles = [r for r in filter_roles.split(",") if r]
    want, skipped = expected_outputs(conversations, mode, roles)
    per_turn = mode.startswith("per-")
    table = pq.ParquetDataset(shard_files(shard_dir)).read()
    cols = ["row_index", "turn_index", "role", "text"] if per_turn else ["row_index", "text"]
    got = list(zip(*(table.column(c).to_pylist() for c in cols)))
    if not per_turn:
        got = [(r, None, None, t) for r, t in got]
    diffs = [
        {"expected": list(w) if w else None, "got": list(g) if g else None}
        for w, g in zip(want + [None] * len(got), got + [None] * len(want))
        if w != g
    ][:5]
    con = duckdb.connect()
    key = "row_index, turn_index" if per_turn else "row_index"
    dk = con.execute(
        f"SELECT count(*), count(DISTINCT ({key})), count(DISTINCT row_index) FROM read_parquet(?)",
        [os.path.join(shard_dir, "*.parquet")],
    ).fetchone()
    print(
        json.dumps(
            {
                "expected_rows": len(want),
                "expected_input_rows_with_text": len({w[0] for w in want}),
                "expected_skipped": skipped,
                "rows": len(got),
                "differences": diffs,
                "duckdb": {"rows": dk[0], "distinct_keys": dk[1], "distinct_row_index": dk[2]},
            }
        )
    )


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    {
        "inspect": inspect,
        "cosine": cosine,
        "compare": compare,
        "rows": rows,
        "extract-reference": extract_reference,
    }[cmd](*rest)
