// Direct loops of grouped convolutions whose groups each read one image
// channel (depthwise and channel-multiplier layers): the three computations
// without im2col or GEMM.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "../im2col.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------- direct loops, one image channel per group
//
// When there are several groups and each reads a single image channel
// (depthwise convolutions), every group's GEMM is tiny (a reduction of only
// kH * kW, a handful of output channels) and im2col copies the image kH * kW
// times for nothing. These loops run the same sums in place: for every
// kernel tap, one strided multiply-add of an image row into an output row
// (unit stride vectorises). A single group on a one-channel image (an MNIST
// first layer) stays on the GEMM path: there one GEMM covers all output
// channels, and measured it ran 4-5x faster than these loops. Half dtypes
// widen each plane they read into the thread's scratch first, and
// accumulate each plane they write in float32 scratch.

inline bool uses_direct_loops(const ConvShape& s) { return s.groups > 1 && s.image_group() == 1; }

// ------------------------------------------------ unit stride: wide grids
//
// At stride 1, tap (i, j) reads the whole image plane shifted by
// (i * dilation_h - pad_h, j * dilation_w - pad_w). With the plane copied
// into a zero-padded plane of width Wp = image_w + 2 * pad_w, grid pixel
// (y, x) of tap (i, j) is padded pixel y * Wp + x + (i * dilation_h * Wp +
// j * dilation_w). A grid stored with a row stride of Wp (a "wide" grid,
// whose last Wp - grid_w columns are dropped when written out and zero when
// read) then makes every tap one unit-stride multiply-add, or one dot
// product, over the whole plane instead of grid_h short rows: MobileNetV2's
// 7x7 and 4x4 planes have rows of 4 to 7 pixels, where the per-row loops ran
// at 2-2.4x torch's time.

inline bool unit_stride(const Window& w) { return w.stride_h == 1 && w.stride_w == 1; }

struct WideGrid {
  int64_t padded_h, padded_w;  // the zero-padded image plane
  int64_t grid_h, grid_w;
  int64_t length;  // elements of a wide grid that every tap covers: up to the last grid pixel

  explicit WideGrid(const ConvShape& s)
      : padded_h(s.image_h + 2 * s.window.pad_h),
        padded_w(s.image_w + 2 * s.window.pad_w),
        grid_h(s.grid_h),
        grid_w(s.grid_w),
        length((s.grid_h - 1) * padded_w + s.grid_w) {}

  int64_t padded_size() const { return padded_h * padded_w; }
  int64_t wide_size() const { return grid_h * padded_w; }
  int64_t tap(const Window& w, int64_t i, int64_t j) const {
    return i * w.dilation_h * padded_w + j * w.dilation_w;
  }
  // Every tap of every grid pixel lands inside the padded plane (true of
  // every stride-1 shape the checks pass; kept as the condition of use).
  bool fits(const Window& w) const {
    return grid_h + (w.kernel_h - 1) * w.dilation_h <= padded_h && grid_w + (w.kernel_w - 1) * w.dilation_w <= padded_w;
  }

  // An image plane into the padded plane, widened.
  template <typename scalar_t, typename acc>
  void pad(const scalar_t* plane, const Window& w, int64_t image_h, int64_t image_w, acc* padded) const {
    std::fill(padded, padded + padded_size(), acc(0));
    for (int64_t y = 0; y < image_h; ++y) convert(plane + y * image_w, padded + (y + w.pad_h) * padded_w + w.pad_w, image_w);
  }
  // The image plane inside the padded plane, plus a constant, rounded into plane.
  template <typename scalar_t, typename acc>
  void crop(const acc* padded, const Window& w, int64_t image_h, int64_t image_w, acc add, scalar_t* plane) const {
    for (int64_t y = 0; y < image_h; ++y) {
      const acc* row = padded + (y + w.pad_h) * padded_w + w.pad_w;
      scalar_t* out = plane + y * image_w;
      for (int64_t x = 0; x < image_w; ++x) out[x] = static_cast<scalar_t>(row[x] + add);
    }
  }
  // A grid plane into a wide grid, widened, its extra columns zero.
  template <typename scalar_t, typename acc>
  void widen(const scalar_t* plane, acc* wide) const {
    for (int64_t y = 0; y < grid_h; ++y) {
      convert(plane + y * grid_w, wide + y * padded_w, grid_w);
      std::fill(wide + y * padded_w + grid_w, wide + (y + 1) * padded_w, acc(0));
    }
  }
  // A wide grid's columns that belong to the grid, rounded into plane.
  template <typename scalar_t, typename acc>
  void narrow(const acc* wide, scalar_t* plane) const {
    for (int64_t y = 0; y < grid_h; ++y) convert(wide + y * padded_w, plane + y * grid_w, grid_w);
  }
};

// y[t] += a * x[t] for t in [0, n).
template <typename T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t t = 0; t < n; ++t) y[t] += a * x[t];
}

// sum over t in [0, n) of a[t] * b[t], in kLanes running sums: a single
// running sum is a chain of dependent additions the compiler may not
// reorder (that would change the rounding), which runs one element per
// addition's latency; independent lanes vectorise. 64 lanes are four
// 16-float vectors, so four chains of multiply-adds run at once, enough to
// cover their latency (one vector of lanes would wait on it at every step).
template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int64_t kLanes = 64;
  T lanes[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= n; t += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) lanes[k] += a[t + k] * b[t + k];
  }
  T sum = 0;
  for (; t < n; ++t) sum += a[t] * b[t];
  for (int64_t k = 0; k < kLanes; ++k) sum += lanes[k];
  return sum;
}

// ----------------------------------------------- any stride: rows of taps

// Calls fn(image_row, grid_row, x_begin, x_end) for every tap (i, j) and grid
// row y that meets the image: grid x in [x_begin, x_end) pairs with image
// pixel x * stride_w + offset of image_row.
template <typename Fn>
void for_each_tap_row(const ConvShape& s, int64_t i, int64_t j, const Fn& fn) {
  const Window& w = s.window;
  const int64_t offset_w = j * w.dilation_w - w.pad_w;
  int64_t x_begin, x_end;
  inside_range(s.grid_w, w.stride_w, offset_w, s.image_w, &x_begin, &x_end);
  for (int64_t y = 0; y < s.grid_h; ++y) {
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    if (iy < 0 || iy >= s.image_h) continue;
    fn(iy * s.image_w + offset_w, y * s.grid_w, x_begin, x_end);
  }
}

template <typename scalar_t>
void conv2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  at::parallel_for(0, s.batch * s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto out_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    const acc* image = nullptr;
    int64_t image_plane = -1;  // the image plane `image` holds: consecutive outputs often share it
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.grid_channels, o = plane % s.grid_channels, g = o / s.grid_group();
      const int64_t wanted = n * s.image_channels + g;
      scalar_t* result = output + plane * s.grid_size();
      const acc b = bias != nullptr ? bias[o] : acc(0);
      if (wide) {
        if (wanted != image_plane) {
          wide_grid.pad(input + wanted * s.image_size(), w, s.image_h, s.image_w, image_buffer.get());
          image_plane = wanted;
        }
        acc* out = out_buffer.get();
        std::fill(out, out + wide_grid.length, b);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            axpy(weight[o * taps + i * w.kernel_w + j], image_buffer.get() + wide_grid.tap(w, i, j), out,
                 wide_grid.length);
          }
        }
        wide_grid.narrow(out, result);
        continue;
      }
      if (wanted != image_plane) {
        image = widened(input + wanted * s.image_size(), s.image_size(), image_buffer.get());
        image_plane = wanted;
      }
      acc* out = accumulator(result, out_buffer.get());
      std::fill(out, out + s.grid_size(), b);
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const acc wv = weight[o * taps + i * w.kernel_w + j];
          for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
            const acc* in = image + image_at;
            acc* row = out + grid_at;
            for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x * sw];
          });
        }
      }
      store(out, s.grid_size(), result);
    }
  });
}

template <typename scalar_t>
void conv_transpose2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  // One output (image) plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.image_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto grid_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.image_channels, g = plane % s.image_channels;
      scalar_t* result = output + plane * s.image_size();
      const acc b = bias != nullptr ? bias[g] : acc(0);
      if (wide) {
        acc* padded = image_buffer.get();
        std::fill(padded, padded + wide_grid.padded_size(), acc(0));
        for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
          wide_grid.widen(input + (n * s.grid_channels + c) * s.grid_size(), grid_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              axpy(weight[c * taps + i * w.kernel_w + j], grid_buffer.get(), padded + wide_grid.tap(w, i, j),
                   wide_grid.length);
            }
          }
        }
        wide_grid.crop(padded, w, s.image_h, s.image_w, b, result);
        continue;
      }
      acc* image = accumulator(result, image_buffer.get());
      std::fill(image, image + s.image_size(), b);
      for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
        const acc* grid = widened(input + (n * s.grid_channels + c) * s.grid_size(), s.grid_size(), grid_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const acc wv = weight[c * taps + i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              acc* out = image + image_at;
              const acc* row = grid + grid_at;
              for (int64_t x = xb; x < xe; ++x) out[x * sw] += wv * row[x];
            });
          }
        }
      }
      store(image, s.image_size(), result);
    }
  });
}

template <typename scalar_t>
void conv2d_weight_direct(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  // One output channel per task, the batch summed inside it in order: for
  // each tap, sample after sample (and row after row).
  at::parallel_for(0, s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto dy_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    std::vector<acc> totals(taps);
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g = o / s.grid_group();
      std::fill(totals.begin(), totals.end(), acc(0));
      for (int64_t n = 0; n < s.batch; ++n) {
        const scalar_t* image_plane = input + (n * s.image_channels + g) * s.image_size();
        const scalar_t* dy_plane = grad_output + (n * s.grid_channels + o) * s.grid_size();
        if (wide) {
          wide_grid.pad(image_plane, w, s.image_h, s.image_w, image_buffer.get());
          wide_grid.widen(dy_plane, dy_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              totals[i * w.kernel_w + j] +=
                  dot(dy_buffer.get(), image_buffer.get() + wide_grid.tap(w, i, j), wide_grid.length);
            }
          }
          continue;
        }
        const acc* image = widened(image_plane, s.image_size(), image_buffer.get());
        const acc* dy = widened(dy_plane, s.grid_size(), dy_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            acc& total = totals[i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              const acc* in = image + image_at;
              const acc* row = dy + grid_at;
              acc sum = 0;
              for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x * sw];
              total += sum;
            });
          }
        }
      }
      convert(totals.data(), grad_weight + o * taps, taps);
    }
  });
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
