// The shape of one convolution as the CPU kernels see it (ConvShape), and
// small helpers of the kernels' operands. docs/architecture.md maps the
// files of csrc/cpu/conv/.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "../../window.h"
#include "../precision.h"

namespace torchconv {
namespace cpu {
namespace conv {

struct ConvShape {
  int64_t batch, groups;
  int64_t image_channels, image_h, image_w;  // the side that im2col reads / col2im writes
  int64_t grid_channels, grid_h, grid_w;     // the side the GEMM produces or consumes
  Window window;

  int64_t image_group() const { return image_channels / groups; }
  int64_t grid_group() const { return grid_channels / groups; }
  int64_t column_rows() const { return image_group() * window.kernel_h * window.kernel_w; }
  int64_t grid_size() const { return grid_h * grid_w; }
  int64_t image_size() const { return image_h * image_w; }
  // One sample's elements on each side.
  int64_t grid_sample() const { return grid_channels * grid_size(); }
  int64_t image_sample() const { return image_channels * image_size(); }
  bool is_pointwise() const {
    const Window& w = window;
    return w.kernel_h == 1 && w.kernel_w == 1 && w.stride_h == 1 && w.stride_w == 1 &&
           w.pad_h == 0 && w.pad_w == 0 && grid_h == image_h && grid_w == image_w;
  }
};


// A weight or bias in the type the kernels compute in (float32 for the half
// dtypes), contiguous; undefined stays undefined.
inline at::Tensor computed_in_opmath(const at::Tensor& t) {
  if (!t.defined()) return t;
  return t.to(at::toOpMathType(t.scalar_type())).contiguous();
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Scratch of a thread's chunk of planes in the direct loops: n elements,
// none when n is 0 (float32 and float64 need none).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
