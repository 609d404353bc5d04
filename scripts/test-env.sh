#!/usr/bin/env bash
# Create <repo>/.venv with the Python packages the tests use to read and check
# Parquet output (pyarrow, duckdb, numpy), the Hub cache (huggingface_hub) and to
# make ONNX variants of the shared models (onnx), pinned. Idempotent: does nothing when the
# venv already has the pinned versions. Progress goes to stderr; the venv's
# python path is the only thing printed on stdout, so
#   CHATSPACE_PYTHON="$(scripts/test-env.sh)"
# works.
set -euo pipefail

PYARROW_VERSION="26.0.1"
DUCKDB_VERSION="2.0.1"
NUMPY_VERSION="2.4.6"
HFHUB_VERSION="2.4.0"
ONNX_VERSION="1.23.2"

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${ROOT}/.venv"
VPY="${VENV}/bin/python"

log() { printf 'test-env: %s\n' "$*" >&2; }
die() { printf 'test-env: error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
    "") ;;
    -h | --help)
        echo "Usage: scripts/test-env.sh   (creates .venv with pyarrow==${PYARROW_VERSION} duckdb==${DUCKDB_VERSION} numpy==${NUMPY_VERSION} huggingface_hub==${HFHUB_VERSION} onnx==${ONNX_VERSION})"
        exit 0
        ;;
    *) die "unknown argument: $1" ;;
esac

# Exit 0 when the venv has exactly the pinned versions.
have_pins() {
    "${VPY}" - "${PYARROW_VERSION}" "${DUCKDB_VERSION}" "${NUMPY_VERSION}" "${HFHUB_VERSION}" "${ONNX_VERSION}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
want = {"pyarrow": sys.argv[1], "duckdb": sys.argv[2], "numpy": sys.argv[3], "huggingface_hub": sys.argv[4], "onnx": sys.argv[5]}
try:
    ok = all(version(name) == v for name, v in want.items())
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if [[ -x "${VPY}" ]] && have_pins; then
    log "${VENV} already has pyarrow==${PYARROW_VERSION} duckdb==${DUCKDB_VERSION} numpy==${NUMPY_VERSION} huggingface_hub==${HFHUB_VERSION} onnx==${ONNX_VERSION}"
else
    command -v python3 >/dev/null || die "python3 not found"
    if [[ -x "${VPY}" ]] && "${VPY}" -c 'pass' 2>/dev/null; then
        log "updating ${VENV}"
    else
        # Missing, or broken (e.g. the Python it was made from is gone).
        log "creating ${VENV} with $(python3 --version 2>&1)"
        python3 -m venv --clear "${VENV}"
    fi
    log "installing pyarrow==${PYARROW_VERSION} duckdb==${DUCKDB_VERSION} numpy==${NUMPY_VERSION} huggingface_hub==${HFHUB_VERSION} onnx==${ONNX_VERSION}"
    "${VPY}" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        "pyarrow==${PYARROW_VERSION}" "duckdb==${DUCKDB_VERSION}" "numpy==${NUMPY_VERSION}" "huggingface_hub==${HFHUB_VERSION}" "onnx==${ONNX_VERSION}" >&2 ||
        die "pip install failed"
    have_pins || die "installed, but the venv does not report the pinned versions"
    "${VPY}" -c 'import numpy, pyarrow, pyarrow.parquet, duckdb, huggingface_hub, onnx' ||
        die "pyarrow/duckdb installed but do not import"
    log "installed"
fi

printf '%s\n' "${VPY}"
