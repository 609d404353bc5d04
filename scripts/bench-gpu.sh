#!/usr/bin/env bash
# GPU check: a smoke test of chatspace-encoder on GPU 0, then chatspace --device cuda (1, 2 and 4
# encoders on one GPU, an fp16 export with fused attention) against raw Python onnxruntime-gpu,
# on the same rows of debian-chat. Made for a GPU machine that reaches no network, takes at most
# 64 MiB per call and goes cold (losing what it was sent) 30 s after a call ends:
#
#   here:  scripts/bench-gpu.sh pack
#          builds the release binaries, fetches the onnxruntime-gpu wheel for CPython 3.12
#          (sha256-pinned) and packs it with the binaries, ../shared/models/all-MiniLM-L6-v2 and
#          ../shared/data/debian-chat.parquet into .gpu-carry/part-K/ (at most 62 MB each);
#          it prints the calls to make, one per part.
#   there: scripts/bench-gpu.sh receive K               (K = 1 .. N-1, carrying .gpu-carry/part-K)
#          checks part K and that parts 1 .. K-1 are still there, prints the machine's boot id,
#          and keeps the part in .gpu-stage/. A machine that went cold (a new boot id, parts
#          gone) is an error at once: start again at part 1.
#   there: scripts/bench-gpu.sh receive N run [--rows R] [--cpu]   (the last part, and the run)
#          receives the last part, unpacks the stage, runs the smoke test (10 texts through
#          chatspace-encoder embed --device cuda:0 with debug logs; nothing is measured if it
#          fails) and scripts/bench/gpu.py: a table of seconds, rows/s and min cosine against
#          raw onnxruntime, and $OUT/gpu-bench.json when OUT is set.
#   there: scripts/bench-gpu.sh run [--rows R] [--cpu]  (again, while the stage is there)
#
# --cpu is a dry run of the same steps on the CPU (no GPU needed; use a small --rows).
# The GPU machine needs python3 3.12 with numpy, pyarrow, psutil, tokenizers and onnx, and
# CUDA 13's libraries as NVIDIA's nvidia-* Python packages (as PyTorch's cu13 build has them).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
SHARED="${CHATSPACE_SHARED:-${ROOT}/../shared}"
CARRY="${ROOT}/.gpu-carry"
STAGE_PARTS="${ROOT}/.gpu-stage"
UNPACKED="${TMPDIR:-/tmp}/chatspace-gpu-stage"
PART_BYTES=62000000
WHEEL="onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7"
SMOKE_ROWS=10

log() { printf 'bench-gpu: %s\n' "$*" >&2; }
die() { printf 'bench-gpu: error: %s\n' "$*" >&2; exit 1; }
boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }

pack() {
    [[ -f "${SHARED}/data/debian-chat.parquet" ]] || die "no ${SHARED}/data/debian-chat.parquet"
    [[ -f "${SHARED}/models/all-MiniLM-L6-v2/onnx/model.onnx" ]] ||
        die "no ${SHARED}/models/all-MiniLM-L6-v2/onnx/model.onnx"
    (cd "${ROOT}" && cargo build --release --locked -p chatspace-cli -p chatspace-encoder)
    tmp="$(mktemp -d)" # global: the EXIT trap runs after this function returns
    trap 'rm -rf "${tmp}"' EXIT
    local stage="${tmp}/stage"
    mkdir -p "${stage}/bin" "${stage}/ort" "${stage}/models" "${stage}/data"
    for bin in chatspace chatspace-encoder; do
        cp "${ROOT}/target/release/${bin}" "${stage}/bin/"
        strip "${stage}/bin/${bin}"
    done
    log "fetching ${WHEEL}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d "${tmp}" \
        "onnxruntime-gpu==1.31.1" || die "pip download of onnxruntime-gpu failed"
    echo "${WHEEL_SHA256}  ${tmp}/${WHEEL}" | sha256sum -c --quiet - ||
        die "${WHEEL} does not have the pinned sha256"
    # The whole Python package (raw onnxruntime and its transformer optimizer run from it) but
    # the TensorRT provider.
    python3 - "${tmp}/${WHEEL}" "${stage}/ort" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if "providers_tensorrt" not in n])
EOF
    cp -r "${SHARED}/models/all-MiniLM-L6-v2" "${stage}/models/"
    chmod -R u+w "${stage}/models"
    cp "${SHARED}/data/debian-chat.parquet" "${stage}/data/"
    rm -rf "${CARRY}"
    mkdir -p "${CARRY}"
    log "compressing (a minute or two)"
    tar -C "${stage}" -cf - . | xz -T0 -6 | split -b "${PART_BYTES}" -d -a 2 - "${tmp}/stage.tar.xz."
    local parts=("${tmp}"/stage.tar.xz.*)
    local n=${#parts[@]}
    (cd "${tmp}" && cat stage.tar.xz.* | sha256sum | cut -d' ' -f1) >"${tmp}/whole.sha256"
    local k=1
    for p in "${parts[@]}"; do
        mkdir -p "${CARRY}/part-${k}"
        mv "${p}" "${CARRY}/part-${k}/"
        (cd "${CARRY}/part-${k}" && sha256sum stage.tar.xz.* >SHA256SUMS)
        cp "${tmp}/whole.sha256" "${CARRY}/part-${k}/WHOLE.sha256"
        echo "${n}" >"${CARRY}/part-${k}/COUNT"
        echo "${k}" >"${CARRY}/part-${k}/INDEX"
        k=$((k + 1))
    done
    log "${n} parts in .gpu-carry/ ($(du -sh "${CARRY}" | cut -f1)); on the GPU machine, one call each,"
    log "back to back (the machine forgets everything 30 s after a call):"
    for ((k = 1; k < n; k++)); do
        log "  carry [\".gpu-carry/part-${k}\"]: scripts/bench-gpu.sh receive ${k}"
    done
    log "  carry [\".gpu-carry/part-${n}\"]: scripts/bench-gpu.sh receive ${n} run"
}

# Checks and keeps part K; the parts before it must be in .gpu-stage/ from earlier calls on
# this same machine (same boot id).
receive() {
    local k="$1" part="${CARRY}/part-$1" boot
    boot="$(boot_id)"
    [[ "${k}" =~ ^[1-9][0-9]*$ ]] || die "receive K: K is a part number from 1 (got ${k})"
    [[ -d "${part}" ]] || die "no .gpu-carry/part-${k}: carry it with this call (boot id ${boot})"
    [[ "$(cat "${part}/INDEX")" == "${k}" ]] || die ".gpu-carry/part-${k} holds part $(cat "${part}/INDEX")"
    (cd "${part}" && sha256sum -c --quiet SHA256SUMS) || die "part ${k} is damaged"
    if ((k == 1)); then
        rm -rf "${STAGE_PARTS}"
        mkdir -p "${STAGE_PARTS}"
        echo "${boot}" >"${STAGE_PARTS}/BOOT_ID"
        cp "${part}/WHOLE.sha256" "${part}/COUNT" "${STAGE_PARTS}/"
    fi
    local first_boot missing=()
    first_boot="$(cat "${STAGE_PARTS}/BOOT_ID" 2>/dev/null || echo none)"
    for ((i = 1; i < k; i++)); do
        [[ -f "${STAGE_PARTS}/got-${i}" ]] || missing+=("${i}")
    done
    if ((${#missing[@]} > 0)); then
        if [[ "${first_boot}" == none ]]; then
            die "nothing received on this machine (boot id ${boot}): it went cold, or part 1 was never sent; start again with receive 1"
        elif [[ "${first_boot}" != "${boot}" ]]; then
            die "the machine restarted (boot id ${first_boot} at part 1, now ${boot}); start again with receive 1"
        fi
        die "part(s) ${missing[*]} not received yet (boot id ${boot}): receive them first"
    fi
    [[ "$(cat "${part}/WHOLE.sha256")" == "$(cat "${STAGE_PARTS}/WHOLE.sha256")" ]] ||
        die "part ${k} is from another pack than part 1 (run pack once, carry its parts)"
    cp "${part}"/stage.tar.xz.* "${STAGE_PARTS}/"
    touch "${STAGE_PARTS}/got-${k}"
    log "part ${k} of $(cat "${STAGE_PARTS}/COUNT") kept (boot id ${boot}; parts 1-${k} here)"
}

# Joins and unpacks the stage; links the machine's CUDA wheels where chatspace-encoder looks
# (../../nvidia beside onnxruntime/capi/, as in a pip install).
unpack() {
    [[ -f "${STAGE_PARTS}/COUNT" ]] ||
        die "no parts here (boot id $(boot_id)): scripts/bench-gpu.sh receive 1 first"
    local want have
    want=$(cat "${STAGE_PARTS}/COUNT")
    have=$(find "${STAGE_PARTS}" -name 'got-*' | wc -l)
    ((have == want)) || die "${have} of ${want} parts here (boot id $(boot_id))"
    [[ "$(cat "${STAGE_PARTS}"/stage.tar.xz.* | sha256sum | cut -d' ' -f1)" == \
        "$(cat "${STAGE_PARTS}/WHOLE.sha256")" ]] || die "the joined parts do not match"
    rm -rf "${UNPACKED}"
    mkdir -p "${UNPACKED}"
    cat "${STAGE_PARTS}"/stage.tar.xz.* | xz -d | tar -C "${UNPACKED}" -xf -
}

# Where python3's nvidia-* CUDA packages are, linked as stage/ort/nvidia; prints their lib/
# folders (for raw onnxruntime's LD_LIBRARY_PATH).
link_cuda() {
    local nv
    nv="$(python3 -c 'import importlib.util as u; print(list(u.find_spec("nvidia").submodule_search_locations)[0])' 2>/dev/null)" ||
        return 1
    ln -sfn "${nv}" "${UNPACKED}/ort/nvidia"
    find "${nv}" -mindepth 2 -maxdepth 2 -type d -name lib | sort | paste -sd:
}

# 10 texts through chatspace-encoder on GPU 0 with debug logs, before anything is measured.
smoke() {
    local device="$1" dir="${UNPACKED}/smoke"
    mkdir -p "${dir}"
    python3 - "${UNPACKED}/data/debian-chat.parquet" "${SMOKE_ROWS}" >"${dir}/in.jsonl" <<'EOF'
import json, sys
import pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1], columns=["messages"]).slice(0, int(sys.argv[2])).to_pylist()
for r in rows:
    text = next(m["content"] for m in r["messages"] if m["role"] == "assistant")
    print(json.dumps({"text": text}))
EOF
    log "smoke test: ${SMOKE_ROWS} texts through chatspace-encoder embed --device ${device}"
    local rc=0
    CHATSPACE_LOG="${CHATSPACE_LOG:-chatspace_encoder=debug,ort=info}" \
        "${UNPACKED}/bin/chatspace-encoder" embed --device "${device}" \
        --model "${UNPACKED}/models/all-MiniLM-L6-v2" \
        --ort-lib "${UNPACKED}/ort/onnxruntime/capi/libonnxruntime.so.1.31.1" \
        <"${dir}/in.jsonl" >"${dir}/out.jsonl" 2>"${dir}/log" || rc=$?
    # chatspace-encoder's own lines and every warning or error (ONNX Runtime's info lines are
    # in $OUT/smoke.log), without the model-folder dump; at most 60 lines.
    grep -E 'chatspace_encoder|WARN|ERROR|^chatspace-encoder:' "${dir}/log" |
        grep -v 'model folder read' | cut -c1-400 | head -60 >&2 || true
    [[ -n "${OUT:-}" ]] && cp "${dir}/log" "${OUT}/smoke.log"
    ((rc == 0)) || die "smoke test failed (exit ${rc}); nothing measured"
    python3 - "${dir}/out.jsonl" "${SMOKE_ROWS}" <<'EOF' || die "smoke test output is wrong"
import json, math, sys
vecs = [json.loads(l)["embedding"] for l in open(sys.argv[1])]
assert len(vecs) == int(sys.argv[2]), f"{len(vecs)} vectors"
norms = [math.sqrt(sum(x * x for x in v)) for v in vecs]
assert all(abs(n - 1) < 1e-3 for n in norms), norms
print(f"bench-gpu: smoke test passed: {len(vecs)} vectors of {len(vecs[0])}", file=sys.stderr)
EOF
}

run() {
    local rows=63904 cpu=0
    while (($# > 0)); do
        case "$1" in
            --rows) rows="$2"; shift ;;
            --cpu) cpu=1 ;;
            *) die "unknown argument: $1" ;;
        esac
        shift
    done
    log "boot id $(boot_id)"
    unpack
    local libs="" device="cuda:0" extra=()
    if libs="$(link_cuda)"; then
        log "CUDA wheels: ${libs}"
    elif ((cpu)); then
        log "no nvidia-* CUDA packages for python3 (a CPU dry run does not need them)"
    else
        die "python3 has no nvidia-* CUDA packages"
    fi
    ((cpu)) && device=cpu && extra+=(--cpu)
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L || true; else log "no nvidia-smi"; fi
    cat /proc/driver/nvidia/version 2>/dev/null || log "no /proc/driver/nvidia/version"
    export PYTHONPATH="${UNPACKED}/ort${PYTHONPATH:+:${PYTHONPATH}}"
    export PYTHONUNBUFFERED=1
    smoke "${device}"
    local json=()
    [[ -n "${OUT:-}" ]] && json=(--json "${OUT}/gpu-bench.json")
    CHATSPACE_BENCH_CUDA_LIBS="${libs}" python3 "${ROOT}/scripts/bench/gpu.py" \
        --stage "${UNPACKED}" --rows "${rows}" "${json[@]}" "${extra[@]}"
}

case "${1:-}" in
    pack) pack ;;
    receive)
        (($# >= 2)) || die "usage: scripts/bench-gpu.sh receive K [run [--rows N] [--cpu]]"
        (($# == 2)) || [[ "$3" == run ]] || die "after receive K only 'run' may follow (got $3)"
        receive "$2"
        if (($# >= 3)); then
            shift 3
            run "$@"
        fi
        ;;
    run) shift; run "$@" ;;
    -h | --help | "") sed -n '2,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" ;;
    *) die "unknown step: $1 (pack, receive K [run ...], run)" ;;
esac
