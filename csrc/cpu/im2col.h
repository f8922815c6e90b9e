// im2col and col2im for one sample: the two data-movement primitives that
// conv2d and conv_transpose2d share (docs/architecture.md: the two ops are
// adjoint; six computations, two primitives, one GEMM).
//
// Geometry (the plane and windows sides of cpu/conv/shape.h): `channels`
// planes of size plane_h x plane_w are read (im2col) or written (col2im)
// through a kernel_h x kernel_w window placed at windows_h x windows_w
// positions. Row r = (c * kernel_h + i) * kernel_w + j of the column matrix
// holds, for every window position (y, x), the pixel
// (y * stride_h - pad_h + i * dilation_h, x * stride_w - pad_w + j * dilation_w)
// of plane c; pixels outside the plane read as zero (im2col) or are dropped
// (col2im). Every access is bounds-checked, so no shape can make them read or
// write out of range. im2col may widen as it copies (float16 or bfloat16
// planes into float32 columns, see precision.h): the widening then costs no
// pass of its own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "precision.h"
#include "window.h"

namespace torchconv {
namespace cpu {

// First and one-past-last window position x in [0, windows) whose pixel
// x * stride + offset lies in [0, width): the run of a column row that maps
// inside the plane.
inline void inside_range(int64_t windows, int64_t stride, int64_t offset, int64_t width,
                         int64_t* begin, int64_t* end) {
  // x * stride + offset >= 0  <=>  x >= ceil(-offset / stride)
  int64_t b = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  // x * stride + offset < width  <=>  x <= (width - 1 - offset) / stride
  int64_t e = width - 1 - offset < 0 ? 0 : (width - 1 - offset) / stride + 1;
  *begin = std::min(b, windows);
  *end = std::max(*begin, std::min(e, windows));
}

// out[x] = in[2 * x] for x < n: the row of a stride-2 window. Of the same
// type, bfloat16 or float32, sixteen at a time with AVX-512 (the even
// values of 31 read: a narrowing of 32-bit lanes, or a permute), reading
// nothing past in[2 * (n - 1)].
template <typename plane_t, typename column_t>
inline void copy_every_other(const plane_t* in, column_t* out, int64_t n) {
  int64_t x = 0;
#if TORCHCONV_STORE16
  if constexpr (std::is_same<plane_t, column_t>::value && std::is_same<plane_t, c10::BFloat16>::value) {
    for (; x < n; x += 16) {
      const int64_t count = std::min<int64_t>(16, n - x);
      const __m512i pairs = _mm512_maskz_loadu_epi16(static_cast<__mmask32>(lanes_mask(2 * count - 1)), in + 2 * x);
      _mm256_mask_storeu_epi16(out + x, static_cast<__mmask16>(lanes_mask(count)), _mm512_cvtepi32_epi16(pairs));
    }
    return;
  } else if constexpr (std::is_same<plane_t, column_t>::value && std::is_same<plane_t, float>::value) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (; x < n; x += 16) {
      const int64_t count = std::min<int64_t>(16, n - x), reads = 2 * count - 1;
      const __mmask16 first = static_cast<__mmask16>(lanes_mask(std::min<int64_t>(16, reads)));
      const __m512 low = _mm512_maskz_loadu_ps(first, in + 2 * x);
      const __m512 high = _mm512_maskz_loadu_ps(static_cast<__mmask16>(lanes_mask(reads - 16)), in + 2 * x + 16);
      _mm512_mask_storeu_ps(out + x, static_cast<__mmask16>(lanes_mask(count)), _mm512_permutex2var_ps(low, even, high));
    }
    return;
  }
#endif
  for (; x < n; ++x) out[x] = static_cast<column_t>(in[2 * x]);
}

// Windows rows [y_begin, y_end) of the column matrix: a (channels * kernel_h
// * kernel_w) x ((y_end - y_begin) * windows_w) matrix, row-major, its rows
// ld_columns apart (>= the width: a block of several samples puts each
// sample's columns side by side in one matrix).
// The convolution kernels build the columns a block of windows rows at a
// time, so the scratch stays a few MiB however large the planes (a whole
// 64-channel 1024 x 1024 sample's 3 x 3 columns are 2.25 GiB).
template <typename plane_t, typename column_t>
void im2col(const plane_t* planes, int64_t channels, int64_t plane_h, int64_t plane_w,
            int64_t windows_w, const Window& w, int64_t y_begin, int64_t y_end, column_t* columns,
            int64_t ld_columns) {
  for (int64_t c = 0; c < channels; ++c) {
    const plane_t* plane = planes + c * plane_h * plane_w;
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        column_t* row = columns + ((c * w.kernel_h + i) * w.kernel_w + j) * ld_columns;
        const int64_t offset_w = j * w.dilation_w - w.pad_w;
        int64_t x_begin, x_end;
        inside_range(windows_w, w.stride_w, offset_w, plane_w, &x_begin, &x_end);
        if (w.stride_h == 1 && w.stride_w == 1 && windows_w == plane_w && x_begin < x_end) {
          // Consecutive windows rows read consecutive plane rows of the same
          // width: the rows inside the plane are one run of it,
          // copied at once, and the few entries that run wraps into the
          // next row (the padding columns) are zeroed after.
          const int64_t first_iy = y_begin - w.pad_h + i * w.dilation_h;
          const int64_t ya = std::min(y_end, std::max(y_begin, w.pad_h - i * w.dilation_h));
          const int64_t yb = std::max(ya, std::min(y_end, plane_h + w.pad_h - i * w.dilation_h));
          std::fill(row, row + (ya - y_begin) * windows_w, column_t(0));
          if (ya < yb) {
            const int64_t d0 = (ya - y_begin) * windows_w + x_begin, d1 = (yb - 1 - y_begin) * windows_w + x_end;
            convert(plane + (first_iy + ya - y_begin) * plane_w + x_begin + offset_w, row + d0, d1 - d0);
            for (int64_t y = ya; y < yb; ++y) {
              column_t* out = row + (y - y_begin) * windows_w;
              std::fill(out, out + x_begin, column_t(0));
              std::fill(out + x_end, out + windows_w, column_t(0));
            }
          }
          std::fill(row + (yb - y_begin) * windows_w, row + (y_end - y_begin) * windows_w, column_t(0));
          continue;
        }
        for (int64_t y = y_begin; y < y_end; ++y) {
          column_t* out = row + (y - y_begin) * windows_w;
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= plane_h) {
            std::fill(out, out + windows_w, column_t(0));
            continue;
          }
          const plane_t* in = plane + iy * plane_w + offset_w;
          std::fill(out, out + x_begin, column_t(0));
          if (w.stride_w == 1) {
            convert(in + x_begin, out + x_begin, x_end - x_begin);
          } else if (w.stride_w == 2) {
            copy_every_other(in + 2 * x_begin, out + x_begin, x_end - x_begin);
          } else {
            for (int64_t x = x_begin; x < x_end; ++x) out[x] = static_cast<column_t>(in[x * w.stride_w]);
          }
          std::fill(out + x_end, out + windows_w, column_t(0));
        }
      }
    }
  }
}

// Calls row(in, out, x_begin, x_end) for every column row piece of
// col2im below: window positions x in [x_begin, x_end) of in[x *
// pixel_stride] go to out[x * stride_w] of the plane.
template <typename column_t, typename plane_t, typename Row>
void for_each_col2im_row(const column_t* columns, int64_t ld_columns, int64_t pixel_stride, int64_t channels,
                         int64_t plane_h, int64_t plane_w, int64_t windows_w, const Window& w, int64_t y_begin,
                         int64_t y_end, plane_t* planes, const Row& row) {
  for (int64_t c = 0; c < channels; ++c) {
    plane_t* plane = planes + c * plane_h * plane_w;
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const column_t* tap_row = columns + ((c * w.kernel_h + i) * w.kernel_w + j) * ld_columns;
        const int64_t offset_w = j * w.dilation_w - w.pad_w;
        int64_t x_begin, x_end;
        inside_range(windows_w, w.stride_w, offset_w, plane_w, &x_begin, &x_end);
        for (int64_t y = y_begin; y < y_end; ++y) {
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= plane_h) continue;
          row(tap_row + (y - y_begin) * windows_w * pixel_stride, plane + iy * plane_w + offset_w, x_begin, x_end);
        }
      }
    }
  }
}

// The adjoint of im2col over the same windows rows: adds every column entry
// onto the pixel it was read from. Entry (r, p) of the column matrix (row r,
// window position p of the block) is columns[r * ld_columns + p *
// pixel_stride]: pixel_stride 1 for im2col's layout, or ld_columns 1 and
// pixel_stride the row count for its transpose (a row per window position).
// `planes` must be zeroed (or hold values to accumulate onto).
template <typename scalar_t>
void col2im(const scalar_t* columns, int64_t ld_columns, int64_t pixel_stride, int64_t channels, int64_t plane_h,
            int64_t plane_w, int64_t windows_w, const Window& w, int64_t y_begin, int64_t y_end, scalar_t* planes) {
  const int64_t ps = pixel_stride, sw = w.stride_w;
  for_each_col2im_row(columns, ld_columns, ps, channels, plane_h, plane_w, windows_w, w, y_begin, y_end, planes,
                      [&](const scalar_t* in, scalar_t* out, int64_t x_begin, int64_t x_end) {
    if (ps == 1 && sw == 1) {
      for (int64_t x = x_begin; x < x_end; ++x) out[x] += in[x];
    } else {
      for (int64_t x = x_begin; x < x_end; ++x) out[x * sw] += in[x * ps];
    }
  });
}

// Channels_last (NHWC) planes: pixel (y, x) holds its `channels` values
// contiguously, and a group reads `group_channels` of them from
// `channel_begin`. The column matrix is then transposed with respect to the
// one above: one row per window position of rows [y_begin, y_end), holding
// the window's taps in (i, j, c) order, kernel_h * kernel_w *
// group_channels values, which is a channels_last weight's own order. Each
// tap copies a run of contiguous channels; with one group and no dilation
// a whole kernel row's taps are one run.
template <typename plane_t, typename column_t>
void im2col_nhwc(const plane_t* planes, int64_t channels, int64_t channel_begin, int64_t group_channels,
                 int64_t plane_h, int64_t plane_w, int64_t windows_w, const Window& w, int64_t y_begin,
                 int64_t y_end, column_t* columns) {
  const int64_t cg = group_channels, tap_row = w.kernel_w * cg, depth = w.kernel_h * tap_row;
  const bool runs = w.dilation_w == 1 && channels == cg;
  for (int64_t y = y_begin; y < y_end; ++y) {
    for (int64_t x = 0; x < windows_w; ++x) {
      column_t* col = columns + ((y - y_begin) * windows_w + x) * depth;
      const int64_t ix0 = x * w.stride_w - w.pad_w;
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        column_t* out = col + i * tap_row;
        const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
        if (iy < 0 || iy >= plane_h) {
          std::fill(out, out + tap_row, column_t(0));
          continue;
        }
        const plane_t* pixels = planes + iy * plane_w * channels + channel_begin;
        if (runs) {
          const int64_t j_begin = std::min(w.kernel_w, std::max<int64_t>(0, -ix0));
          const int64_t j_end = std::max(j_begin, std::min(w.kernel_w, plane_w - ix0));
          std::fill(out, out + j_begin * cg, column_t(0));
          convert(pixels + (ix0 + j_begin) * channels, out + j_begin * cg, (j_end - j_begin) * cg);
          std::fill(out + j_end * cg, out + tap_row, column_t(0));
        } else {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const int64_t ix = ix0 + j * w.dilation_w;
            if (ix < 0 || ix >= plane_w) {
              std::fill(out + j * cg, out + (j + 1) * cg, column_t(0));
            } else {
              convert(pixels + ix * channels, out + j * cg, cg);
            }
          }
        }
      }
    }
  }
}

// Calls tap(in, out) for every tap of col2im_nhwc below that lands on the
// plane: the tap's group_channels column values and its pixel's channels
// from channel_begin.
template <typename column_t, typename plane_t, typename Tap>
void for_each_col2im_nhwc_tap(const column_t* columns, int64_t channels, int64_t channel_begin,
                              int64_t group_channels, int64_t plane_h, int64_t plane_w, int64_t windows_w,
                              const Window& w, int64_t y_begin, int64_t y_end, plane_t* planes, const Tap& tap) {
  const int64_t cg = group_channels, tap_row = w.kernel_w * cg, depth = w.kernel_h * tap_row;
  for (int64_t y = y_begin; y < y_end; ++y) {
    for (int64_t x = 0; x < windows_w; ++x) {
      const column_t* col = columns + ((y - y_begin) * windows_w + x) * depth;
      const int64_t ix0 = x * w.stride_w - w.pad_w;
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
        if (iy < 0 || iy >= plane_h) continue;
        plane_t* pixels = planes + iy * plane_w * channels + channel_begin;
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const int64_t ix = ix0 + j * w.dilation_w;
          if (ix < 0 || ix >= plane_w) continue;
          tap(col + i * tap_row + j * cg, pixels + ix * channels);
        }
      }
    }
  }
}

// The adjoint of im2col_nhwc: adds each column row's taps onto their pixels.
template <typename scalar_t>
void col2im_nhwc(const scalar_t* columns, int64_t channels, int64_t channel_begin, int64_t group_channels,
                 int64_t plane_h, int64_t plane_w, int64_t windows_w, const Window& w, int64_t y_begin,
                 int64_t y_end, scalar_t* planes) {
  for_each_col2im_nhwc_tap(columns, channels, channel_begin, group_channels, plane_h, plane_w, windows_w, w, y_begin,
                           y_end, planes, [&](const scalar_t* in, scalar_t* out) {
    for (int64_t c = 0; c < group_channels; ++c) out[c] += in[c];
  });
}

// Whether no two window taps read the same plane pixel along either axis
// (the window's reach within its stride, as a 1x1 or 2x2 window at stride
// 2): then col2im gives every plane pixel at most one value.
inline bool taps_disjoint(const Window& w) {
  return (w.kernel_h - 1) * w.dilation_h < w.stride_h && (w.kernel_w - 1) * w.dilation_w < w.stride_w;
}

// col2im for disjoint taps (taps_disjoint): each column value plus `bias`
// rounded into its pixel of the plane(s), which takes no other value.
template <typename acc, typename scalar_t>
void col2im_disjoint(const acc* columns, int64_t ld_columns, int64_t pixel_stride, int64_t channels, acc bias,
                     int64_t plane_h, int64_t plane_w, int64_t windows_w, const Window& w, int64_t y_begin,
                     int64_t y_end, scalar_t* planes) {
  const int64_t ps = pixel_stride, sw = w.stride_w;
  for_each_col2im_row(columns, ld_columns, ps, channels, plane_h, plane_w, windows_w, w, y_begin, y_end, planes,
                      [&](const acc* in, scalar_t* out, int64_t x_begin, int64_t x_end) {
    for (int64_t x = x_begin; x < x_end; ++x) out[x * sw] = static_cast<scalar_t>(in[x * ps] + bias);
  });
}

// col2im_nhwc for disjoint taps (taps_disjoint): each column value plus its
// channel's bias (null: none) rounded into its pixel, which takes no other
// value, instead of added into a wider sum; `scratch` holds group_channels
// values.
template <typename acc, typename scalar_t>
void col2im_nhwc_disjoint(const acc* columns, const acc* bias, int64_t channels, int64_t channel_begin,
                          int64_t group_channels, int64_t plane_h, int64_t plane_w, int64_t windows_w,
                          const Window& w, int64_t y_begin, int64_t y_end, acc* scratch, scalar_t* planes) {
  for_each_col2im_nhwc_tap(columns, channels, channel_begin, group_channels, plane_h, plane_w, windows_w, w, y_begin,
                           y_end, planes, [&](const acc* in, scalar_t* out) {
    if (bias != nullptr) {
      for (int64_t c = 0; c < group_channels; ++c) scratch[c] = in[c] + bias[channel_begin + c];
      in = scratch;
    }
    convert(in, out, group_channels);
  });
}

}  // namespace cpu
}  // namespace torchconv
