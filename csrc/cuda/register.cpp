// Registers the CUDA kernels (conv.cu, pool.cu) for the torchconv_cpp:: ops
// declared in csrc/ops.cpp. Built only when setup.py compiles csrc/cuda.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY_IMPL(torchconv_cpp, CUDA, m) {
  m.impl("conv2d", &torchconv::cuda::conv2d);
  m.impl("conv_transpose2d", &torchconv::cuda::conv_transpose2d);
  m.impl("conv2d_weight", &torchconv::cuda::conv2d_weight);
  m.impl("max_pool2d", &torchconv::cuda::max_pool2d);
  m.impl("max_pool2d_backward", &torchconv::cuda::max_pool2d_backward);
  m.impl("avg_pool2d", &torchconv::cuda::avg_pool2d);
  m.impl("avg_pool2d_backward", &torchconv::cuda::avg_pool2d_backward);
}
