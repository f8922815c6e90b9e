#!/usr/bin/env bash
# The GPU checks of the CUDA backend, for a session lent a GPU machine
# (the `device` tool: its image has python3 with torch 2.11.0+cu130 and nvcc,
# no internet, and starts bare on every call).
#
# Here (with internet), once:   bash scripts/gpu_session.sh prepare
#   downloads the test dependencies as Python 3.12 wheels into .whl/ (ignored
#   by git; pass `carry: [".whl"]` to the device call).
# There, stages, each with its own time limit, logs under $OUT (or
# /tmp/gpu_out); a device call may run 10 minutes and the machine is given
# back 30 s after it, so plan three calls:
#     bash scripts/gpu_session.sh build smoke cuda      (carry .whl)
#     bash scripts/gpu_session.sh core                  (carry .whl and the .so)
#     bash scripts/gpu_session.sh validate bench        (carry the .so)
#   build    the extension with its CUDA kernels, in place (setup.py
#            build_ext), unless a carried torchconv/_C*.so for this python
#            is there already (TORCHCONV_REBUILD=1 forces it); the .so is
#            copied to $OUT, to carry into the next calls
#   smoke    import, backends available on cuda, one conv on the GPU
#   cuda     tests/test_cuda.py (GPU agreement, determinism, half precision, ...)
#   core     the core tests' CUDA parameters (-k "cuda-cuda")
#   validate python -m torchconv.validate --device cuda
#   bench    benchmarks/bench_ops.py --device cuda, float32 and bfloat16
#
# The device's torch is 2.11, not the 2.13.0 this project pins: the build
# uses --no-deps semantics (setup.py build_ext) and the tests run against
# that torch; differences that come from the torch version (error messages,
# OpInfo samples) are not CUDA bugs.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# torch guesses CUDA_HOME from nvcc's path; a shim such as /usr/local/bin/nvcc
# makes that /usr/local, where the link then finds no libcudart.
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

WHEELS=(pytest pluggy iniconfig packaging hypothesis sortedcontainers attrs expecttest)

prepare() {  # .whl/ is in .gitignore
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d .whl "${WHEELS[@]}"
}

# Carried wheels, for the packages the device's python lacks.
install_test_dependencies() {
  if "$PY" -c "import pytest, hypothesis, expecttest" 2>/dev/null; then return 0; fi
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "pytest/hypothesis/expecttest missing and no .whl/ carried (run 'prepare' here first)" >&2
    return 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

# stage NAME SECONDS COMMAND...: runs it with a time limit, output to $OUT/NAME.log.
stage() {
  local name=$1 seconds=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${seconds}s): $*"
  local start=$SECONDS
  timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log" | tail -25
  local status=${PIPESTATUS[0]}
  echo "=== $name: exit $status in $((SECONDS - start))s"
  return "$status"
}

run_stage() {
  case $1 in
    build)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
      "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
      cat "$OUT/gpu.txt"
      local so
      so=torchconv/_C$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
      if [ -f "$so" ] && [ "${TORCHCONV_REBUILD:-0}" != 1 ]; then
        echo "=== build: using the carried $so"
      else
        stage build 400 env TORCHCONV_BUILD_CUDA=1 MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace || return 1
      fi
      cp "$so" "$OUT/" ;;
    smoke)
      stage smoke 60 "$PY" -c "
import torch, torchconv, torch.nn.functional as F
print('cuda backends:', torchconv.backends.available('cuda'))
x = torch.randn(2, 3, 8, 8, device='cuda', requires_grad=True)
w = torch.randn(4, 3, 3, 3, device='cuda', requires_grad=True)
y = torchconv.conv2d(x, w, padding=1)
y.square().sum().backward()
torch.cuda.synchronize()
print('max |y - F.conv2d|:', (y - F.conv2d(x, w, padding=1)).abs().max().item())
" ;;
    cuda) install_test_dependencies && stage cuda 300 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda.py ;;
    core) install_test_dependencies && stage core 540 "$PY" -m pytest -q -p no:cacheprovider tests -k "cuda-cuda" -rf ;;
    validate) stage validate 200 "$PY" -m torchconv.validate --device cuda ;;
    bench) stage bench 360 "$PY" benchmarks/bench_ops.py --device cuda --dtype float32,bfloat16 --pairs 30 ;;
    *) echo "unknown stage $1" >&2; return 2 ;;
  esac
}

if [ "${1:-}" = prepare ]; then
  prepare
  exit
fi
stages=("$@")
if [ "${#stages[@]}" -eq 0 ] || [ "${stages[0]}" = all ]; then
  stages=(build smoke cuda core validate bench)
fi
failed=0
for name in "${stages[@]}"; do
  run_stage "$name" || failed=1
  if [ "$name" = build ] && [ "$failed" -ne 0 ]; then
    echo "build failed: stopping" >&2
    exit 1
  fi
done
exit "$failed"
