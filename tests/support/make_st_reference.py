"""Expected vectors from Python sentence-transformers for the model options the shared
references do not cover: writes tests/fixtures/st/<case>.parquet (id, text, embedding) for each
case in tests/fixtures/st/cases.json.

    /path/to/venv-with-sentence-transformers/bin/python tests/support/make_st_reference.py

Needs sentence-transformers (6.2.0 was used), torch, transformers, onnxruntime and pyarrow. The
shared model folders hold ONNX exports only, no PyTorch weights; so each model is loaded by
sentence-transformers from a copy of its folder with randomly initialised weights, and its
Transformer module's forward pass is replaced by the folder's ONNX model run with Python
onnxruntime. Everything else is sentence-transformers' own code: tokenization, truncation,
prompts (and the prompt length used by include_prompt=False), the Pooling and Normalize
modules, truncate_dim. Texts are encoded one at a time (batch size 1, no padding), like the
shared references. A case's overrides:

- pooling: a Pooling module with these modes replaces the folder's (its include_prompt kept);
- include_prompt: false: the Pooling module excludes the prompt's tokens (the chatspace test
  runs on a copy of the folder whose 1_Pooling/config.json says so);
- normalize: false: the Normalize module is removed;
- truncate_dim: encode(truncate_dim=N, normalize_embeddings=<the model normalizes>), that is
  truncate, then normalize again if the model normalizes (Matryoshka);
- prompt / prompt_name: passed to encode();
- max_seq_length: set on the model.
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules.pooling import Pooling

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
OUT = os.path.join(REPO, "tests", "fixtures", "st")


def texts():
    """64 texts of the shared MiniLM reference: the first 48 descriptions and the 16 edge cases."""
    t = pq.read_table(os.path.join(SHARED, "reference", "all-MiniLM-L6-v2.parquet"))
    ids, txt = t.column("id").to_pylist(), t.column("text").to_pylist()
    keep = list(range(48)) + list(range(len(ids) - 16, len(ids)))
    return [ids[i] for i in keep], [txt[i] for i in keep]


def load(name, tmp):
    folder = os.path.join(SHARED, "models", name)
    copy = os.path.join(tempfile.mkdtemp(dir=tmp), name)
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("onnx"))
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.from_pretrained(folder)
    transformers.AutoModel.from_config(cfg).save_pretrained(copy)
    model = SentenceTransformer(copy, device="cpu")
    session = ort.InferenceSession(os.path.join(folder, "onnx", "model.onnx"))
    inputs = [i.name for i in session.get_inputs()]
    transformer = model[0]

    def forward(features, **kwargs):
        ids = features["input_ids"]
        mask = features["attention_mask"]
        feeds = {}
        for n in inputs:
            if n == "input_ids":
                feeds[n] = ids.numpy().astype(np.int64)
            elif n == "attention_mask":
                feeds[n] = mask.numpy().astype(np.int64)
            elif n == "token_type_ids":
                feeds[n] = features.get("token_type_ids", torch.zeros_like(ids)).numpy().astype(np.int64)
            elif n == "position_ids":
                feeds[n] = (mask.cumsum(-1) - 1).clamp(min=0).numpy().astype(np.int64)
        features[transformer.module_output_name] = torch.from_numpy(session.run(None, feeds)[0])
        return features

    transformer.forward = forward
    return model


def run(case, ids, txt, tmp):
    model = load(case["model"], tmp)
    pooling = model[1]
    modes = case.get("pooling")
    include = case.get("include_prompt", True)
    if modes is not None or not include:
        if modes is None:
            modes = pooling.pooling_mode
        modes = modes[0] if isinstance(modes, list) and len(modes) == 1 else tuple(modes) if isinstance(modes, list) else modes
        model._modules["1"] = Pooling(pooling.embedding_dimension, pooling_mode=modes, include_prompt=include)
    normalizes = len(model) > 2
    if case.get("normalize") is False:
        del model._modules["2"]
        normalizes = False
    if case.get("max_seq_length"):
        model.max_seq_length = case["max_seq_length"]
    kwargs = {}
    if case.get("truncate_dim"):
        kwargs = {"truncate_dim": case["truncate_dim"], "normalize_embeddings": normalizes}
    if case.get("prompt") is not None:
        kwargs["prompt"] = case["prompt"]
    if case.get("prompt_name") is not None:
        kwargs["prompt_name"] = case["prompt_name"]
    emb = model.encode(txt, batch_size=1, convert_to_numpy=True, **kwargs).astype(np.float32)
    dim = emb.shape[1]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(txt, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
        }
    )
    meta = {
        "case": json.dumps(case),
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": ort.__version__,
        "batch_size": "1",
    }
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, os.path.join(OUT, case["name"] + ".parquet"), compression="zstd")
    print(f"{case['name']}: {len(ids)} x {dim}", file=sys.stderr)


def main():
    with open(os.path.join(OUT, "cases.json")) as f:
        cases = json.load(f)
    only = set(sys.argv[1:])
    ids, txt = texts()
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            if not only or case["name"] in only:
                run(case, ids, txt, tmp)


if __name__ == "__main__":
    main()
