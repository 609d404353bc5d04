"""ONNX Runtime session settings for the encoder, measured: graph optimisation level and the
CPU memory arena, one intra-op thread (as each chatspace encoder runs), on MiniLM.

    .bench-venv/bin/python scripts/bench/ort_settings.py [--rows N] [--repeats R]

Same texts as scripts/bench.sh (first assistant turn of ../shared/data/debian-chat.parquet),
length-sorted batches of about 512 tokens (chatspace's default), model load excluded. Settings
run interleaved, R rounds; the table gives each one's median seconds and its ratio to the
encoder's setting (all optimisations, arena on).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from driver import load_texts  # noqa: E402
from workers import load_tokenizer  # noqa: E402

LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def batches(tok, texts, budget=512, max_rows=32):
    encs = sorted(tok.encode_batch(texts), key=lambda e: -len(e.ids))
    out, cur = [], []
    for e in encs:
        longest = len(cur[0].ids) if cur else len(e.ids)
        if cur and (len(cur) == max_rows or (len(cur) + 1) * longest > budget):
            out.append(cur)
            cur = []
        cur.append(e)
    if cur:
        out.append(cur)
    feeds = []
    for b in out:
        seq = max(len(e.ids) for e in b)
        ids = np.zeros((len(b), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(b):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return feeds


def session(model, level, arena):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = LEVELS[level]
    so.enable_cpu_mem_arena = arena
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(HERE))
    model_dir = os.path.join(root, "..", "shared", "models", "all-MiniLM-L6-v2")
    texts = load_texts(os.path.join(root, "..", "shared", "data", "debian-chat.parquet"), a.rows)
    feeds = batches(load_tokenizer(model_dir), texts)
    model = os.path.join(model_dir, "onnx", "model.onnx")
    settings = [(lvl, True) for lvl in LEVELS] + [("all", False)]
    sessions = {s: session(model, *s) for s in settings}
    times = {s: [] for s in settings}
    for r in range(a.repeats):
        for s in settings if r % 2 == 0 else reversed(settings):
            sess = sessions[s]
            sess.run(None, feeds[0])
            t0 = time.perf_counter()
            for f in feeds:
                sess.run(None, f)
            times[s].append(time.perf_counter() - t0)
    base = statistics.median(times[("all", True)])
    print(f"MiniLM, {len(texts)} texts, {len(feeds)} batches of <= 512 tokens, 1 thread, "
          f"median of {a.repeats}")
    print(f"{'optimisation':<12} {'arena':<6} {'seconds':>8} {'vs encoder':>10}")
    for s in settings:
        m = statistics.median(times[s])
        print(f"{s[0]:<12} {'on' if s[1] else 'off':<6} {m:8.2f} {m / base:9.2f}x")


if __name__ == "__main__":
    main()
