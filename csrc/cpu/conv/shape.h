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

// The two sides of a convolution, named for what they are in every
// computation, whichever of them is the op's input:
//
//   plane    the planes the kernel's windows lie on: plane_channels planes
//            of plane_h x plane_w per sample. im2col reads them, col2im
//            writes them.
//   windows  one value per window position: windows_channels planes of
//            windows_h x windows_w per sample. The GEMM produces them or
//            consumes them.
//
//                      plane            windows
//   conv2d             input            output
//   conv_transpose2d   output           input
//   conv2d_weight      input            grad_output
//
// Window position (y, x)'s tap (i, j) lies on plane pixel
// (y * stride_h - pad_h + i * dilation_h, x * stride_w - pad_w + j * dilation_w).
// The kernels' comments (csrc/cpu/conv/, cpu/im2col.h, cuda/) say "window
// position" for one value of the windows side, "windows rows" for its rows,
// and "plane rows" for the rows of a plane.
struct ConvShape {
  int64_t batch, groups;
  int64_t plane_channels, plane_h, plane_w;
  int64_t windows_channels, windows_h, windows_w;
  Window window;

  // Channels per group on each side.
  int64_t plane_group() const { return plane_channels / groups; }
  int64_t windows_group() const { return windows_channels / groups; }
  int64_t column_rows() const { return plane_group() * window.kernel_h * window.kernel_w; }
  // One plane's elements on each side.
  int64_t windows_size() const { return windows_h * windows_w; }
  int64_t plane_size() const { return plane_h * plane_w; }
  // One sample's elements on each side.
  int64_t windows_sample() const { return windows_channels * windows_size(); }
  int64_t plane_sample() const { return plane_channels * plane_size(); }
  // A 1x1 window at stride 1 without padding over windows of the plane's
  // size: the planes are their own column matrix.
  bool is_pointwise() const {
    const Window& w = window;
    return w.kernel_h == 1 && w.kernel_w == 1 && w.stride_h == 1 && w.stride_w == 1 &&
           w.pad_h == 0 && w.pad_w == 0 && windows_h == plane_h && windows_w == plane_w;
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
