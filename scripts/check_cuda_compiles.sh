#!/usr/bin/env bash
# Compiles every CUDA source of csrc/cuda with nvcc (and its host .cpp files
# with g++) against the installed torch's headers, without a GPU and without
# a CUDA build of torch: the check to run on a CPU-only machine before
# spending GPU time. It catches syntax, type and template errors; it cannot
# link (a CPU torch has no libtorch_cuda) or run anything.
#
#   bash scripts/check_cuda_compiles.sh            # sm_90 (H100/H200)
#   CUDA_ARCH=80 bash scripts/check_cuda_compiles.sh
#
# A CPU wheel of torch ships the c10/cuda and ATen/cuda headers but not the
# generated c10/cuda/impl/cuda_cmake_macros.h; a stand-in is written to a
# temporary include directory. The flags mirror torch.utils.cpp_extension's
# for a CUDAExtension.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${CUDA_ARCH:-90}
TORCH_INCLUDE=$(python -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))")
CUDA_INCLUDE=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include
STUBS=$(mktemp -d)
OBJECTS=$(mktemp -d)
trap 'rm -rf "$STUBS" "$OBJECTS"' EXIT
mkdir -p "$STUBS/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$STUBS/c10/cuda/impl/cuda_cmake_macros.h"

INCLUDES=(-Icsrc -I"$STUBS")
for dir in $TORCH_INCLUDE; do INCLUDES+=(-isystem "$dir"); done
ABI=$(python -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
DEFINES=(-DTORCHCONV_WITH_CUDA -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -D_GLIBCXX_USE_CXX11_ABI="$ABI")

status=0
for source in $(find csrc/cuda -name '*.cu' | sort); do
  echo "nvcc  $source"
  "$NVCC" -c "$source" -o "$OBJECTS/$(basename "$source").o" -std=c++20 -O3 \
    -gencode "arch=compute_$ARCH,code=sm_$ARCH" \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -Xcompiler -fPIC \
    "${DEFINES[@]}" "${INCLUDES[@]}" || status=1
done
for source in $(find csrc/cuda -name '*.cpp' | sort); do
  echo "g++   $source"
  g++ -c "$source" -o "$OBJECTS/$(basename "$source").o" -std=c++20 -O3 -fPIC \
    "${DEFINES[@]}" "${INCLUDES[@]}" -isystem "$CUDA_INCLUDE" || status=1
done
if [ "$status" -eq 0 ]; then echo "all CUDA sources compile (sm_$ARCH)"; fi
exit "$status"
