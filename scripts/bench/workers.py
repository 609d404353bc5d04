"""Python baselines for scripts/bench.sh, each run in its own process by driver.py.

    python workers.py st        --model DIR --texts F --out R [--emb E]
    python workers.py ort       --model DIR --texts F --out R [--emb E] --batching rows32|tokens1024
                                [--provider cpu|cuda] [--row-cap N]
    python workers.py tokenize  --model DIR --texts F --out R

--texts is a JSON list of strings; the result (a JSON object) goes to --out, the embeddings, in
input order, to --emb (.npy) after the timing. Model loading and a one-batch warm-up are outside
the timed region: only the encode loop is timed (`encode_s`).
"""

import argparse
import json
import os
import re
import resource
import sys
import time

import numpy as np
import psutil

THREADS = 2


class OthersCpu:
    """CPU the rest of the machine uses from now on, in cores: all CPUs' busy time (steal
    included) less that of this process and of the children it has waited for."""

    def __init__(self):
        self.busy0, self.own0 = self.busy(), self.own()

    @staticmethod
    def busy():
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    @staticmethod
    def own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cores(self, wall):
        used = (self.busy() - self.busy0) - (self.own() - self.own0)
        return max(used / max(wall, 1e-9), 0.0)


def max_seq_length(model_dir):
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        return int(json.load(f)["max_seq_length"])


def load_tokenizer(model_dir):
    """tokenizer.json with padding off and truncation as sentence-transformers sets it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_seq_length(model_dir))
    return tok


# --- sentence-transformers (torch, CPU) -------------------------------------------------------


def run_st(args, texts):
    import torch

    torch.set_num_threads(THREADS)
    from sentence_transformers import SentenceTransformer

    from onnx_to_st import build_st_folder

    t0 = time.perf_counter()
    folder = build_st_folder(args.model, args.workdir)
    model = SentenceTransformer(folder, device="cpu")
    model.encode(texts[:32], batch_size=32)  # warm-up, untimed
    load_s = time.perf_counter() - t0

    others = OthersCpu()
    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    encode_s = time.perf_counter() - t0
    info = {
        "others_cores": others.cores(encode_s),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "max_seq_length": model.max_seq_length,
    }
    return emb, load_s, encode_s, info


# --- raw onnxruntime -------------------------------------------------------------------------


def batches_of_rows(order, lens, rows):
    return [order[i : i + rows] for i in range(0, len(order), rows)]


def batches_of_tokens(order, lens, budget, row_cap=None):
    """Length-sorted batches filled while rows x longest row stays within `budget` tokens (and
    rows within `row_cap`, if given)."""
    out, cur, longest = [], [], 0
    for i in order:
        n = lens[i]
        full = row_cap is not None and len(cur) >= row_cap
        if cur and (full or (len(cur) + 1) * max(longest, n) > budget):
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out


def run_ort(args, texts):
    import onnxruntime as ort

    t0 = time.perf_counter()
    tok = load_tokenizer(args.model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.provider == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(os.path.join(args.model, "onnx", "model.onnx"), so,
                                providers=providers)
    if args.provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"workers.py: the CUDA provider did not load ({sess.get_providers()})")
    input_names = {i.name for i in sess.get_inputs()}

    def embed(encodings):
        lens = [len(e.ids) for e in encodings]
        order = sorted(range(len(encodings)), key=lens.__getitem__)
        if args.batching.startswith("rows"):
            batches = batches_of_rows(order, lens, int(args.batching[4:]))
        else:
            batches = batches_of_tokens(order, lens, int(args.batching[6:]), args.row_cap)
        out = np.empty((len(encodings), 0), dtype=np.float32)
        padded = 0
        for idx in batches:
            width = max(lens[i] for i in idx)
            padded += width * len(idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : lens[i]] = encodings[i].ids
                mask[r, : lens[i]] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = sess.run(["last_hidden_state"], feeds)[0]
            m = mask[:, :, None].astype(np.float32)
            vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            if out.shape[1] == 0:
                out = np.empty((len(encodings), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        return out, padded, len(batches)

    embed(tok.encode_batch(texts[:32]))  # warm-up, untimed
    load_s = time.perf_counter() - t0

    others = OthersCpu()
    t0 = time.perf_counter()
    emb, padded, nbatches = embed(tok.encode_batch(texts))  # tokenizing is timed too
    encode_s = time.perf_counter() - t0
    info = {
        "others_cores": others.cores(encode_s),
        "onnxruntime": ort.__version__,
        "intra_op_threads": THREADS,
        "provider": sess.get_providers()[0],
        "batching": args.batching,
        "row_cap": args.row_cap,
        "batches": nbatches,
        "padded_tokens": padded,
    }
    return emb, load_s, encode_s, info


# --- tokenizers floor ------------------------------------------------------------------------


def run_tokenize(args, texts):
    import tokenizers

    t0 = time.perf_counter()
    tok = load_tokenizer(args.model)
    tok.encode_batch(texts[:256])  # warm-up (starts the thread pool), untimed
    load_s = time.perf_counter() - t0

    others = OthersCpu()
    t0 = time.perf_counter()
    encs = tok.encode_batch(texts)
    encode_s = time.perf_counter() - t0
    tokens = sum(len(e.ids) for e in encs)
    del encs
    info = {"others_cores": others.cores(encode_s), "tokenizers": tokenizers.__version__,
            "tokens": tokens}
    if hasattr(tok, "encode_batch_fast"):  # no offsets: the cheaper variant, for information
        t0 = time.perf_counter()
        tok.encode_batch_fast(texts)
        info["encode_batch_fast_s"] = time.perf_counter() - t0
    return None, load_s, encode_s, info


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["st", "ort", "tokenize"])
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--emb")
    p.add_argument("--batching", default="rows32",
                   help="rowsN (N rows a batch) or tokensN (N padded tokens a batch)")
    p.add_argument("--row-cap", type=int, help="most rows in a tokensN batch")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--workdir", default=".")
    args = p.parse_args()
    if not re.fullmatch(r"(rows|tokens)[1-9][0-9]*", args.batching):
        p.error(f"--batching {args.batching}: rowsN or tokensN expected")
    with open(args.texts) as f:
        texts = json.load(f)
    runner = {"st": run_st, "ort": run_ort, "tokenize": run_tokenize}[args.kind]
    emb, load_s, encode_s, info = runner(args, texts)
    if emb is not None and args.emb:
        np.save(args.emb, np.asarray(emb, dtype=np.float32))
    with open(args.out, "w") as f:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        json.dump({"rows": len(texts), "load_s": load_s, "encode_s": encode_s,
                   "peak_rss": peak_rss, **info}, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
