#!/usr/bin/env bash
# GPU check: MiniLM rows/s of chatspace --device cuda (one encoder) against raw Python
# onnxruntime-gpu on the same GPU, the same rows of debian-chat, the same ONNX file.
#
# Made for a GPU machine that reaches no network and takes a limited size of files per call
# (the device machines lent to sessions: 64 MiB), in three steps:
#
#   here:  scripts/bench-gpu.sh pack
#          builds the release binaries, fetches the onnxruntime-gpu wheel for CPython 3.12
#          (sha256-pinned) and packs it with the binaries, ../shared/models/all-MiniLM-L6-v2 and
#          ../shared/data/debian-chat.parquet into .gpu-carry/part-K/ (at most 62 MB each);
#          it prints the parts' count.
#   there: scripts/bench-gpu.sh receive K      (one call per part, carrying .gpu-carry/part-K)
#          checks the part and keeps it in .gpu-stage/ for the next calls.
#   there: scripts/bench-gpu.sh run [--rows N] [--cpu] (once every part is received)
#          unpacks the stage and runs scripts/bench/gpu.py: a table of seconds and rows/s, the
#          min cosine between chatspace's and raw onnxruntime's vectors, and $OUT/gpu-bench.json
#          when OUT is set. --cpu is a dry run of the same steps on the CPU (no GPU needed).
#
# The GPU machine needs CUDA 13's libraries as NVIDIA's nvidia-* Python packages (as PyTorch's
# cu13 build installs them) and a python3 with numpy, pyarrow, psutil and tokenizers.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
SHARED="${CHATSPACE_SHARED:-${ROOT}/../shared}"
CARRY="${ROOT}/.gpu-carry"
STAGE_PARTS="${ROOT}/.gpu-stage"
UNPACKED="${TMPDIR:-/tmp}/chatspace-gpu-stage"
PART_BYTES=62000000
WHEEL="onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7"

log() { printf 'bench-gpu: %s\n' "$*" >&2; }
die() { printf 'bench-gpu: error: %s\n' "$*" >&2; exit 1; }

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
    # The whole Python package (raw onnxruntime runs from it) but the TensorRT provider.
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
        k=$((k + 1))
    done
    log "${n} parts in .gpu-carry/ ($(du -sh "${CARRY}" | cut -f1)); on the GPU machine:"
    for ((k = 1; k <= n; k++)); do
        log "  carry .gpu-carry/part-${k}: scripts/bench-gpu.sh receive ${k}"
    done
    log "  then: scripts/bench-gpu.sh run"
}

receive() {
    local k="$1" part="${CARRY}/part-$1"
    [[ -d "${part}" ]] || die "no .gpu-carry/part-${k}: carry it with this call"
    (cd "${part}" && sha256sum -c --quiet SHA256SUMS) || die "part ${k} is damaged"
    mkdir -p "${STAGE_PARTS}"
    cp "${part}"/stage.tar.xz.* "${part}/WHOLE.sha256" "${part}/COUNT" "${STAGE_PARTS}/"
    local have
    have=$(find "${STAGE_PARTS}" -name 'stage.tar.xz.*' | wc -l)
    log "part ${k} kept; ${have} of $(cat "${STAGE_PARTS}/COUNT") parts here"
}

run() {
    local rows=63904 extra=()
    while (($# > 0)); do
        case "$1" in
            --rows) rows="$2"; shift ;;
            --cpu) extra+=(--cpu) ;;
            *) die "unknown argument: $1" ;;
        esac
        shift
    done
    [[ -f "${STAGE_PARTS}/COUNT" ]] || die "no parts received yet (scripts/bench-gpu.sh receive K)"
    local want have
    want=$(cat "${STAGE_PARTS}/COUNT")
    have=$(find "${STAGE_PARTS}" -name 'stage.tar.xz.*' | wc -l)
    ((have == want)) || die "${have} of ${want} parts received"
    [[ "$(cat "${STAGE_PARTS}"/stage.tar.xz.* | sha256sum | cut -d' ' -f1)" == \
        "$(cat "${STAGE_PARTS}/WHOLE.sha256")" ]] || die "the joined parts do not match"
    rm -rf "${UNPACKED}"
    mkdir -p "${UNPACKED}"
    cat "${STAGE_PARTS}"/stage.tar.xz.* | xz -d | tar -C "${UNPACKED}" -xf -
    # CUDA 13 and cuDNN from the machine's nvidia-* packages, where both runtimes look: beside
    # the library (chatspace-encoder's preload) and on the loader path (onnxruntime's Python).
    local nv
    nv="$(python3 -c 'import importlib.util as u; print(list(u.find_spec("nvidia").submodule_search_locations)[0])')" ||
        die "python3 has no nvidia-* CUDA packages"
    ln -sfn "${nv}" "${UNPACKED}/ort/onnxruntime/capi/nvidia"
    ln -sfn "${nv}" "${UNPACKED}/ort/nvidia"
    local libs
    libs="$(find "${nv}" -mindepth 2 -maxdepth 2 -type d -name lib | paste -sd:)"
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
    export PYTHONPATH="${UNPACKED}/ort${PYTHONPATH:+:${PYTHONPATH}}"
    export PYTHONUNBUFFERED=1
    nvidia-smi -L || true
    local json=()
    [[ -n "${OUT:-}" ]] && json=(--json "${OUT}/gpu-bench.json")
    python3 "${ROOT}/scripts/bench/gpu.py" --stage "${UNPACKED}" --rows "${rows}" "${json[@]}" "${extra[@]}"
}

case "${1:-}" in
    pack) pack ;;
    receive) (($# == 2)) || die "usage: scripts/bench-gpu.sh receive K"; receive "$2" ;;
    run) shift; run "$@" ;;
    -h | --help | "") sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" ;;
    *) die "unknown step: $1 (pack, receive K, run)" ;;
esac
