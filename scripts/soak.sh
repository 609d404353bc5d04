#!/usr/bin/env bash
# Soak test for crash recovery: embeds all of ../shared/data/debian-chat.parquet with the
# near-free null-384 model and 2 encoders while SIGKILLing one encoder every few seconds, then
# checks exactly-once delivery (every row_index once, none missing) with pyarrow and reports how
# many kills the run survived. Not part of CI (it runs for a minute or more).
#
#   scripts/soak.sh [--every SECONDS] [--bin DIR]
#
# Needs scripts/setup.sh (ONNX Runtime, release build) and scripts/test-env.sh (.venv).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
SHARED="${CHATSPACE_SHARED:-${ROOT}/../shared}"
EVERY=3
BIN="${ROOT}/target/release"
while (($# > 0)); do
    case "$1" in
        --every) EVERY="$2"; shift ;;
        --bin) BIN="$2"; shift ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "soak: unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
[[ -x "${BIN}/chatspace" ]] || { echo "soak: no ${BIN}/chatspace; run scripts/setup.sh" >&2; exit 1; }
PY="${CHATSPACE_PYTHON:-${ROOT}/.venv/bin/python}"
[[ -x "${PY}" ]] || { echo "soak: no ${PY}; run scripts/test-env.sh" >&2; exit 1; }

OUT="$(mktemp -d)"
trap 'rm -rf "${OUT}"' EXIT
"${BIN}/chatspace" embed-hf --dataset "${SHARED}/data/debian-chat.parquet" \
    --text-field messages --extract first-assistant --model "${SHARED}/models/null-384" \
    --encoders 2 --rows-per-shard 4096 --max-restarts 1000 --no-progress \
    --output-root "${OUT}" 2>"${OUT}/stderr.log" &
SUP=$!
kills=0
start=$(date +%s)
while kill -0 "${SUP}" 2>/dev/null; do
    sleep "${EVERY}"
    # Children of the supervisor that are encoders.
    victim=$(ps -o pid=,comm= --ppid "${SUP}" 2>/dev/null | awk '$2 ~ /chatspace-enc/ {print $1}' | shuf -n 1 || true)
    if [[ -n "${victim}" ]] && kill -9 "${victim}" 2>/dev/null; then
        kills=$((kills + 1))
    fi
done
rc=0
wait "${SUP}" || rc=$?
secs=$(($(date +%s) - start))
if ((rc != 0)); then
    echo "soak: chatspace exited ${rc} after ${kills} kills:" >&2
    tail -5 "${OUT}/stderr.log" >&2
    exit 1
fi
"${PY}" - "${OUT}" "${kills}" "${secs}" <<'PY'
import glob, json, os, sys
import pyarrow.parquet as pq
out, kills, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = json.load(open(glob.glob(os.path.join(out, "indexes/*/*/manifest-train.json"))[0]))
summary = json.load(open(glob.glob(os.path.join(out, "indexes/*/*/run-train.json"))[0]))
files = sorted(glob.glob(os.path.join(out, "embeddings/*/*/train/*.parquet")))
ri = []
for f in files:
    ri += pq.read_table(f, columns=["row_index"]).column("row_index").to_pylist()
failed = {r["row_index"] for r in manifest.get("rows_failed", [])}
total = manifest["rows_total"] + manifest["rows_skipped"] + len(failed)
ok = (ri == sorted(ri) and len(set(ri)) == len(ri) == manifest["rows_total"] and total == 63904)
print(f"soak: {kills} encoder kills survived in {secs} s; rows written {len(ri)}, "
      f"skipped {manifest['rows_skipped']}, failed {len(failed)}, "
      f"restarts per encoder {summary['encoder_restarts']}; exactly-once: {'yes' if ok else 'NO'}")
sys.exit(0 if ok else 1)
PY
