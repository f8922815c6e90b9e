// Registers the CUDA kernels (conv.cu, pool.cu) for the torchconv_cpp:: ops
// (schemas in csrc/schemas.h). Built only when setup.py compiles csrc/cuda.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY_IMPL(torchconv_cpp, CUDA, m) { torchconv::cuda::impl_kernels(m); }
