#!/usr/bin/env bash
# Throughput, memory and start-up benchmark of chatspace against Python baselines.
#
#   scripts/bench.sh [--rows N] [--quick] [--repeats R] [--json PATH] [--keep DIR]
#
# On the same rows of ../shared/data/debian-chat.parquet (first assistant turn of `messages`,
# stripped; the first N rows, default 4096) it measures, side by side and interleaved:
#   1. all-MiniLM-L6-v2 end to end: chatspace (--encoders 2 --threads 1; the defaults; 1 encoder
#      x 2 threads) against Python sentence-transformers (torch CPU, 2 threads, batch 32) and raw
#      Python onnxruntime on the same ONNX file (length-sorted batches of 32 rows, and of ~1,024
#      tokens; 2 intra-op threads);
#   2. pipeline capacity: chatspace with null-384 over all 63,904 rows against the floor of
#      Python `tokenizers` encode_batch on the same texts;
#   3. peak RSS of the supervisor and of each encoder during that run;
#   4. launch to first embedded row with MiniLM;
#   5. `chatspace --help` against `python3 -c 'import argparse'`.
# It prints one table with the targets marked pass/FAIL (and writes it as JSON with --json).
#
#   --rows N      MiniLM rows (default 4096)
#   --quick       a smoke run: 256 MiniLM rows, 8,192 null-384 rows, fewer start-up runs
#   --repeats R   rounds of the interleaved MiniLM and null-384 contenders (default 3, 1 with
#                 --quick; the order is reversed every other round; medians are reported, over
#                 the rounds in which the rest of the machine stayed quiet when there are any)
#   --json PATH   also write the results as JSON to PATH
#   --keep DIR    keep chatspace's output and the per-run logs in DIR (default: a temp folder,
#                 removed at the end)
#
# Needs the release build and ONNX Runtime (scripts/setup.sh). Makes .bench-venv/ with the
# pinned packages of scripts/bench/requirements.txt on first use (PyPI's torch wheel pulls the
# NVIDIA CUDA libraries too: the venv is several GB). Exits 1 on an error, not on a missed target.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
SHARED="${CHATSPACE_SHARED:-${ROOT}/../shared}"
VENV="${ROOT}/.bench-venv"
VPY="${VENV}/bin/python"
REQS="${ROOT}/scripts/bench/requirements.txt"
STAMP="${VENV}/.requirements.sha256"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

driver_args=()
while (($# > 0)); do
    case "$1" in
        --rows | --repeats | --json | --keep)
            (($# >= 2)) || die "$1 needs a value"
            driver_args+=("$1" "$2")
            shift
            ;;
        --quick) driver_args+=("$1") ;;
        -h | --help)
            sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

for bin in chatspace chatspace-encoder; do
    [[ -x "${ROOT}/target/release/${bin}" ]] ||
        die "target/release/${bin} not found; build it with scripts/setup.sh"
done
[[ -e "${ROOT}/.onnxruntime/libonnxruntime.so" ]] ||
    die ".onnxruntime/libonnxruntime.so not found; run scripts/setup.sh --no-build"
[[ -f "${SHARED}/data/debian-chat.parquet" ]] || die "no ${SHARED}/data/debian-chat.parquet"

# The venv is (re)installed when it is missing or requirements.txt changed since.
want="$(sha256sum "${REQS}" | cut -d' ' -f1)"
if [[ -x "${VPY}" ]] && [[ -f "${STAMP}" ]] && [[ "$(cat "${STAMP}")" == "${want}" ]]; then
    log "${VENV} is up to date"
else
    command -v python3 >/dev/null || die "python3 not found"
    if ! [[ -x "${VPY}" ]] || ! "${VPY}" -c 'pass' 2>/dev/null; then
        log "creating ${VENV} with $(python3 --version 2>&1)"
        python3 -m venv --clear "${VENV}"
    fi
    log "installing the packages of scripts/bench/requirements.txt (torch is large; takes minutes)"
    "${VPY}" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        -r "${REQS}" >&2 || die "pip install failed"
    printf '%s\n' "${want}" >"${STAMP}"
    log "installed; ${VENV} takes $(du -sh "${VENV}" | cut -f1)"
fi

exec "${VPY}" "${ROOT}/scripts/bench/driver.py" --root "${ROOT}" --shared "${SHARED}" \
    "${driver_args[@]}"
