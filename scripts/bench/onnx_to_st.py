"""Make a sentence-transformers (torch) folder out of a model folder that has only the ONNX export.

../shared/models/all-MiniLM-L6-v2 holds the published weights as onnx/model.onnx only, so the
torch baseline gets its weights back from that file: named initializers (embeddings, LayerNorms,
biases) keep their torch names; each Linear weight is the B input of a MatMul, transposed, and
takes its name from the bias added right after it. The folder's configs and tokenizer are linked
as they are. driver.py checks the result against chatspace's own embeddings (cosine).
"""

import os

import numpy as np

LINK = [
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling",
]


def onnx_state_dict(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    # Parameters keep their torch names; exporter-made tensors are `onnx::...` or `/path/...`.
    state = {k: v for k, v in inits.items() if not k.startswith(("onnx::", "/")) and "." in k}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if node.input[1] in state or weight.ndim != 2:
            continue  # already named (e.g. an exporter that keeps torch names)
        bias = None
        for user in consumers.get(node.output[0], []):
            if user.op_type == "Add":
                bias = next((i for i in user.input if i.endswith(".bias")), None)
        if bias is None:
            raise SystemExit(f"onnx_to_st: no bias found after MatMul {node.name}")
        state[bias[: -len(".bias")] + ".weight"] = np.ascontiguousarray(weight.T)
    return state


def _torch_name(name, expected):
    """The exporter may prefix names (`m.encoder...` for a wrapper module): strip the prefix."""
    if name in expected:
        return name
    hits = [e for e in expected if name.endswith("." + e)]
    return hits[0] if len(hits) == 1 else name


def build_st_folder(model_dir, workdir):
    """Returns a folder sentence-transformers can load with torch weights; made once per workdir."""
    import torch
    from safetensors.torch import save_file

    folder = os.path.join(os.path.abspath(workdir), "st-" + os.path.basename(model_dir.rstrip("/")))
    weights = os.path.join(folder, "model.safetensors")
    if os.path.exists(weights):
        return folder
    os.makedirs(folder, exist_ok=True)
    for name in LINK:
        src = os.path.join(model_dir, name)
        dst = os.path.join(folder, name)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(os.path.abspath(src), dst)
    state = onnx_state_dict(os.path.join(model_dir, "onnx", "model.onnx"))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}

    from transformers import AutoConfig, AutoModel

    model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    expected = set(model.state_dict())
    tensors = {_torch_name(k, expected): v for k, v in tensors.items()}
    missing = sorted(k for k in expected - set(tensors) if not k.startswith("pooler."))
    unknown = sorted(set(tensors) - expected)
    # Buffers (position_ids, token_type_ids) may be absent from the export; the model makes them.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unknown:
        raise SystemExit(f"onnx_to_st: weights missing {missing[:5]}, unknown {unknown[:5]}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    return folder
