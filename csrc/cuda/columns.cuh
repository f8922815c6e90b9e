// im2col and col2im on the GPU: the two data-movement primitives of conv2d,
// conv_transpose2d and the weight gradient (docs/architecture.md: the two ops
// are adjoint; six computations, two primitives, one GEMM).
//
// The column matrix is pixel-major: one row per window position p = (n, y, x)
// of the chunk's samples, one column per (group, tap, channel in group):
//
//   columns[p][k],  k = ((g * kernel_h + i) * kernel_w + j) * group_channels + c
//
// holds pixel (y * stride_h - pad_h + i * dilation_h,
//              x * stride_w - pad_w + j * dilation_w) of plane channel
// g * group_channels + c, zero outside the plane (the plane and windows
// sides: cpu/conv/shape.h). With this order a GEMM of
// the rows against a channels_last weight ([O, kH, kW, C/G]) gives a
// channels_last output, every group's columns are one contiguous block of a
// row, and consecutive threads (consecutive k) read consecutive channels of a
// channels_last planes: the conv wrappers hand these kernels channels_last
// planes, so their loads and stores coalesce.
//
// col2im is written as a gather, not a scatter: each plane pixel sums the
// column entries that read it, in a fixed tap order. No two threads write the
// same address, there are no atomics, and results are bit-identical from run
// to run.
#pragma once

#include <ATen/OpMathType.h>

#include "launch.cuh"
#include "window.h"

namespace torchconv {
namespace cuda {

// The window positions and taps of one chunk of samples.
struct ColumnShape {
  int64_t first_sample, samples;  // samples [first_sample, first_sample + samples)
  int64_t windows_h, windows_w;   // positions of the window
  int64_t groups, group_channels; // plane channels = groups * group_channels
  Window window;

  __host__ __device__ int64_t width() const {
    return groups * window.kernel_h * window.kernel_w * group_channels;
  }
  __host__ __device__ int64_t rows() const { return samples * windows_h * windows_w; }
};

template <typename scalar_t, typename index_t>
__global__ void im2col_kernel(const scalar_t* __restrict__ planes, Layout4d plane_layout, ColumnShape s,
                              scalar_t* __restrict__ columns) {
  const Window& w = s.window;
  const index_t width = static_cast<index_t>(s.width()), group_channels = static_cast<index_t>(s.group_channels);
  const index_t kernel_h = static_cast<index_t>(w.kernel_h), kernel_w = static_cast<index_t>(w.kernel_w);
  const index_t windows_h = static_cast<index_t>(s.windows_h), windows_w = static_cast<index_t>(s.windows_w);
  const index_t total = static_cast<index_t>(s.rows()) * width;
  TORCHCONV_KERNEL_LOOP(index_t, e, total) {
    index_t k = e % width, p = e / width;
    const index_t c = k % group_channels;
    k /= group_channels;
    const index_t j = k % kernel_w;
    k /= kernel_w;
    const index_t i = k % kernel_h;
    const index_t g = k / kernel_h;
    const index_t x = p % windows_w;
    p /= windows_w;
    const index_t y = p % windows_h;
    const index_t n = p / windows_h;
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
    const bool inside = iy >= 0 && iy < plane_layout.size[2] && ix >= 0 && ix < plane_layout.size[3];
    columns[e] = inside ? planes[plane_layout.offset(s.first_sample + n, g * group_channels + c, iy, ix)]
                        : scalar_t(0);
  }
}

// planes[n, ch, y, x] = bias[ch] + sum of the column entries that im2col
// would read from that pixel, for every pixel of the chunk's samples.
// Threads walk the planes in channels_last order (channel fastest), matching
// the columns' order; `planes` may have any strides.
template <typename scalar_t, typename index_t>
__global__ void col2im_kernel(const scalar_t* __restrict__ columns, ColumnShape s, const scalar_t* __restrict__ bias,
                              Layout4d plane_layout, scalar_t* __restrict__ planes) {
  using acc_t = at::opmath_type<scalar_t>;
  const Window& w = s.window;
  const int64_t width = s.width();
  const index_t group_channels = static_cast<index_t>(s.group_channels);
  const index_t channels = static_cast<index_t>(s.groups) * group_channels;
  const index_t plane_h = static_cast<index_t>(plane_layout.size[2]);
  const index_t plane_w = static_cast<index_t>(plane_layout.size[3]);
  const index_t stride_h = static_cast<index_t>(w.stride_h), stride_w = static_cast<index_t>(w.stride_w);
  const index_t windows_h = static_cast<index_t>(s.windows_h), windows_w = static_cast<index_t>(s.windows_w);
  const index_t total = static_cast<index_t>(s.samples) * channels * plane_h * plane_w;
  TORCHCONV_KERNEL_LOOP(index_t, e, total) {
    index_t rest = e;
    const index_t ch = rest % channels;
    rest /= channels;
    const index_t x = rest % plane_w;
    rest /= plane_w;
    const index_t y = rest % plane_h;
    const index_t n = rest / plane_h;
    const index_t g = ch / group_channels, c = ch % group_channels;
    acc_t sum = bias != nullptr ? static_cast<acc_t>(bias[ch]) : acc_t(0);
    for (index_t i = 0; i < w.kernel_h; ++i) {
      const index_t gy = window_position_reading<index_t>(y, i, windows_h, stride_h, w.pad_h, w.dilation_h);
      if (gy < 0) continue;
      for (index_t j = 0; j < w.kernel_w; ++j) {
        const index_t gx = window_position_reading<index_t>(x, j, windows_w, stride_w, w.pad_w, w.dilation_w);
        if (gx < 0) continue;
        const int64_t row = (static_cast<int64_t>(n) * windows_h + gy) * windows_w + gx;
        const int64_t k = ((static_cast<int64_t>(g) * w.kernel_h + i) * w.kernel_w + j) * group_channels + c;
        sum += static_cast<acc_t>(columns[row * width + k]);
      }
    }
    planes[plane_layout.offset(s.first_sample + n, ch, y, x)] = static_cast<scalar_t>(sum);
  }
}

}  // namespace cuda
}  // namespace torchconv
