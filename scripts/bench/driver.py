"""Benchmark driver for scripts/bench.sh (see there for what it measures); prints one table.

Every comparison is measured in the same invocation: the MiniLM contenders run one after the
other in rounds (order reversed every other round), the null-384 run sits between two runs of
the tokenizers floor, and the --help timings alternate with the Python start-ups.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1e6
MIB = 1 << 20


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


def count_tokens(model_dir, texts):
    """Real tokens (sum of attention masks) with the model's truncation, counted once."""
    sys.path.insert(0, HERE)
    from workers import load_tokenizer

    tok = load_tokenizer(model_dir)
    return sum(len(e.ids) for e in tok.encode_batch(texts))


# --- chatspace -------------------------------------------------------------------------------


def read_hwm(pid):
    """(name, VmHWM in bytes) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return fields["Name"].strip(), int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


class RssSampler(threading.Thread):
    """Polls VmHWM (peak RSS so far) of a process every `every` seconds and of its descendants
    every `children_every` seconds, until stopped. VmHWM never goes down, so only growth in the
    last interval of a process's life can be missed."""

    def __init__(self, pid, every=0.01, children_every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.children_every = pid, every, children_every
        self.peak = {}  # pid -> (name, bytes)
        self.cpu = {}  # pid -> CPU seconds (user + system) at the last look
        self.stop = threading.Event()

    def note(self, pid):
        got = read_hwm(pid)
        if got:
            old = self.peak.get(pid, (got[0], 0))[1]
            self.peak[pid] = (got[0], max(old, got[1]))

    def run(self):
        children_due = 0.0
        while not self.stop.is_set():
            self.note(self.pid)
            now = time.monotonic()
            if now >= children_due:
                children_due = now + self.children_every
                try:
                    me = psutil.Process(self.pid)
                    kids = me.children(recursive=True)
                except psutil.NoSuchProcess:
                    kids, me = [], None
                for proc in [me, *kids] if me else []:
                    self.note(proc.pid)
                    try:
                        t = proc.cpu_times()
                        self.cpu[proc.pid] = t.user + t.system
                    except psutil.NoSuchProcess:
                        pass
            self.stop.wait(self.every)


def epoch(rfc3339):
    """Seconds since the epoch of an RFC 3339 time with microseconds."""
    from datetime import datetime

    return datetime.fromisoformat(rfc3339).timestamp()


def run_chatspace(ctx, label, model, extra, max_rows, sample_rss=True):
    """One `chatspace embed-hf` run; returns wall time, its run summary and peak RSS."""
    out = os.path.join(ctx.work, f"cs-{label}-{ctx.seq()}")
    log_path = out + ".log"
    cmd = [
        ctx.chatspace, "embed-hf",
        "--dataset", ctx.parquet,
        "--text-field", "messages", "--extract", "first-assistant",
        "--model", model,
        "--output-root", out,
        "--no-progress",
        "--ort-lib", ctx.ort_lib,
    ]
    if max_rows is not None:
        cmd += ["--max-rows", str(max_rows)]
    cmd += extra
    with open(log_path, "w") as log:
        launched = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        sampler = RssSampler(proc.pid) if sample_rss else None
        if sampler:
            sampler.start()
        _, status = os.waitpid(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler:
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise SystemExit(f"bench: chatspace ({label}) exited {proc.returncode}:\n{tail}")
    summaries = glob.glob(os.path.join(out, "indexes", "*", "*", "run-train.json"))
    with open(summaries[0]) as f:
        summary = json.load(f)
    with open(summary["manifest_path"]) as f:
        run_config = json.load(f)["run_config"]
    result = {
        "label": label,
        "command": " ".join(cmd),
        "wall_s": wall,
        "summary": summary,
        # From launch to the run's own clock starting (its created_at), then to the first row.
        "launch_to_start_s": epoch(summary["created_at"]) - launched,
        "config": {k: run_config.get(k) for k in ("encoders", "threads", "batch_size")},
        "output": out,
    }
    result["launch_to_first_row_s"] = (result["launch_to_start_s"]
                                       + (summary["seconds_to_first_row"] or float("nan")))
    if sampler:
        result["encoder_peak_rss"] = [
            b for pid, (name, b) in sampler.peak.items()
            if pid != proc.pid and name.startswith("chatspace-enc")]
        result["supervisor_peak_rss"] = sampler.peak.get(proc.pid, ("", 0))[1]
        # CPU seconds as last seen (up to 100 ms before each process ended).
        result["supervisor_cpu_s"] = sampler.cpu.get(proc.pid, 0.0)
        result["encoder_cpu_s"] = [
            sampler.cpu.get(pid, 0.0) for pid, (name, b) in sampler.peak.items()
            if pid != proc.pid and name.startswith("chatspace-enc")]
    return result


def chatspace_embeddings(out):
    """(texts, embeddings) of a chatspace run, in row order."""
    files = sorted(glob.glob(os.path.join(out, "embeddings", "*", "*", "train", "*.parquet")))
    table = pa.concat_tables(pq.read_table(p, columns=["text", "embedding"]) for p in files)
    emb = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32)
    return table.column("text").to_pylist(), emb.reshape(table.num_rows, -1)


def run_encoder_alone(ctx, model, texts, threads):
    """Diagnostic: `chatspace-encoder embed` alone on length-sorted JSON lines (32-row batches).

    Wall time from launch to exit, model load included; no supervisor, no Parquet."""
    sys.path.insert(0, HERE)
    from workers import load_tokenizer

    lens = [len(e.ids) for e in load_tokenizer(model).encode_batch(texts)]
    order = sorted(range(len(texts)), key=lens.__getitem__)
    path = os.path.join(ctx.work, f"encoder-input-{ctx.seq()}.jsonl")
    with open(path, "w") as f:
        for i in order:
            f.write(json.dumps({"text": texts[i]}) + "\n")
    cmd = [ctx.encoder, "embed", "--model", model, "--ort-lib", ctx.ort_lib,
           "--threads", str(threads), "--batch-size", "32"]
    with open(path) as stdin:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    lines = proc.stdout.count(b"\n")
    if lines != len(texts):
        raise SystemExit(f"bench: chatspace-encoder embed wrote {lines} lines for {len(texts)}")
    return {"command": " ".join(cmd) + " < length-sorted.jsonl", "wall_s": wall}


# --- Python baselines ------------------------------------------------------------------------


def run_worker(ctx, kind, model, texts_path, extra=(), emb=True):
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
    result["emb_path"] = emb_path
    result["command"] = " ".join(cmd)
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

    def once(argv):
        t0 = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - t0) * 1000.0

    samples = {k: [] for k in cases}
    for i in range(warmup + runs):
        for name, argv in cases.items():
            dt = once(argv)
            if i >= warmup:
                samples[name].append(dt)
    return {k: statistics.median(v) for k, v in samples.items()}


# --- the run ---------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.root = args.root
        self.work = args.keep or tempfile.mkdtemp(prefix="chatspace-bench-")
        os.makedirs(self.work, exist_ok=True)
        # Measure a snapshot of the build: others may rebuild target/release meanwhile. The
        # encoder is found next to `chatspace`; ONNX Runtime is then given with --ort-lib.
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir, exist_ok=True)
        for name in ("chatspace", "chatspace-encoder"):
            shutil.copy2(os.path.join(args.root, "target", "release", name), bindir)
        self.chatspace = os.path.join(bindir, "chatspace")
        self.encoder = os.path.join(bindir, "chatspace-encoder")
        self.ort_lib = os.path.realpath(
            os.path.join(args.root, ".onnxruntime", "libonnxruntime.so"))
        self.parquet = os.path.join(args.shared, "data", "debian-chat.parquet")
        self.minilm = os.path.join(args.shared, "models", "all-MiniLM-L6-v2")
        self.null = os.path.join(args.shared, "models", "null-384")
        self._n = 0

    def seq(self):
        self._n += 1
        return self._n


def versions(ctx):
    from importlib.metadata import version

    git = subprocess.run(["git", "-C", ctx.root, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    out = {"chatspace_git": git or "unknown"}
    for pkg in ("sentence-transformers", "torch", "onnxruntime", "tokenizers", "transformers"):
        out[pkg] = version(pkg)
    return out


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def median_of(results, key):
    return statistics.median(key(r) for r in results)


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
    null_rows = 8192 if args.quick else None  # None: all 63,904
    startup_runs = 10 if args.quick else 40
    args.repeats = args.repeats or (1 if args.quick else 2)
    if rows < 1 or args.repeats < 1:
        raise SystemExit("bench: --rows and --repeats must be positive")
    ctx = Ctx(args)
    try:
        report = bench(ctx, rows, null_rows, args.repeats, startup_runs)
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
    say(f"work folder {ctx.work}; cores {os.cpu_count()}; load average {load_start}")
    texts = load_texts(ctx.parquet, rows)
    tokens = count_tokens(ctx.minilm, texts)
    texts_path = os.path.join(ctx.work, "texts-minilm.json")
    with open(texts_path, "w") as f:
        json.dump(texts, f)
    say(f"MiniLM: {len(texts)} texts from the first {rows} rows, {tokens} tokens")

    # 1. MiniLM, interleaved rounds ---------------------------------------------------------
    cs_configs = {
        "chatspace 2 enc x 1 thr": ["--encoders", "2", "--threads", "1"],
        "chatspace defaults": [],
        "chatspace 1 enc x 2 thr": ["--encoders", "1", "--threads", "2"],
    }
    py_configs = {
        "sentence-transformers": ("st", []),
        "raw ORT, 32-row batches": ("ort", ["--batching", "rows32"]),
        "raw ORT, ~1,024-token batches": ("ort", ["--batching", "tokens1024"]),
    }
    # Alternate chatspace and Python so drift in the machine's load hits both alike.
    order = []
    for cs, py in zip(cs_configs, py_configs):
        order += [cs, py]
    results = {name: [] for name in order}
    for r in range(repeats):
        for name in order if r % 2 == 0 else list(reversed(order)):
            say(f"round {r + 1}/{repeats}: {name}")
            if name in cs_configs:
                res = run_chatspace(ctx, f"minilm{r}", ctx.minilm, cs_configs[name], rows)
            else:
                kind, extra = py_configs[name]
                res = run_worker(ctx, kind, ctx.minilm, texts_path, extra)
            results[name].append(res)

    # Same rows, same vectors? chatspace's first run is the reference.
    cs_first = results["chatspace 2 enc x 1 thr"][0]
    cs_texts, cs_emb = chatspace_embeddings(cs_first["output"])
    if cs_texts != texts:
        raise SystemExit("bench: chatspace embedded other texts than the Python baselines")
    cosines = {
        name: min_cosine(np.load(results[name][0]["emb_path"]), cs_emb) for name in py_configs
    }
    minilm = []
    for name in order:
        rs = results[name]
        if name in cs_configs:
            wall = median_of(rs, lambda x: x["wall_s"])
            dur = median_of(rs, lambda x: x["summary"]["duration_seconds"])
            first = median_of(rs, lambda x: x["summary"]["seconds_to_first_row"])
            row = {
                "name": name, "kind": "chatspace", "seconds": wall,
                "timed": "end to end: process start, model load, read, embed, write",
                "command": rs[0]["command"],
                "config": rs[0]["config"],
                "summary_duration_s": dur,
                "summary_rows_per_s": median_of(rs, lambda x: x["summary"]["rows_per_second"]),
                "summary_tokens": rs[0]["summary"]["tokens"],
                "summary_padded_tokens": rs[0]["summary"]["padded_tokens"],
                "padding_ratio": rs[0]["summary"]["padding_ratio"],
                "seconds_to_first_row": first,
                "launch_to_start_s": median_of(rs, lambda x: x["launch_to_start_s"]),
                "launch_to_first_row_s": median_of(rs, lambda x: x["launch_to_first_row_s"]),
                "supervisor_peak_rss": max(x["supervisor_peak_rss"] for x in rs),
                "supervisor_cpu_s": rs[0]["supervisor_cpu_s"],
                "encoder_cpu_s": rs[0]["encoder_cpu_s"],
                "encoder_peak_rss": max(max(x["encoder_peak_rss"], default=0) for x in rs),
            }
            if rs[0]["summary"]["tokens"] != tokens:
                say(f"note: {name} counted {rs[0]['summary']['tokens']} tokens, Python {tokens}")
            for x in rs:
                if x["summary"]["rows_total"] != len(texts):
                    raise SystemExit(f"bench: {name} embedded {x['summary']['rows_total']} rows, "
                                     f"expected {len(texts)}")
        else:
            row = {
                "name": name, "kind": "python", "seconds": median_of(rs, lambda x: x["encode_s"]),
                "timed": "encode loop only (model load and a 32-row warm-up excluded)",
                "command": rs[0]["command"],
                "load_s": median_of(rs, lambda x: x["load_s"]),
                "min_cosine_vs_chatspace": cosines[name],
                **{k: v for k, v in rs[0].items() if k not in ("emb_path", "command", "rows")},
            }
        row["all_seconds"] = [x.get("wall_s", x.get("encode_s")) for x in rs]
        row["rows"] = len(texts)
        row["tokens"] = tokens
        row["rows_per_s"] = len(texts) / row["seconds"]
        row["tokens_per_s"] = tokens / row["seconds"]
        minilm.append(row)
    by_name = {r["name"]: r for r in minilm}
    st = by_name["sentence-transformers"]
    best_ort = max((by_name[n] for n in py_configs if n.startswith("raw ORT")),
                   key=lambda r: r["rows_per_s"])
    for r in minilm:
        if r["kind"] == "chatspace":
            r["vs_st"] = r["rows_per_s"] / st["rows_per_s"]
            r["vs_best_ort"] = r["rows_per_s"] / best_ort["rows_per_s"]

    # Diagnostic: the encoder alone, 2 threads, no supervisor.
    say("diagnostic: chatspace-encoder embed alone")
    enc = run_encoder_alone(ctx, ctx.minilm, texts, 2)
    load = min(run_encoder_alone(ctx, ctx.minilm, texts[:1], 2)["wall_s"] for _ in range(3))
    net = max(enc["wall_s"] - load, 1e-9)
    diag = {**enc, "load_s": load, "rows_per_s": len(texts) / net, "tokens_per_s": tokens / net,
            "vs_best_ort": (len(texts) / net) / best_ort["rows_per_s"]}

    # 2./3. null-384 capacity, between two tokenizers-floor runs ----------------------------
    null_texts = load_texts(ctx.parquet, null_rows)
    null_path = os.path.join(ctx.work, "texts-null.json")
    with open(null_path, "w") as f:
        json.dump(null_texts, f)
    say(f"null-384: {len(null_texts)} texts")
    floors, null_runs = [], []
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: tokenizers floor, chatspace null-384, tokenizers floor")
        floors.append(run_worker(ctx, "tokenize", ctx.null, null_path, emb=False))
        null_runs.append(run_chatspace(ctx, f"null{r}", ctx.null,
                                       ["--encoders", "2", "--threads", "1"], null_rows))
        shutil.rmtree(null_runs[-1]["output"], ignore_errors=True)
    floors.append(run_worker(ctx, "tokenize", ctx.null, null_path, emb=False))
    floor_s = median_of(floors, lambda x: x["encode_s"])
    null_wall = median_of(null_runs, lambda x: x["wall_s"])
    nr = null_runs[0]
    if nr["summary"]["rows_total"] != len(null_texts):
        raise SystemExit(f"bench: null-384 run embedded {nr['summary']['rows_total']} rows, "
                         f"expected {len(null_texts)}")
    null = {
        "rows": len(null_texts),
        "command": nr["command"],
        "chatspace_seconds": null_wall,
        "chatspace_rows_per_s": len(null_texts) / null_wall,
        "chatspace_summary_rows_per_s": median_of(null_runs,
                                                  lambda x: x["summary"]["rows_per_second"]),
        "padding_ratio": nr["summary"]["padding_ratio"],
        "floor_seconds": floor_s,
        "floor_all_seconds": [x["encode_s"] for x in floors],
        "floor_rows_per_s": len(null_texts) / floor_s,
        "floor_fast_rows_per_s": len(null_texts) / median_of(
            floors, lambda x: x.get("encode_batch_fast_s", float("nan"))),
        "floor_timed": "tokenizers encode_batch only (no Parquet read, tokenizer load excluded)",
        "supervisor_peak_rss": max(x["supervisor_peak_rss"] for x in null_runs),
        "supervisor_cpu_s": nr["supervisor_cpu_s"],
        "encoder_cpu_s": nr["encoder_cpu_s"],
        "encoder_peak_rss": [max(x["encoder_peak_rss"], default=0) for x in null_runs],
        "encoder_peak_rss_each": null_runs[0]["encoder_peak_rss"],
    }
    null["ratio"] = null["chatspace_rows_per_s"] / null["floor_rows_per_s"]

    # 4. first row: a one-row run, end to end, as a cross-check ------------------------------
    one_row = [run_chatspace(ctx, f"one{i}", ctx.minilm, ["--encoders", "2", "--threads", "1"],
                             1, sample_rss=False) for i in range(3)]

    # 5. start-up ----------------------------------------------------------------------------
    say("start-up: chatspace --help vs python3 -c 'import argparse'")
    st_ms = startup(ctx, startup_runs, 3)

    main_cs = by_name["chatspace 2 enc x 1 thr"]
    help_ms = st_ms["chatspace --help"]
    py_ms = st_ms["python3 -c 'import argparse'"]
    targets = [
        ("MiniLM e2e chatspace (2x1) / sentence-transformers", main_cs["vs_st"], ">=", 1.5, "x"),
        ("MiniLM e2e chatspace (2x1) / best raw ORT", main_cs["vs_best_ort"], ">=", 1.1, "x"),
        ("MiniLM e2e chatspace (2x1) tokens/s", main_cs["tokens_per_s"], ">=", 4100, "tok/s"),
        ("null-384 chatspace / tokenizers encode_batch floor", null["ratio"], ">=", 1.5, "x"),
        ("supervisor peak RSS, null-384 full run (MB)", null["supervisor_peak_rss"] / MB,
         "<=", 100, "MB"),
        ("launch to first embedded row, MiniLM (s)", main_cs["launch_to_first_row_s"],
         "<=", 1.0, "s"),
        ("import argparse / chatspace --help", py_ms / help_ms, ">=", 20, "x"),
    ]
    target_rows = []
    for name, value, op, want, unit in targets:
        ok = value >= want if op == ">=" else value <= want
        target_rows.append({"metric": name, "value": value, "op": op, "target": want,
                            "unit": unit, "pass": bool(ok)})
    return {
        "machine": {"cores": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg(),
                    "memory_gib": psutil.virtual_memory().total / (1 << 30)},
        "versions": versions(ctx),
        "rows_requested": rows,
        "repeats": repeats,
        "minilm": minilm,
        "encoder_alone": diag,
        "null384": null,
        "first_row": {
            "summary_seconds_to_first_row": main_cs["seconds_to_first_row"],
            "launch_to_start_s": main_cs["launch_to_start_s"],
            "launch_to_first_row_s": main_cs["launch_to_first_row_s"],
            "one_row_run_wall_s": statistics.median(x["wall_s"] for x in one_row),
            "one_row_run_launch_to_first_row_s": statistics.median(
                x["launch_to_first_row_s"] for x in one_row),
        },
        "startup_ms": {"chatspace --help": help_ms, "python3 -c 'import argparse'": py_ms,
                       "runs": startup_runs},
        "targets": target_rows,
    }


def fmt_mb(b):
    return f"{b / MB:.1f} MB"


def print_report(rep):
    m = rep["minilm"]
    n_rows, n_tok = m[0]["rows"], m[0]["tokens"]
    mach = rep["machine"]
    print()
    print("chatspace " + rep["versions"]["chatspace_git"] + "; "
          + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if k != "chatspace_git")
          + f"; {mach['cores']} cores; load average {mach['load_average_start'][0]:.1f} at "
          f"the start, {mach['load_average_end'][0]:.1f} at the end")
    print(f"1. all-MiniLM-L6-v2: {n_rows} texts (first {rep['rows_requested']} rows), "
          f"{n_tok} real tokens; median of {rep['repeats']} interleaved round(s)")
    hdr = (f"{'contender':<38} {'seconds':>8} {'rows/s':>8} {'tokens/s':>9} {'vs ST':>7} "
           f"{'vs ORT*':>7}  timed")
    print(hdr)
    print("-" * (len(hdr) + 50))
    for r in m:
        vs_st = f"{r['vs_st']:.2f}x" if "vs_st" in r else ""
        vs_ort = f"{r['vs_best_ort']:.2f}x" if "vs_best_ort" in r else ""
        print(f"{r['name']:<38} {r['seconds']:8.2f} {r['rows_per_s']:8.1f} "
              f"{r['tokens_per_s']:9.0f} {vs_st:>7} {vs_ort:>7}  {r['timed']}")
    print("ORT* = the faster raw onnxruntime configuration. Python baselines: 2 threads, one "
          "process.")
    print("chatspace run summaries (run-train.json; its clock starts before the encoders start):")
    for r in m:
        if r["kind"] != "chatspace":
            continue
        c = r["config"]
        print(f"  {r['name']:<36} ({c['encoders']} enc x {c['threads']} thr, batch "
              f"{c['batch_size']}) {r['summary_duration_s']:6.2f} s, "
              f"{r['summary_rows_per_s']:6.1f} rows/s, "
              f"{r['summary_tokens'] / r['summary_duration_s']:5.0f} tokens/s, padding "
              f"{100 * r['padding_ratio']:4.1f}% ({r['summary_padded_tokens']} padded tokens), "
              f"first row at {r['seconds_to_first_row']:.2f} s (+{r['launch_to_start_s']:.2f} s "
              f"launch to run start); peak RSS supervisor {fmt_mb(r['supervisor_peak_rss'])}, "
              f"encoder {fmt_mb(r['encoder_peak_rss'])}; CPU s supervisor "
              f"{r['supervisor_cpu_s']:.1f}, encoders "
              + ", ".join(f"{c:.1f}" for c in r["encoder_cpu_s"]))
    for r in m:
        if r["kind"] == "python":
            extra = f", {r['padded_tokens']} padded tokens" if "padded_tokens" in r else ""
            print(f"  {r['name']:<36} load + warm-up {r['load_s']:.2f} s (untimed){extra}; "
                  f"min cosine vs chatspace {r['min_cosine_vs_chatspace']:.7f}; "
                  f"peak RSS {fmt_mb(r['peak_rss'])}")
    d = rep["encoder_alone"]
    print(f"diagnostic, chatspace-encoder embed alone (2 threads, length-sorted input, 32-row "
          f"batches): {d['wall_s']:.2f} s launch to exit, of which {d['load_s']:.2f} s start "
          f"and load; net {d['rows_per_s']:.1f} rows/s, {d['tokens_per_s']:.0f} tokens/s "
          f"= {d['vs_best_ort']:.2f}x best raw ORT")

    nl = rep["null384"]
    print()
    print(f"2./3. null-384: {nl['rows']} texts; chatspace --encoders 2 --threads 1")
    print(f"  chatspace end to end         {nl['chatspace_seconds']:7.2f} s "
          f"{nl['chatspace_rows_per_s']:8.0f} rows/s  (run summary: "
          f"{nl['chatspace_summary_rows_per_s']:.0f} rows/s, padding "
          f"{100 * nl['padding_ratio']:.1f}%)")
    print(f"  tokenizers encode_batch      {nl['floor_seconds']:7.2f} s "
          f"{nl['floor_rows_per_s']:8.0f} rows/s  ({nl['floor_timed']}; median of "
          f"{len(nl['floor_all_seconds'])}; encode_batch_fast: "
          f"{nl['floor_fast_rows_per_s']:.0f} rows/s)")
    print(f"  ratio {nl['ratio']:.2f}x. Peak RSS (VmHWM polled every 10 ms): supervisor "
          f"{fmt_mb(nl['supervisor_peak_rss'])}; encoders (every 100 ms) "
          + ", ".join(fmt_mb(b) for b in nl["encoder_peak_rss_each"])
          + f"; CPU seconds: supervisor {nl['supervisor_cpu_s']:.1f}, encoders "
          + ", ".join(f"{c:.1f}" for c in nl["encoder_cpu_s"]))

    fr = rep["first_row"]
    print()
    print(f"4. first row, MiniLM (chatspace 2 enc x 1 thr): launch to first row "
          f"{fr['launch_to_first_row_s']:.3f} s = {fr['launch_to_start_s']:.3f} s launch to "
          f"the run's start (its created_at) + seconds_to_first_row "
          f"{fr['summary_seconds_to_first_row']:.3f} s (first unit of rows back from an "
          f"encoder); a 1-row run: {fr['one_row_run_launch_to_first_row_s']:.3f} s to the "
          f"first row, {fr['one_row_run_wall_s']:.3f} s launch to exit")

    su = rep["startup_ms"]
    py_ms = su["python3 -c 'import argparse'"]
    print()
    print(f"5. start-up, median of {su['runs']} alternating runs: chatspace --help "
          f"{su['chatspace --help']:.2f} ms, python3 -c 'import argparse' {py_ms:.2f} ms")

    print()
    hdr = f"{'target (issue)':<54} {'measured':>14} {'target':>16}  result"
    print(hdr)
    print("-" * len(hdr))
    for t in rep["targets"]:
        v, unit = t["value"], t["unit"]
        val = f"{v:.0f} {unit}" if v >= 1000 else f"{v:.2f} {unit}"
        want = f"{t['op']} {t['target']:,} {unit}"
        print(f"{t['metric']:<54} {val:>14} {want:>16}  {'pass' if t['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()
