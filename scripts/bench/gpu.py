"""The GPU half of scripts/bench-gpu.sh, run on the GPU machine from the unpacked stage.

    python gpu.py --stage DIR [--rows N] [--json PATH] [--cpu]

On the first N rows of debian-chat (first assistant turn), on GPU 0: chatspace --device cuda
(one encoder, the GPU defaults) against raw Python onnxruntime-gpu on the same ONNX file
(length-sorted batches of 16,384 tokens / 512 rows, as chatspace's defaults, and of 32 rows),
both pooling and normalising the same way. Prints a table; exits 1 if a run fails or the
vectors disagree (min cosine < 0.999). --cpu runs the same steps on the CPU: a dry run of
the packing and the script on a machine without a GPU.
"""

import argparse
import json
import os
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
    rep = {"gpu": gpu_name(), "rows": len(texts)}
    print(f"gpu: {rep['gpu']}; {len(texts)} texts", flush=True)

    one = ["--device", device, "--encoders", "1"]
    cs = run_chatspace(ctx, device, minilm, one, args.rows)
    big = run_chatspace(ctx, device + "-big", minilm,
                        [*one, "--batch-size", "1024", "--tokens-per-batch", "32768"],
                        args.rows, watch=False)
    provider = ["--provider", device]
    raw = run_worker(ctx, "ort", minilm, texts_path,
                     [*provider, "--batching", "tokens16384", "--row-cap", "512"])
    raw32 = run_worker(ctx, "ort", minilm, texts_path, [*provider, "--batching", "rows32"],
                       emb=False)
    _, cs_emb = chatspace_embeddings(cs["output"])
    cos = min_cosine(np.load(raw["emb_path"]), cs_emb)

    n = len(texts)
    rows = []
    for name, secs in [
        (f"chatspace --device {device} (1 encoder), launch to exit", cs["seconds"]),
        ("  same run, its own clock", cs["summary"]["duration_seconds"]),
        (f"chatspace --device {device}, 1,024 rows / 32,768 tokens", big["seconds"]),
        (f"raw onnxruntime ({device}), 16,384 tokens / 512 rows", raw["seconds"]),
        (f"raw onnxruntime ({device}), 32 rows", raw32["seconds"]),
    ]:
        rows.append({"name": name, "seconds": secs, "rows_per_s": n / secs})
    rep.update(runs=rows, min_cosine=cos, chatspace_summary=cs["summary"],
               chatspace_config=cs["config"], encoders=cs.get("encoders"),
               supervisor_peak_rss=cs.get("supervisor_peak_rss"),
               raw_info={k: raw.get(k) for k in ("onnxruntime", "provider", "batches",
                                                  "padded_tokens")})
    print(f"{'contender':58} {'seconds':>9} {'rows/s':>10}")
    for r in rows:
        print(f"{r['name']:58} {r['seconds']:9.2f} {r['rows_per_s']:10.0f}")
    # Raw onnxruntime's time is its encode loop alone (model load and warm-up outside it).
    print(f"chatspace (launch to exit) against raw 16,384-token batches: "
          f"{raw['seconds'] / cs['seconds']:.2f}x")
    print(f"padding ratio {cs['summary']['padding_ratio']:.3f}; first row after "
          f"{cs['launch_to_first_row_s']:.2f} s; min cosine chatspace vs raw {cos:.6f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
    if cos < 0.999:
        raise SystemExit(f"gpu: chatspace and raw onnxruntime disagree (min cosine {cos})")


if __name__ == "__main__":
    main()
