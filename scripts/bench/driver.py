"""Benchmark driver for scripts/bench.sh (see there for what it measures); prints one table.

Every comparison is measured in the same invocation, side by side: the MiniLM contenders run one
after the other in rounds, the order reversed every other round, with the headline chatspace
configuration next to both of its baselines; the null-384 runs sit between runs of the
tokenizers floor; the --help timings alternate with the Python start-ups. Ratios are taken
within each round and their median reported. Each timed run also records how much CPU the rest
of the machine used meanwhile ("others", in cores), since the machine is shared.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workers import OthersCpu, load_tokenizer  # noqa: E402

MB = 1e6
# A run during which the rest of the machine used more CPU than this (in cores) is "noisy":
# medians and ratios use only the quiet runs (rounds) when there are any.
QUIET_CORES = 0.25

# The MiniLM contenders, in round order (reversed every other round). The headline chatspace
# configuration sits between its two baselines so that both comparisons are of neighbours.
CS_MAIN = "chatspace 2 enc x 1 thr"
ST = "sentence-transformers"
ORT_ROWS = "raw ORT, 32-row batches"
ORT_TOKENS = "raw ORT, ~1,024-token batches"
ENCODER_ALONE = "diag: chatspace-encoder alone, 2 thr"
CHATSPACE = {
    CS_MAIN: ["--encoders", "2", "--threads", "1"],
    "chatspace defaults": [],
    "chatspace 1 enc x 2 thr": ["--encoders", "1", "--threads", "2"],
}
PYTHON = {
    ST: ("st", []),
    ORT_ROWS: ("ort", ["--batching", "rows32"]),
    ORT_TOKENS: ("ort", ["--batching", "tokens1024"]),
}
ROUND = [ORT_ROWS, "chatspace defaults", ENCODER_ALONE, "chatspace 1 enc x 2 thr", ORT_TOKENS,
         CS_MAIN, ST]


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- inputs ----------------------------------------------------------------------------------


def first_assistant(messages):
    """The first assistant/model turn with non-blank content, stripped (as --extract does)."""
    for turn in messages or []:
        role = (turn.get("role") or "").lower()
        content = turn.get("content")
        if role in ("assistant", "model") and content and content.strip():
            return content.strip()
    return None


def load_texts(parquet, max_rows=None):
    """Texts of the first `max_rows` input rows (all when None), rows without one left out."""
    table = pq.read_table(parquet, columns=["messages"])
    if max_rows is not None:
        table = table.slice(0, max_rows)
    texts = [first_assistant(m) for m in table.column("messages").to_pylist()]
    return [t for t in texts if t is not None]


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)
    return path


# --- watching chatspace's processes ----------------------------------------------------------


def read_status(pid):
    """(name, VmHWM in bytes) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return fields["Name"].strip(), int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def read_schedstat(pid):
    """(seconds on a CPU, seconds runnable but waiting for one), summed over live threads."""
    run = wait = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
    except (OSError, IndexError, ValueError):
        return None
    return run / 1e9, wait / 1e9


class Watcher(threading.Thread):
    """Polls the supervisor's VmHWM (peak RSS so far) every 10 ms and, every 100 ms, that of
    each descendant plus its threads' CPU and run-queue time. VmHWM never goes down, so only
    growth in a process's last polling interval can be missed."""

    def __init__(self, pid, every=0.01, children_every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.children_every = pid, every, children_every
        self.procs = {}  # pid -> {"name", "hwm", "run_s", "wait_s", "life_s"}
        self.stop = threading.Event()

    def note(self, pid, sched=False, created=None):
        got = read_status(pid)
        if not got:
            return
        p = self.procs.setdefault(pid, {"name": got[0], "hwm": 0})
        p["hwm"] = max(p["hwm"], got[1])
        if sched:
            times = read_schedstat(pid)
            if times:
                p["run_s"], p["wait_s"] = times
                p["life_s"] = time.time() - created

    def run(self):
        children_due = 0.0
        started = psutil.Process(self.pid).create_time()
        while not self.stop.is_set():
            self.note(self.pid)
            if time.monotonic() >= children_due:
                children_due = time.monotonic() + self.children_every
                self.note(self.pid, sched=True, created=started)
                try:
                    kids = psutil.Process(self.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    kids = []
                for kid in kids:
                    try:
                        self.note(kid.pid, sched=True, created=kid.create_time())
                    except psutil.NoSuchProcess:
                        pass
            self.stop.wait(self.every)


def run_chatspace(ctx, label, model, extra, max_rows, watch=True):
    """One `chatspace embed-hf` run: wall time, run summary, peak RSS, encoders' CPU use."""
    out = os.path.join(ctx.work, f"cs-{label}-{ctx.seq()}")
    log_path = out + ".log"
    cmd = [ctx.chatspace, "embed-hf", "--dataset", ctx.parquet, "--text-field", "messages",
           "--extract", "first-assistant", "--model", model, "--output-root", out,
           "--no-progress", "--ort-lib", ctx.ort_lib]
    if max_rows is not None:
        cmd += ["--max-rows", str(max_rows)]
    cmd += extra
    with open(log_path, "w") as log:
        others = OthersCpu()
        launched = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        watcher = Watcher(proc.pid) if watch else None
        if watcher:
            watcher.start()
        proc.wait()
        wall = time.perf_counter() - t0
        others_cores = others.cores(wall)
    if watcher:
        watcher.stop.set()
        watcher.join()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise SystemExit(f"bench: chatspace ({label}) exited {proc.returncode}:\n{tail}")
    with open(glob.glob(os.path.join(out, "indexes", "*", "*", "run-train.json"))[0]) as f:
        summary = json.load(f)
    with open(summary["manifest_path"]) as f:
        run_config = json.load(f)["run_config"]
    # The run's clock (summary created_at, microseconds) starts inside the process.
    launch_to_start = datetime.fromisoformat(summary["created_at"]).timestamp() - launched
    result = {
        "command": " ".join(cmd),
        "seconds": wall,
        "others_cores": others_cores,
        "summary": summary,
        "config": {k: run_config.get(k) for k in ("encoders", "threads", "batch_size",
                                                     "tokens_per_batch")},
        "launch_to_start_s": launch_to_start,
        "launch_to_first_row_s": launch_to_start + (summary["seconds_to_first_row"] or 0.0),
        "output": out,
    }
    if watcher:
        result["supervisor"] = watcher.procs.get(proc.pid, {"hwm": 0})
        result["supervisor_peak_rss"] = result["supervisor"]["hwm"]
        # As last seen, up to 100 ms before each encoder ended.
        result["encoders"] = [p for pid, p in watcher.procs.items()
                              if pid != proc.pid and p["name"].startswith("chatspace-enc")]
    return result


def chatspace_embeddings(out):
    """(texts, embeddings) of a chatspace run, in row order."""
    files = sorted(glob.glob(os.path.join(out, "embeddings", "*", "*", "train", "*.parquet")))
    table = pa.concat_tables(pq.read_table(p, columns=["text", "embedding"]) for p in files)
    emb = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32)
    return table.column("text").to_pylist(), emb.reshape(table.num_rows, -1)


def run_encoder_alone(ctx, model, jsonl, rows, threads):
    """Diagnostic: `chatspace-encoder embed` alone, launch to exit, reading length-sorted JSON
    lines 32 at a time (each line batch is one unit and one inference batch)."""
    cmd = [ctx.encoder, "embed", "--model", model, "--ort-lib", ctx.ort_lib,
           "--threads", str(threads), "--batch-size", "32", "--tokens-per-batch", "0"]
    with open(jsonl) as stdin:
        others = OthersCpu()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        others_cores = others.cores(wall)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    if proc.stdout.count(b"\n") != rows:
        raise SystemExit(f"bench: chatspace-encoder embed wrote the wrong number of lines")
    return {"command": " ".join(cmd) + " < length-sorted.jsonl", "seconds": wall,
            "others_cores": others_cores}


# --- Python baselines ------------------------------------------------------------------------


def run_worker(ctx, kind, model, texts_path, extra=(), emb=True):
    """A workers.py baseline in its own process; `seconds` is its timed encode loop."""
    tag = f"{kind}-{ctx.seq()}"
    out = os.path.join(ctx.work, tag + ".json")
    emb_path = os.path.join(ctx.work, tag + ".npy") if emb else None
    cmd = [sys.executable, os.path.join(HERE, "workers.py"), kind, "--model", model,
           "--texts", texts_path, "--out", out, "--workdir", ctx.work, *extra]
    if emb_path:
        cmd += ["--emb", emb_path]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench: worker {kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out) as f:
        result = json.load(f)
    result.update(seconds=result["encode_s"], emb_path=emb_path, command=" ".join(cmd))
    return result


def min_cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


# --- start-up --------------------------------------------------------------------------------


def startup(ctx, runs, warmup):
    """Median ms of `chatspace --help` and `python3 -c 'import argparse'`, runs alternating."""
    cases = {
        "chatspace --help": [ctx.chatspace, "--help"],
        "python3 -c 'import argparse'": ["python3", "-c", "import argparse"],
    }
    samples = {k: [] for k in cases}
    for i in range(warmup + runs):
        for name, argv in cases.items():
            t0 = time.perf_counter()
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            if i >= warmup:
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in samples.items()}


# --- the run ---------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.root = args.root
        self.parquet = os.path.join(args.shared, "data", "debian-chat.parquet")
        self.minilm = os.path.join(args.shared, "models", "all-MiniLM-L6-v2")
        self.null = os.path.join(args.shared, "models", "null-384")
        self.work = args.keep or tempfile.mkdtemp(prefix="chatspace-bench-")
        os.makedirs(self.work, exist_ok=True)
        # Measure a snapshot of the build: others may rebuild target/release meanwhile. The
        # encoder is found next to `chatspace`; ONNX Runtime is then given with --ort-lib.
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir, exist_ok=True)
        self.chatspace_built = os.path.join(args.root, "target", "release", "chatspace")
        for name in ("chatspace", "chatspace-encoder"):
            shutil.copy2(os.path.join(args.root, "target", "release", name), bindir)
        self.chatspace = os.path.join(bindir, "chatspace")
        self.encoder = os.path.join(bindir, "chatspace-encoder")
        self.ort_lib = os.path.realpath(os.path.join(args.root, ".onnxruntime",
                                                     "libonnxruntime.so"))
        self._n = 0

    def seq(self):
        self._n += 1
        return self._n


def versions(ctx):
    """What is measured: the tree's commit when the binaries were copied, their build times."""
    from importlib.metadata import version

    git = subprocess.run(["git", "-C", ctx.root, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    built = datetime.fromtimestamp(os.path.getmtime(ctx.chatspace_built)).isoformat(" ", "seconds")
    out = {"chatspace_git": git or "unknown", "chatspace_built": built}
    for pkg in ("sentence-transformers", "torch", "transformers", "onnxruntime", "tokenizers"):
        out[pkg] = version(pkg)
    return out


def med(values):
    return statistics.median(values)


def quiet(*runs):
    return all(x["others_cores"] <= QUIET_CORES for x in runs)


def quiet_or_all(items, runs_of=lambda item: (item,)):
    """The items whose runs were all quiet, or every item when none was."""
    kept = [i for i in items if quiet(*runs_of(i))]
    return kept or list(items)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--rows", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int)
    p.add_argument("--json")
    p.add_argument("--keep")
    args = p.parse_args()
    rows = args.rows or (256 if args.quick else 4096)
    repeats = args.repeats or (1 if args.quick else 3)
    if rows < 1 or repeats < 1:
        raise SystemExit("bench: --rows and --repeats must be positive")
    null_rows = 8192 if args.quick else None  # None: all 63,904
    startup_runs = 10 if args.quick else 40
    ctx = Ctx(args)
    # A TERM (or Ctrl-C) still removes the work folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = bench(ctx, rows, null_rows, repeats, startup_runs)
    finally:
        if not args.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        say(f"wrote {args.json}")


def bench(ctx, rows, null_rows, repeats, startup_runs):
    load_start = os.getloadavg()
    measured = versions(ctx)
    say(f"work folder {ctx.work}; load average {load_start}; {measured}")
    texts = load_texts(ctx.parquet, rows)
    lens = [len(e.ids) for e in load_tokenizer(ctx.minilm).encode_batch(texts)]
    tokens = sum(lens)  # real tokens = sum of attention masks, counted once
    texts_path = write_json(os.path.join(ctx.work, "texts-minilm.json"), texts)
    sorted_jsonl = os.path.join(ctx.work, "texts-minilm-sorted.jsonl")
    with open(sorted_jsonl, "w") as f:
        for i in sorted(range(len(texts)), key=lens.__getitem__):
            f.write(json.dumps({"text": texts[i]}) + "\n")
    one_jsonl = os.path.join(ctx.work, "one.jsonl")
    with open(one_jsonl, "w") as f:
        f.write(json.dumps({"text": texts[0]}) + "\n")
    say(f"MiniLM: {len(texts)} texts from the first {rows} rows, {tokens} tokens")

    # 1. MiniLM ----------------------------------------------------------------------------
    # The encoder's own start and model load, to take off its diagnostic timing.
    enc_load = min(run_encoder_alone(ctx, ctx.minilm, one_jsonl, 1, 2)["seconds"]
                   for _ in range(3))
    runs = {name: [] for name in ROUND}
    for r in range(repeats):
        for name in ROUND if r % 2 == 0 else ROUND[::-1]:
            say(f"round {r + 1}/{repeats}: {name}")
            if name in CHATSPACE:
                res = run_chatspace(ctx, f"minilm{r}", ctx.minilm, CHATSPACE[name], rows)
            elif name == ENCODER_ALONE:
                res = run_encoder_alone(ctx, ctx.minilm, sorted_jsonl, len(texts), 2)
                res["seconds"] = max(res["seconds"] - enc_load, 1e-9)
            else:
                kind, extra = PYTHON[name]
                res = run_worker(ctx, kind, ctx.minilm, texts_path, extra)
            runs[name].append(res)

    # Same rows, same vectors: chatspace's first run is the reference.
    cs_texts, cs_emb = chatspace_embeddings(runs[CS_MAIN][0]["output"])
    if cs_texts != texts:
        raise SystemExit("bench: chatspace embedded other texts than the Python baselines")

    def seconds(name):
        return med(x["seconds"] for x in quiet_or_all(runs[name]))

    def per_round_ratio(name, base):
        pairs = quiet_or_all(list(zip(runs[name], runs[base])), runs_of=lambda p: p)
        return med(b["seconds"] / x["seconds"] for x, b in pairs)

    best_ort = min((ORT_ROWS, ORT_TOKENS), key=seconds)

    minilm = []
    for name in ROUND[::-1]:
        rs = runs[name]
        secs = seconds(name)
        row = {"name": name, "seconds": secs, "all_seconds": [x["seconds"] for x in rs],
               "others_cores": [round(x["others_cores"], 2) for x in rs],
               "rounds_used": len(quiet_or_all(rs)),
               "rows": len(texts), "tokens": tokens,
               "rows_per_s": len(texts) / secs, "tokens_per_s": tokens / secs,
               "command": rs[0]["command"]}
        if name in CHATSPACE:
            s = rs[0]["summary"]
            used = quiet_or_all(rs)  # the run summaries' figures: same rounds as `seconds`
            if s["tokens"] != tokens:
                say(f"note: {name} counted {s['tokens']} tokens, Python {tokens}")
            for x in rs:
                if x["summary"]["rows_total"] != len(texts):
                    raise SystemExit(f"bench: {name} embedded {x['summary']['rows_total']} "
                                     f"rows, expected {len(texts)}")
            row.update(
                kind="chatspace",
                timed="end to end: process start, model load, read, embed, write",
                config=rs[0]["config"],
                vs_st=per_round_ratio(name, ST),
                vs_best_ort=per_round_ratio(name, best_ort),
                summary_duration_s=med(x["summary"]["duration_seconds"] for x in used),
                summary_rows_per_s=med(x["summary"]["rows_per_second"] for x in used),
                summary_tokens=s["tokens"],
                summary_padded_tokens=s["padded_tokens"],
                padding_ratio=s["padding_ratio"],
                seconds_to_first_row=med(x["summary"]["seconds_to_first_row"] for x in used),
                launch_to_start_s=med(x["launch_to_start_s"] for x in used),
                launch_to_first_row_s=med(x["launch_to_first_row_s"] for x in used),
                supervisor_peak_rss=max(x["supervisor_peak_rss"] for x in rs),
                supervisor=[x["supervisor"] for x in rs],
                encoders=[x["encoders"] for x in rs],
                per_round=[{k: x["summary"][k] for k in (
                    "duration_seconds", "rows_per_second", "seconds_to_first_row")}
                    | {"launch_to_first_row_s": x["launch_to_first_row_s"]} for x in rs],
            )
        elif name == ENCODER_ALONE:
            row.update(kind="diagnostic", load_s=enc_load,
                       timed="launch to exit less start + model load; 32-row length-sorted "
                             "batches, no supervisor",
                       vs_best_ort=per_round_ratio(name, best_ort))
        else:
            row.update(kind="python",
                       timed="encode loop only (model load and a 32-row warm-up excluded)",
                       load_s=med(x["load_s"] for x in rs),
                       peak_rss=max(x["peak_rss"] for x in rs),
                       min_cosine_vs_chatspace=min_cosine(np.load(rs[0]["emb_path"]), cs_emb))
            if "padded_tokens" in rs[0]:
                row["padded_tokens"] = rs[0]["padded_tokens"]
        minilm.append(row)
    by_name = {r["name"]: r for r in minilm}

    # 2./3. null-384 capacity, each run between two runs of the tokenizers floor ------------
    null_texts = load_texts(ctx.parquet, null_rows)
    null_path = write_json(os.path.join(ctx.work, "texts-null.json"), null_texts)
    say(f"null-384: {len(null_texts)} texts")
    floors = [run_worker(ctx, "tokenize", ctx.null, null_path, emb=False)]
    null_runs = []
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: chatspace null-384, tokenizers floor")
        null_runs.append(run_chatspace(ctx, f"null{r}", ctx.null,
                                       ["--encoders", "2", "--threads", "1"], null_rows))
        shutil.rmtree(null_runs[-1]["output"], ignore_errors=True)
        floors.append(run_worker(ctx, "tokenize", ctx.null, null_path, emb=False))
    for x in null_runs:
        if x["summary"]["rows_total"] != len(null_texts):
            raise SystemExit(f"bench: null-384 embedded {x['summary']['rows_total']} rows, "
                             f"expected {len(null_texts)}")
    null_secs = med(x["seconds"] for x in quiet_or_all(null_runs))
    floor_secs = med(x["seconds"] for x in quiet_or_all(floors))
    null = {
        "rows": len(null_texts),
        "command": null_runs[0]["command"],
        "chatspace_seconds": null_secs,
        "chatspace_all_seconds": [x["seconds"] for x in null_runs],
        "chatspace_rows_per_s": len(null_texts) / null_secs,
        "chatspace_summary_rows_per_s": med(x["summary"]["rows_per_second"] for x in null_runs),
        "padding_ratio": null_runs[0]["summary"]["padding_ratio"],
        "floor_seconds": floor_secs,
        "floor_all_seconds": [x["seconds"] for x in floors],
        "floor_rows_per_s": len(null_texts) / floor_secs,
        "floor_fast_rows_per_s": len(null_texts) / med(x["encode_batch_fast_s"] for x in floors),
        "floor_timed": "encode_batch only: no Parquet read; tokenizer load excluded",
        # Each chatspace run against the mean of the floor runs just before and after it.
        "ratio": med((a["seconds"] + b["seconds"]) / 2 / x["seconds"]
                     for x, a, b in quiet_or_all(list(zip(null_runs, floors, floors[1:])),
                                                 runs_of=lambda t: t)),
        "others_cores": [round(x["others_cores"], 2) for x in null_runs],
        "supervisor_peak_rss": max(x["supervisor_peak_rss"] for x in null_runs),
        "supervisor": [x["supervisor"] for x in null_runs],
        "encoders": [x["encoders"] for x in null_runs],
    }

    # 4. first row: a 1-row run as a cross-check -------------------------------------------
    one_row = [run_chatspace(ctx, f"one{i}", ctx.minilm, CHATSPACE[CS_MAIN], 1, watch=False)
               for i in range(3)]

    # 5. start-up --------------------------------------------------------------------------
    say("start-up: chatspace --help vs python3 -c 'import argparse'")
    ms = startup(ctx, startup_runs, 3)
    help_ms, py_ms = ms["chatspace --help"], ms["python3 -c 'import argparse'"]

    main_cs = by_name[CS_MAIN]
    targets = []
    for metric, value, op, want, unit in [
        ("MiniLM e2e chatspace (2x1) / sentence-transformers", main_cs["vs_st"], ">=", 1.5, "x"),
        ("MiniLM e2e chatspace (2x1) / best raw ORT", main_cs["vs_best_ort"], ">=", 1.1, "x"),
        ("MiniLM e2e chatspace (2x1) tokens/s", main_cs["tokens_per_s"], ">=", 4100, "tok/s"),
        ("null-384 chatspace e2e / tokenizers encode_batch", null["ratio"], ">=", 1.5, "x"),
        ("supervisor peak RSS, null-384 full run", null["supervisor_peak_rss"] / MB,
         "<=", 100, "MB"),
        ("launch to first embedded row, MiniLM (2x1)", main_cs["launch_to_first_row_s"],
         "<=", 1.0, "s"),
        ("import argparse / chatspace --help", py_ms / help_ms, ">=", 20, "x"),
    ]:
        ok = value >= want if op == ">=" else value <= want
        targets.append({"metric": metric, "value": value, "op": op, "target": want,
                        "unit": unit, "pass": bool(ok)})
    return {
        "machine": {"cores": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg(),
                    "memory_gib": psutil.virtual_memory().total / (1 << 30)},
        "versions": measured,
        "rows_requested": rows,
        "repeats": repeats,
        "best_raw_ort": best_ort,
        "minilm": minilm,
        "null384": null,
        "first_row": {
            "summary_seconds_to_first_row": main_cs["seconds_to_first_row"],
            "launch_to_start_s": main_cs["launch_to_start_s"],
            "launch_to_first_row_s": main_cs["launch_to_first_row_s"],
            "one_row_run_launch_to_first_row_s": med(x["launch_to_first_row_s"]
                                                     for x in one_row),
            "one_row_run_wall_s": med(x["seconds"] for x in one_row),
        },
        "startup_ms": {"chatspace --help": help_ms, "python3 -c 'import argparse'": py_ms,
                       "runs": startup_runs},
        "targets": targets,
    }


# --- the report ------------------------------------------------------------------------------


def mb(b):
    return f"{b / MB:.0f} MB"


def first_quiet(row):
    """The first round in which the rest of the machine was quiet (else the first)."""
    return next((i for i, c in enumerate(row["others_cores"]) if c <= QUIET_CORES), 0)


def proc_line(procs):
    """Per process: peak RSS; seconds on a CPU and waiting for one (threads summed) of its
    life; the rest of its life it was blocked (idle, or waiting on I/O or another process)."""
    return "; ".join(
        f"{mb(e['hwm'])}, on-CPU {e.get('run_s', 0):.1f} s + CPU-wait {e.get('wait_s', 0):.1f} s "
        f"of {e.get('life_s', 0):.1f} s alive" for e in procs)


def print_report(rep):
    m = rep["minilm"]
    mach = rep["machine"]
    print()
    v = rep["versions"]
    print(f"chatspace: release build of {v['chatspace_built']} (tree at the start: "
          f"{v['chatspace_git']}); "
          + ", ".join(f"{k} {x}" for k, x in v.items() if not k.startswith("chatspace"))
          + f"; {mach['cores']} cores; load average {mach['load_average_start'][0]:.1f} at "
          f"the start, {mach['load_average_end'][0]:.1f} at the end")
    print()
    print(f"1. all-MiniLM-L6-v2: {m[0]['rows']} texts (first {rep['rows_requested']} rows), "
          f"{m[0]['tokens']} real tokens; {rep['repeats']} round(s); ORT* = "
          f"{rep['best_raw_ort']}")
    print(f"Medians over the quiet rounds (others <= {QUIET_CORES} cores; all rounds if none "
          f"was); ratios are medians of per-round ratios over rounds quiet for both runs.")
    hdr = (f"{'contender':<38} {'seconds':>8} {'rows/s':>7} {'tokens/s':>8} {'vs ST':>6} "
           f"{'vs ORT*':>7} {'others':>14} {'used':>4}  timed")
    print(hdr)
    print("-" * (len(hdr) + 60))
    for r in m:
        vs_st = f"{r['vs_st']:.2f}x" if "vs_st" in r else ""
        vs_ort = f"{r['vs_best_ort']:.2f}x" if "vs_best_ort" in r else ""
        others = "/".join(f"{c:.1f}" for c in r["others_cores"])
        print(f"{r['name']:<38} {r['seconds']:8.2f} {r['rows_per_s']:7.1f} "
              f"{r['tokens_per_s']:8.0f} {vs_st:>6} {vs_ort:>7} {others:>14} "
              f"{r['rounds_used']:>4}  {r['timed']}")
    print("others = CPU cores the rest of the machine used during each round's run; used = "
          "rounds in the median. Python baselines: 2 threads, one process.")
    print("chatspace run summaries (run-train.json; its clock starts before the encoders do), "
          "medians over the same rounds:")
    for r in m:
        if r["kind"] != "chatspace":
            continue
        c = r["config"]
        print(f"  {r['name']} ({c['encoders']} enc x {c['threads']} thr, batch "
              f"{c['batch_size']} rows / {c['tokens_per_batch']} tokens): "
              f"{r['summary_duration_s']:.2f} s, "
              f"{r['summary_rows_per_s']:.1f} rows/s, "
              f"{r['summary_tokens'] / r['summary_duration_s']:.0f} tokens/s, padding "
              f"{100 * r['padding_ratio']:.1f}% ({r['summary_padded_tokens']} padded tokens), "
              f"first row at {r['seconds_to_first_row']:.2f} s (+{r['launch_to_start_s']:.3f} s "
              f"launch to run start); supervisor peak RSS {mb(r['supervisor_peak_rss'])}")
        i = first_quiet(r)
        print(f"    round {i + 1}: supervisor {proc_line([r['supervisor'][i]])}")
        print(f"    round {i + 1}: encoders {proc_line(r['encoders'][i])}")
    for r in m:
        if r["kind"] == "python":
            extra = f", {r['padded_tokens']} padded tokens" if "padded_tokens" in r else ""
            print(f"  {r['name']}: load + warm-up {r['load_s']:.2f} s (untimed){extra}; min "
                  f"cosine vs chatspace {r['min_cosine_vs_chatspace']:.7f}; peak RSS "
                  f"{mb(r['peak_rss'])}")
        elif r["kind"] == "diagnostic":
            print(f"  {r['name']}: {r['command']}; start + model load {r['load_s']:.2f} s "
                  f"(min of 3 one-line runs) taken off")

    nl = rep["null384"]
    q = first_quiet(nl)
    print()
    print(f"2./3. null-384: {nl['rows']} texts; chatspace --encoders 2 --threads 1; median of "
          f"{len(nl['chatspace_all_seconds'])} runs, each between two floor runs")
    print(f"  chatspace end to end        {nl['chatspace_seconds']:6.2f} s {nl['chatspace_rows_per_s']:7.0f}"
          f" rows/s  (summary {nl['chatspace_summary_rows_per_s']:.0f} rows/s; padding "
          f"{100 * nl['padding_ratio']:.1f}%; others "
          + "/".join(f"{c:.1f}" for c in nl["others_cores"]) + " cores)")
    print(f"  tokenizers encode_batch     {nl['floor_seconds']:6.2f} s {nl['floor_rows_per_s']:7.0f}"
          f" rows/s  ({nl['floor_timed']}; median of {len(nl['floor_all_seconds'])}; "
          f"encode_batch_fast {nl['floor_fast_rows_per_s']:.0f} rows/s)")
    print(f"  ratio {nl['ratio']:.2f}x. Peak RSS (VmHWM, polled every 10 ms): supervisor "
          f"{mb(nl['supervisor_peak_rss'])} (the most of any round). Round {q + 1}: supervisor "
          f"{proc_line([nl['supervisor'][q]])}; encoders (polled every 100 ms) "
          f"{proc_line(nl['encoders'][q])}")

    fr = rep["first_row"]
    print()
    print(f"4. first row, MiniLM, chatspace 2 enc x 1 thr: {fr['launch_to_first_row_s']:.3f} s "
          f"launch to first row = {fr['launch_to_start_s']:.3f} s launch to the run's start "
          f"(its created_at) + seconds_to_first_row {fr['summary_seconds_to_first_row']:.3f} s "
          f"(the first unit of rows back from an encoder). A 1-row run: "
          f"{fr['one_row_run_launch_to_first_row_s']:.3f} s to its row, "
          f"{fr['one_row_run_wall_s']:.3f} s launch to exit.")

    su = rep["startup_ms"]
    print()
    print(f"5. start-up, median of {su['runs']} alternating runs: chatspace --help "
          f"{su['chatspace --help']:.2f} ms, python3 -c 'import argparse' "
          f"{su[next(k for k in su if k.startswith('python3'))]:.2f} ms")

    print()
    hdr = f"{'target (issue)':<52} {'measured':>14} {'target':>16}  result"
    print(hdr)
    print("-" * len(hdr))
    for t in rep["targets"]:
        v, unit = t["value"], t["unit"]
        val = f"{v:.0f} {unit}" if v >= 1000 else f"{v:.2f} {unit}"
        want = f"{t['op']} {t['target']:,} {unit}"
        print(f"{t['metric']:<52} {val:>14} {want:>16}  {'pass' if t['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()
