// Geometry of a sliding window, in one place for the argument checks
// (checks.h), the CPU kernels (cpu/) and the CUDA kernels (cuda/): the
// window itself, the output sizes it gives, and the per-axis rules the
// kernels share (which taps of a max window lie in the input, the cells and
// divisor of an average window, which windows reach an input position,
// which window position's tap reads it). Plain integer arithmetic with no
// ATen, so that the same functions compile for the host and, under nvcc,
// for the device.
//
// Along one axis, tap t (0 <= t < kernel) of output cell o reads input
// position o * stride - pad + t * dilation; positions outside [0, size) are
// padding.
#pragma once

#include <cstdint>

// __host__ __device__ under nvcc; nothing for a C++ compiler (the CPU
// kernels, and the CUDA sources compiled for the CPU in the tests'
// emulation, cuda/emulation.h).
#if defined(__CUDACC__)
#define TORCHCONV_HOST_DEVICE __host__ __device__
#else
#define TORCHCONV_HOST_DEVICE
#endif

namespace torchconv {

// A convolution's or a pooling's window (average pooling: dilation 1).
struct Window {
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
};

// Integer division rounding down and up, for either sign of a (b > 0).
TORCHCONV_HOST_DEVICE inline int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

TORCHCONV_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// ------------------------------------------------------------ output sizes

// conv2d's output cells along one axis (may be <= 0: the checks refuse
// that). Rounded down, as ATen's formula: a window that overhangs the padded
// input gives no cell at any stride.
TORCHCONV_HOST_DEVICE inline int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                                                      int64_t dilation) {
  return floor_div(size + 2 * pad - dilation * (kernel - 1) - 1, stride) + 1;
}

// conv_transpose2d's: the size whose conv2d output is `size`, plus output_padding.
// Arguments in the order of torchconv/_output_size.py's twin.
TORCHCONV_HOST_DEVICE inline int64_t conv_transpose_output_size(int64_t size, int64_t kernel, int64_t stride,
                                                                int64_t pad, int64_t output_padding,
                                                                int64_t dilation) {
  return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1;
}

// ATen's pooling_output_shape: with ceil_mode the last window must start
// inside the input or its left padding.
TORCHCONV_HOST_DEVICE inline int64_t pool_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                                                      int64_t dilation, bool ceil_mode) {
  const int64_t span = dilation * (kernel - 1) + 1;
  const int64_t out = floor_div(size + 2 * pad - span + (ceil_mode ? stride - 1 : 0), stride) + 1;
  return ceil_mode && (out - 1) * stride >= size + pad ? out - 1 : out;
}

// ------------------------------------------------------ per-axis pool rules

// Positions or cells [begin, end) along one axis; empty when begin >= end.
struct Range {
  int64_t begin, end;
};

// The max-window clip: the taps of window o that lie inside [0, size), as
// positions from `begin` (the first tap inside, ATen's clamped start) up to
// `end`, stepping by dilation. A max window starts at -inf with position
// `begin` as its index.
TORCHCONV_HOST_DEVICE inline Range window_taps(int64_t o, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                                               int64_t dilation) {
  int64_t begin = o * stride - pad;
  const int64_t last = begin + (kernel - 1) * dilation + 1;
  while (begin < 0) begin += dilation;
  return Range{begin, last < size ? last : size};
}

// An average window along one axis: its cells inside the input [begin, end)
// and the length of the window clipped to the padded input (its divisor
// factor with count_include_pad).
struct Span {
  int64_t begin, end, padded;
};

TORCHCONV_HOST_DEVICE inline Span avg_span(int64_t o, int64_t size, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t start = o * stride - pad;
  const int64_t stop = start + kernel < size + pad ? start + kernel : size + pad;
  return Span{start > 0 ? start : 0, stop < size ? stop : size, stop - start};
}

// The divisor of an average window: divisor_override when not 0 (the checks
// refuse an override of 0), else the cells it covers in the padded input
// (count_include_pad) or in the input alone; 0 for a window that covers no
// input cell (its output is 0, its gradient goes nowhere).
TORCHCONV_HOST_DEVICE inline int64_t avg_divisor(const Span& ys, const Span& xs, bool count_include_pad,
                                                 int64_t divisor_override) {
  if (ys.begin >= ys.end || xs.begin >= xs.end) return 0;
  if (divisor_override != 0) return divisor_override;
  if (count_include_pad) return ys.padded * xs.padded;
  return (ys.end - ys.begin) * (xs.end - xs.begin);
}

// The output cells, of `outputs`, whose windows can reach some input
// position of [lo, hi) (hi > lo >= 0): the backward passes' gathers and
// bands. index_t: the CUDA kernels divide in 32 bits where their indices fit
// (cuda/launch.cuh); the result is in 64 bits either way.
template <typename index_t>
TORCHCONV_HOST_DEVICE inline Range windows_reaching(index_t lo, index_t hi, int64_t outputs, index_t kernel,
                                                    index_t stride, index_t pad, index_t dilation) {
  const index_t span = (kernel - 1) * dilation + 1;
  const int64_t begin = lo + pad < span ? 0 : (lo + pad - span) / stride + 1;
  const int64_t end = (hi - 1 + pad) / stride + 1;
  const int64_t clipped = end < outputs ? end : outputs;
  return Range{begin, clipped > begin ? clipped : begin};
}

// The window position g along one axis whose tap `tap` reads input position
// i (g * stride - pad + tap * dilation == i), or -1 when no g in
// [0, windows) does: the gathers that give each position of a convolution's
// plane the sum of what read it (col2im, the depthwise transposed
// convolution).
template <typename index_t>
TORCHCONV_HOST_DEVICE inline index_t window_position_reading(index_t i, index_t tap, int64_t windows, index_t stride,
                                                             int64_t pad, int64_t dilation) {
  const index_t shifted = i + static_cast<index_t>(pad - tap * dilation);  // g * stride if some g reads i
  return shifted >= 0 && shifted % stride == 0 && shifted / stride < windows ? shifted / stride : index_t(-1);
}

// Calls fn(tap, position, pixel) for every tap (i * kernel_w + j) of window
// w at each of the first `positions` window positions (rows of windows_w)
// whose pixel lies in a plane_h x plane_w plane, pixel = iy * plane_w + ix:
// the tables of the CPU's whole-plane im2col (cpu/im2col_small.h,
// cpu/im2col_gather.h). Host only.
template <typename Fn>
inline void for_each_tap_in_plane(const Window& w, int64_t plane_h, int64_t plane_w, int64_t windows_w,
                                  int64_t positions, const Fn& fn) {
  for (int64_t i = 0; i < w.kernel_h; ++i) {
    for (int64_t j = 0; j < w.kernel_w; ++j) {
      for (int64_t p = 0; p < positions; ++p) {
        const int64_t iy = p / windows_w * w.stride_h - w.pad_h + i * w.dilation_h;
        const int64_t ix = p % windows_w * w.stride_w - w.pad_w + j * w.dilation_w;
        if (iy >= 0 && iy < plane_h && ix >= 0 && ix < plane_w) fn(i * w.kernel_w + j, p, iy * plane_w + ix);
      }
    }
  }
}

}  // namespace torchconv
