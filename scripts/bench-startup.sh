#!/usr/bin/env bash
# Startup time of the release binary vs. a bare Python interpreter start.
#
#   scripts/bench-startup.sh [-n RUNS] [--warmup W]
#
# Times `chatspace --help` and `chatspace embed-hf --help` against
# `python3 -c 'import argparse'` (RUNS=50 timed runs each, after W=3 warm-ups),
# prints mean/median in ms and the ratio to Python's, and checks with ldd that
# the binary does not link ONNX Runtime (it must load it lazily, only when
# embedding). Exits 1 if the binary is missing, a command fails, or ONNX Runtime
# is linked.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
BIN="${ROOT}/target/release/chatspace"
runs=50
warmup=3

die() { printf 'bench-startup: error: %s\n' "$*" >&2; exit 1; }

while (($# > 0)); do
    case "$1" in
        -n | --runs)
            runs="${2:?-n needs a number}"
            shift
            ;;
        --warmup)
            warmup="${2:?--warmup needs a number}"
            shift
            ;;
        -h | --help)
            sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done
[[ "${runs}" =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer"
[[ "${warmup}" =~ ^[0-9]+$ ]] || die "--warmup must be a non-negative integer"

[[ -x "${BIN}" ]] || die "${BIN} not found; build it first with scripts/setup.sh"
command -v python3 >/dev/null || die "python3 not found"

echo "binary: ${BIN} ($(du -h "${BIN}" | cut -f1))"
if command -v ldd >/dev/null; then
    deps="$(ldd "${BIN}" 2>&1 || true)"
    if grep -i onnxruntime <<<"${deps}"; then
        echo "ldd: FAIL: ONNX Runtime is linked into ${BIN} (it should be loaded at run time only)"
        exit 1
    fi
    echo "ldd: ok, no onnxruntime library linked ($(grep -c . <<<"${deps}") lines of ldd output)"
else
    echo "ldd: not available; link check skipped"
fi
echo

python3 - "${runs}" "${warmup}" "${BIN}" <<'PY'
import statistics
import subprocess
import sys
import time

runs, warmup, binary = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cases = [
    ("python3 -c 'import argparse'", [sys.executable, "-c", "import argparse"]),
    ("chatspace --help", [binary, "--help"]),
    ("chatspace embed-hf --help", [binary, "embed-hf", "--help"]),
]


def once(argv):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        sys.exit(f"bench-startup: error: {' '.join(argv)} exited {proc.returncode}: {err}")
    return dt * 1000.0


results = []
for name, argv in cases:
    for _ in range(warmup):
        once(argv)
    samples = [once(argv) for _ in range(runs)]
    results.append((name, statistics.mean(samples), statistics.median(samples), min(samples)))

base_mean, base_median = results[0][1], results[0][2]
width = max(len(r[0]) for r in results)
print(f"{runs} runs each after {warmup} warm-ups; times in ms")
print(f"{'command':<{width}}  {'mean':>8}  {'median':>8}  {'min':>8}  {'median/python':>13}")
for name, mean, median, lo in results:
    print(f"{name:<{width}}  {mean:8.2f}  {median:8.2f}  {lo:8.2f}  {median / base_median:12.2f}x")
PY
