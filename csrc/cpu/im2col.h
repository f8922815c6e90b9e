// im2col and col2im for one image: the two data-movement primitives that
// conv2d and conv_transpose2d share (see ARCHITECTURE: six computations, two
// primitives, one GEMM).
//
// Geometry: an image of `channels` planes of size image_h x image_w is read
// (im2col) or written (col2im) through a kernel_h x kernel_w window placed at
// grid_h x grid_w positions. Row r = (c * kernel_h + i) * kernel_w + j of the
// column matrix holds, for every grid position (y, x), the pixel
// (y * stride_h - pad_h + i * dilation_h, x * stride_w - pad_w + j * dilation_w)
// of plane c; pixels outside the image read as zero (im2col) or are dropped
// (col2im). Every access is bounds-checked, so no shape can make them read or
// write out of range. im2col may widen as it copies (a float16 or bfloat16
// image into float32 columns, see precision.h): the widening then costs no
// pass of its own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "precision.h"

namespace torchconv {
namespace cpu {

struct Window {
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
};

// First and one-past-last grid x whose pixel x * stride - pad + offset lies
// in [0, width): the run of a column row that maps inside the image.
inline void inside_range(int64_t grid, int64_t stride, int64_t offset, int64_t width,
                         int64_t* begin, int64_t* end) {
  // x * stride + offset >= 0  <=>  x >= ceil(-offset / stride)
  int64_t b = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  // x * stride + offset < width  <=>  x <= (width - 1 - offset) / stride
  int64_t e = width - 1 - offset < 0 ? 0 : (width - 1 - offset) / stride + 1;
  *begin = std::min(b, grid);
  *end = std::max(*begin, std::min(e, grid));
}

template <typename image_t, typename column_t>
void im2col(const image_t* image, int64_t channels, int64_t image_h, int64_t image_w,
            int64_t grid_h, int64_t grid_w, const Window& w, column_t* columns) {
  const int64_t grid = grid_h * grid_w;
  for (int64_t c = 0; c < channels; ++c) {
    const image_t* plane = image + c * image_h * image_w;
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        column_t* row = columns + ((c * w.kernel_h + i) * w.kernel_w + j) * grid;
        const int64_t offset_w = j * w.dilation_w - w.pad_w;
        int64_t x_begin, x_end;
        inside_range(grid_w, w.stride_w, offset_w, image_w, &x_begin, &x_end);
        for (int64_t y = 0; y < grid_h; ++y) {
          column_t* out = row + y * grid_w;
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= image_h) {
            std::fill(out, out + grid_w, column_t(0));
            continue;
          }
          const image_t* in = plane + iy * image_w + offset_w;
          std::fill(out, out + x_begin, column_t(0));
          if (w.stride_w == 1) {
            convert(in + x_begin, out + x_begin, x_end - x_begin);
          } else {
            for (int64_t x = x_begin; x < x_end; ++x) out[x] = static_cast<column_t>(in[x * w.stride_w]);
          }
          std::fill(out + x_end, out + grid_w, column_t(0));
        }
      }
    }
  }
}

// The adjoint of im2col: adds every column entry onto the pixel it was read
// from. `image` must be zeroed (or hold values to accumulate onto).
template <typename scalar_t>
void col2im(const scalar_t* columns, int64_t channels, int64_t image_h, int64_t image_w,
            int64_t grid_h, int64_t grid_w, const Window& w, scalar_t* image) {
  const int64_t grid = grid_h * grid_w;
  for (int64_t c = 0; c < channels; ++c) {
    scalar_t* plane = image + c * image_h * image_w;
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const scalar_t* row = columns + ((c * w.kernel_h + i) * w.kernel_w + j) * grid;
        const int64_t offset_w = j * w.dilation_w - w.pad_w;
        int64_t x_begin, x_end;
        inside_range(grid_w, w.stride_w, offset_w, image_w, &x_begin, &x_end);
        for (int64_t y = 0; y < grid_h; ++y) {
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= image_h) continue;
          const scalar_t* in = row + y * grid_w;
          scalar_t* out = plane + iy * image_w + offset_w;
          if (w.stride_w == 1) {
            for (int64_t x = x_begin; x < x_end; ++x) out[x] += in[x];
          } else {
            for (int64_t x = x_begin; x < x_end; ++x) out[x * w.stride_w] += in[x];
          }
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace torchconv
