"""The GPU half of scripts/bench-gpu.sh, run on the GPU machine from the unpacked stage.

    python gpu.py --stage DIR [--rows N] [--json PATH] [--cpu]

On the first N rows of debian-chat (first assistant turn), on GPU 0, each step one process:

1. raw Python onnxruntime-gpu on MiniLM's ONNX file, length-sorted batches of 16,384 tokens /
   512 rows (chatspace's GPU defaults): the reference vectors and the baseline;
2. chatspace --device cuda with 1 encoder (the defaults), with 1,024 rows / 32,768 tokens, and
   with 2 and 4 encoders sharing the one GPU;
3. MiniLM through ONNX Runtime's transformer optimizer (its BERT fusions: attention where the
   export's pattern allows, skip-layer-norm, bias-GELU; then float16): chatspace and raw
   onnxruntime on it (the fused operators are counted in the output);
4. raw onnxruntime in 32-row batches (a naive baseline).

Prints one table (seconds, rows/s, min cosine against step 1) and exits 1 if a run fails or a
run's vectors disagree with the reference (min cosine < 0.999 in fp32, < 0.99 in fp16). --cpu
runs the same steps on the CPU (a dry run). Raw onnxruntime finds the CUDA
libraries through LD_LIBRARY_PATH (CHATSPACE_BENCH_CUDA_LIBS); chatspace-encoder without it,
from the nvidia/ folder beside the runtime, as it would in a pip install.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from driver import (  # noqa: E402
    chatspace_embeddings,
    load_texts,
    min_cosine,
    run_chatspace,
    run_worker,
    write_json,
)


class Ctx:
    """What driver.py's run_chatspace and run_worker read."""

    def __init__(self, stage, work):
        self.chatspace = os.path.join(stage, "bin", "chatspace")
        self.encoder = os.path.join(stage, "bin", "chatspace-encoder")
        self.parquet = os.path.join(stage, "data", "debian-chat.parquet")
        self.ort_lib = os.path.join(stage, "ort", "onnxruntime", "capi", "libonnxruntime.so.1.31.1")
        self.work = work
        self._n = 0

    def seq(self):
        self._n += 1
        return self._n


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader", "-i", "0"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return out or "unknown GPU"
    except (OSError, subprocess.CalledProcessError) as e:
        return f"nvidia-smi failed: {e}"


@contextlib.contextmanager
def cuda_loader_path():
    """LD_LIBRARY_PATH with the CUDA wheels' lib/ folders, for raw onnxruntime only."""
    libs = os.environ.get("CHATSPACE_BENCH_CUDA_LIBS", "")
    old = os.environ.get("LD_LIBRARY_PATH")
    if libs:
        os.environ["LD_LIBRARY_PATH"] = libs + (":" + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


def fused_model(src, dst, fp16, use_gpu):
    """A copy of the model folder `src` whose onnx/model.onnx went through ONNX Runtime's
    transformer optimizer (BERT fusions: Attention, SkipLayerNormalization, Gelu...), then
    float16 if `fp16`. Returns the fused operators' counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("onnx"))
    os.makedirs(os.path.join(dst, "onnx"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    opt = optimize_model(os.path.join(src, "onnx", "model.onnx"), model_type="bert",
                         num_heads=cfg["num_attention_heads"], hidden_size=cfg["hidden_size"],
                         opt_level=0, use_gpu=use_gpu)
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    if fp16:
        opt.convert_float_to_float16(keep_io_types=False)
    opt.save_model_to_file(os.path.join(dst, "onnx", "model.onnx"))
    return stats


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stage", required=True)
    p.add_argument("--rows", type=int, default=63904)
    p.add_argument("--json")
    p.add_argument("--cpu", action="store_true",
                   help="a dry run of the same steps on the CPU (for a machine without a GPU)")
    args = p.parse_args()
    device = "cpu" if args.cpu else "cuda"
    stage = os.path.abspath(args.stage)
    ctx = Ctx(stage, tempfile.mkdtemp(prefix="chatspace-gpu-"))
    minilm = os.path.join(stage, "models", "all-MiniLM-L6-v2")
    texts = load_texts(ctx.parquet, args.rows)
    texts_path = write_json(os.path.join(ctx.work, "texts.json"), texts)
    rep = {"gpu": gpu_name(), "rows": len(texts), "device": device, "runs": []}
    print(f"gpu: {rep['gpu']}; {len(texts)} texts", flush=True)
    provider = ["--provider", device]

    # Each step: a table row (with the min cosine against `against`, the reference vectors of
    # the same texts, when given) and the step's vectors.
    def raw(label, model, batching, against=None, emb=True):
        with cuda_loader_path():
            r = run_worker(ctx, "ort", model, texts_path, [*provider, *batching], emb=emb)
        return row(label, r, np.load(r["emb_path"]) if emb else None, against)

    def chatspace(label, model, flags, against=None):
        r = run_chatspace(ctx, f"cs{ctx.seq()}", model, ["--device", device, *flags], args.rows,
                          watch=False)
        return row(label, r, chatspace_embeddings(r["output"])[1], against)

    def row(label, r, emb, against):
        seconds = r["seconds"]
        cos = min_cosine(against, emb) if against is not None and emb is not None else None
        entry = {"name": label, "seconds": seconds, "rows_per_s": len(texts) / seconds,
                 "min_cosine": cos, "command": r.get("command")}
        for k in ("summary", "config", "provider", "batches", "padded_tokens"):
            if k in r:
                entry[k] = r[k]
        rep["runs"].append(entry)
        shown = "" if cos is None else f"  min cos {cos:.6f}"
        print(f"  {label}: {seconds:.2f} s{shown}", flush=True)
        return entry, emb

    tokens = ["--batching", "tokens16384", "--row-cap", "512"]
    first, reference = raw(f"raw onnxruntime ({device}), 16,384 tokens / 512 rows", minilm, tokens)
    first["min_cosine"] = 1.0
    one = ["--encoders", "1"]
    shared = "" if args.cpu else " on one GPU"
    fp32 = [
        (f"chatspace --device {device}, 1 encoder", one),
        (f"chatspace --device {device}, 1 encoder, 1,024 rows / 32,768 tokens",
         [*one, "--batch-size", "1024", "--tokens-per-batch", "32768"]),
        (f"chatspace --device {device}, 2 encoders{shared}", ["--encoders", "2"]),
        (f"chatspace --device {device}, 4 encoders{shared}", ["--encoders", "4"]),
    ]
    for label, flags in fp32:
        chatspace(label, minilm, flags, reference)

    kind = "fp16"
    fused = os.path.join(ctx.work, "minilm-fused")
    rep["fused_operators"] = fused_model(minilm, fused, fp16=True, use_gpu=not args.cpu)
    attention = any("Attention" in k for k in rep["fused_operators"])
    print(f"fused model (fp16): {rep['fused_operators']}"
          + ("" if attention else "; attention not fused (the export's pattern does not match)"),
          flush=True)
    fused_rows = [
        chatspace(f"chatspace --device {device}, 1 encoder, fused {kind}", fused, one,
                  reference)[0],
        raw(f"raw onnxruntime ({device}), fused {kind}, 16,384 tokens", fused, tokens,
            reference)[0],
    ]
    raw(f"raw onnxruntime ({device}), 32 rows", minilm, ["--batching", "rows32"], emb=False)

    print(f"\n{rep['gpu']}; {len(texts)} texts; fused: {rep['fused_operators']}")
    print(f"{'contender':66} {'seconds':>8} {'rows/s':>9} {'min cos':>9}")
    for r in rep["runs"]:
        cos = "" if r["min_cosine"] is None else f"{r['min_cosine']:.6f}"
        print(f"{r['name']:66} {r['seconds']:8.2f} {r['rows_per_s']:9.0f} {cos:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
    bad = [r["name"] for r in rep["runs"] if r["min_cosine"] is not None and
           r["min_cosine"] < (0.99 if r in fused_rows else 0.999)]
    if bad:
        raise SystemExit(f"gpu: vectors disagree with raw onnxruntime fp32: {bad}")


if __name__ == "__main__":
    main()
