#!/usr/bin/env bash
# Set up a chatspace checkout: fetch ONNX Runtime's shared library into
# <repo>/.onnxruntime/ and build the release binaries. With --gpu, also the GPU
# build (onnxruntime-gpu, CUDA execution provider) into <repo>/.onnxruntime-gpu/
# with the CUDA 13 and cuDNN 9 libraries it needs, from NVIDIA's PyPI wheels.
#
# ONNX Runtime comes from the PyPI `onnxruntime` wheel (PyPI is the one place
# our machines can fetch it from): the wheel is pinned by version and sha256
# and only `onnxruntime/capi/libonnxruntime.so.<version>` is taken out of it.
#
# Idempotent: the download is skipped when the library is already in place with
# the right VERSION. Runnable from any working directory.
set -euo pipefail

ORT_VERSION="1.31.1"
# Pinned wheels (cp311; the Python tag does not matter for the C library inside).
ORT_SHA256_X86_64="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
ORT_SHA256_AARCH64="da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3"
# onnxruntime-gpu (CUDA 13): x86_64 is manylinux_2_28, aarch64 manylinux_2_34.
ORT_GPU_SHA256_X86_64="e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6"
ORT_GPU_SHA256_AARCH64="dc878916611b8a816000ffedacc5f5988f77bb93bf9655ad20144ee3acb08e55"
# What onnxruntime-gpu's [cuda,cudnn] extras ask for, plus cuBLAS (cuDNN's dependency).
CUDA_WHEELS=("nvidia-cuda-runtime~=13.0" "nvidia-cuda-nvrtc~=13.0" "nvidia-cublas~=13.0"
    "nvidia-cufft~=12.0" "nvidia-curand~=10.0" "nvidia-cudnn-cu13~=9.0")
# The sonames chatspace-encoder preloads from them (crates/chatspace-encoder/src/cuda/preload.rs).
CUDA_SONAMES=(libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnvrtc.so.13 libcurand.so.10
    libcufft.so.12 libcudnn.so.9)

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
ORT_DIR="${ROOT}/.onnxruntime"
GPU_DIR="${ROOT}/.onnxruntime-gpu"
ORT_LIB="libonnxruntime.so.${ORT_VERSION}"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
Usage: scripts/setup.sh [--no-build] [--gpu] [--help]

Fetches ONNX Runtime ${ORT_VERSION} (CPU) from the PyPI onnxruntime wheel into
.onnxruntime/ (libonnxruntime.so.${ORT_VERSION}, libonnxruntime.so, VERSION),
then runs 'cargo build --release'.

Options:
  --no-build   only fetch ONNX Runtime; skip 'cargo build --release'
  --gpu        also fetch the GPU build (onnxruntime-gpu ${ORT_VERSION}, CUDA 13)
               into .onnxruntime-gpu/ with the CUDA and cuDNN libraries from
               NVIDIA's wheels (several GB; needs an NVIDIA driver for CUDA 13
               to run). 'chatspace embed-hf --device cuda' then uses it.
  -h, --help   show this help
EOF
}

build=1
gpu=0
while (($# > 0)); do
    case "$1" in
        --no-build) build=0 ;;
        --gpu) gpu=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'setup: unknown option: %s\n\n' "$1" >&2
            usage >&2
            exit 64
            ;;
    esac
    shift
done

case "$(uname -m)" in
    x86_64 | amd64)
        platform="manylinux_2_28_x86_64"
        sha256="${ORT_SHA256_X86_64}"
        gpu_platform="manylinux_2_28_x86_64"
        gpu_sha256="${ORT_GPU_SHA256_X86_64}"
        ;;
    aarch64 | arm64)
        platform="manylinux_2_28_aarch64"
        sha256="${ORT_SHA256_AARCH64}"
        gpu_platform="manylinux_2_34_aarch64"
        gpu_sha256="${ORT_GPU_SHA256_AARCH64}"
        ;;
    *) die "unsupported architecture '$(uname -m)' (supported: x86_64, aarch64)" ;;
esac
wheel="onnxruntime-${ORT_VERSION}-cp311-cp311-${platform}.whl"

# extract_libs WHEEL SHA256 DEST NAME...: checks the wheel's sha256, then copies each
# onnxruntime/capi/NAME out of it to DEST/NAME (through NAME.part and a rename, so an
# interrupted run never leaves a partial library behind).
extract_libs() {
    python3 - "$@" <<'PY' || die "could not verify or extract $(basename "$1")"
import hashlib, os, shutil, sys, zipfile

wheel, want, dest, *names = sys.argv[1:]
h = hashlib.sha256()
with open(wheel, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want:
    sys.exit(f"sha256 mismatch for {os.path.basename(wheel)}: expected {want}, got {h.hexdigest()}")
with zipfile.ZipFile(wheel) as z:
    for name in names:
        part = os.path.join(dest, name + ".part")
        with z.open("onnxruntime/capi/" + name) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(part, 0o755)
        os.replace(part, os.path.join(dest, name))
PY
}

# download_wheel PACKAGE PLATFORM WHEEL DEST: pip-downloads PACKAGE==ORT_VERSION for
# CPython 3.11 on PLATFORM into DEST, and checks that it is the file WHEEL.
download_wheel() {
    local package="$1" platform="$2" wheel="$3" dest="$4"
    python3 -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform "${platform}" "${package}==${ORT_VERSION}" -d "${dest}" >&2 ||
        die "pip download of ${package}==${ORT_VERSION} failed"
    [[ -f "${dest}/${wheel}" ]] || die "expected ${wheel}, pip saved: $(ls "${dest}")"
}

fetch_onnxruntime() {
    if [[ -f "${ORT_DIR}/${ORT_LIB}" && -f "${ORT_DIR}/VERSION" ]] &&
        [[ "$(cat "${ORT_DIR}/VERSION")" == "${ORT_VERSION}" ]]; then
        log "ONNX Runtime ${ORT_VERSION} already in .onnxruntime/; skipping download"
    else
        command -v python3 >/dev/null || die "python3 is needed to fetch ONNX Runtime"
        python3 -m pip --version >/dev/null 2>&1 || die "pip for python3 is needed to fetch ONNX Runtime"

        local tmp
        tmp="$(mktemp -d)"
        # shellcheck disable=SC2064 # expand now: $tmp is local
        trap "rm -rf -- '${tmp}'" EXIT

        log "downloading ${wheel} from PyPI"
        download_wheel onnxruntime "${platform}" "${wheel}" "${tmp}"

        log "checking sha256 and extracting ${ORT_LIB}"
        mkdir -p "${ORT_DIR}"
        # Verify, then extract to a temporary name and rename, so an interrupted
        # run never leaves a partial library behind.
        extract_libs "${tmp}/${wheel}" "${sha256}" "${ORT_DIR}" "${ORT_LIB}"
        # The library's SONAME is libonnxruntime.so.1; the unversioned name is what
        # ORT_DYLIB_PATH / dlopen users look for.
        ln -sfn "${ORT_LIB}" "${ORT_DIR}/libonnxruntime.so"
        ln -sfn "${ORT_LIB}" "${ORT_DIR}/libonnxruntime.so.1"
        printf '%s\n' "${ORT_VERSION}" >"${ORT_DIR}/VERSION"
        rm -rf -- "${tmp}"
        trap - EXIT
        log "ONNX Runtime ${ORT_VERSION} (${platform}) installed in .onnxruntime/"
    fi
    # Repair the symlinks if someone removed them.
    [[ -L "${ORT_DIR}/libonnxruntime.so" ]] || ln -sfn "${ORT_LIB}" "${ORT_DIR}/libonnxruntime.so"
    [[ -L "${ORT_DIR}/libonnxruntime.so.1" ]] || ln -sfn "${ORT_LIB}" "${ORT_DIR}/libonnxruntime.so.1"
}

# The GPU build: libonnxruntime.so with its CUDA provider libraries, then the CUDA
# libraries themselves under .onnxruntime-gpu/nvidia/ (cu13/lib/ and cudnn/lib/; the
# encoder preloads CUDA_SONAMES from there before it registers the CUDA provider).
# The driver is the machine's: CUDA 13 needs an NVIDIA driver 580 or newer.
fetch_onnxruntime_gpu() {
    local gpu_wheel="onnxruntime_gpu-${ORT_VERSION}-cp311-cp311-${gpu_platform}.whl"
    if [[ -f "${GPU_DIR}/${ORT_LIB}" && -f "${GPU_DIR}/VERSION" ]] &&
        [[ "$(cat "${GPU_DIR}/VERSION")" == "${ORT_VERSION}" ]]; then
        log "ONNX Runtime GPU ${ORT_VERSION} already in .onnxruntime-gpu/; skipping download"
        return
    fi
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: $tmp is local
    trap "rm -rf -- '${tmp}'" EXIT
    log "downloading ${gpu_wheel} from PyPI (~250 MB)"
    download_wheel onnxruntime-gpu "${gpu_platform}" "${gpu_wheel}" "${tmp}"
    mkdir -p "${GPU_DIR}"
    log "checking sha256 and extracting the runtime and its CUDA provider"
    extract_libs "${tmp}/${gpu_wheel}" "${gpu_sha256}" "${GPU_DIR}" "${ORT_LIB}" \
        libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so
    log "installing the CUDA 13 and cuDNN 9 libraries from NVIDIA's wheels (several GB)"
    python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --only-binary=:all: --target "${GPU_DIR}" "${CUDA_WHEELS[@]}" >&2 ||
        die "pip install of ${CUDA_WHEELS[*]} failed"
    local lib missing=()
    for lib in "${CUDA_SONAMES[@]}"; do
        compgen -G "${GPU_DIR}/nvidia/*/lib/${lib}" >/dev/null || missing+=("${lib}")
    done
    ((${#missing[@]} == 0)) ||
        die "the CUDA wheels installed no ${missing[*]} under .onnxruntime-gpu/nvidia/*/lib/"
    ln -sfn "${ORT_LIB}" "${GPU_DIR}/libonnxruntime.so"
    ln -sfn "${ORT_LIB}" "${GPU_DIR}/libonnxruntime.so.1"
    printf '%s\n' "${ORT_VERSION}" >"${GPU_DIR}/VERSION"
    rm -rf -- "${tmp}"
    trap - EXIT
    log "ONNX Runtime GPU ${ORT_VERSION} (${gpu_platform}) installed in .onnxruntime-gpu/"
}

fetch_onnxruntime
if ((gpu)); then
    fetch_onnxruntime_gpu
fi

if ((build)); then
    command -v cargo >/dev/null || die "cargo not found; install the Rust toolchain (rustup)"
    log "running cargo build --release"
    (cd "${ROOT}" && cargo build --release)
    log "built ${ROOT}/target/release/chatspace and chatspace-encoder"
else
    log "--no-build: skipping cargo build --release"
fi
log "done (ONNX Runtime: ${ORT_DIR}/libonnxruntime.so)"
