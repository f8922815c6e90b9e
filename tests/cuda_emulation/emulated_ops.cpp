// The CUDA kernels, compiled for the CPU, as the ops of a library of their
// own: torch.ops.torchconv_cuda_emulated.<op> on CPU tensors runs csrc/cuda's
// host code and kernels (one thread per block, blocks in turn).
#include <torch/library.h>

#include "cuda/ops.h"
#include "schemas.h"

TORCH_LIBRARY(torchconv_cuda_emulated, m) {
  for (const char* schema : torchconv::kOpSchemas) m.def(schema);
}

TORCH_LIBRARY_IMPL(torchconv_cuda_emulated, CPU, m) { torchconv::cuda::impl_kernels(m); }
