// Direct loops of grouped convolutions whose groups each read one plane
// channel (depthwise and channel-multiplier layers; the plane and windows
// sides: shape.h): the three computations without im2col or GEMM.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "../im2col.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------- direct loops, one plane channel per group
//
// When there are several groups and each reads a single plane channel
// (depthwise convolutions), every group's GEMM is tiny (a reduction of only
// kH * kW, a handful of output channels) and im2col copies the planes
// kH * kW times for nothing. These loops run the same sums in place: for
// every kernel tap, one strided multiply-add of a row of one side into a
// row of the other (unit stride vectorises). A single group on a
// one-channel plane (an MNIST first layer) stays on the GEMM path: there one
// GEMM covers all output channels, which runs well ahead of these loops
// (benchmarks/bench_ops.py's mnist conv 64x1x28x28 case). Half dtypes widen
// each plane they read into the thread's scratch first, and accumulate each
// plane they write in float32 scratch.

inline bool uses_direct_loops(const ConvShape& s) { return s.groups > 1 && s.plane_group() == 1; }

// --------------------------------------------- unit stride: wide windows
//
// At stride 1, tap (i, j) reads the whole plane shifted by
// (i * dilation_h - pad_h, j * dilation_w - pad_w). With the plane copied
// into a zero-padded plane of width Wp = plane_w + 2 * pad_w, window
// position (y, x) of tap (i, j) is padded pixel y * Wp + x + (i * dilation_h
// * Wp + j * dilation_w). A windows plane stored with a row stride of Wp
// ("wide" windows, whose last Wp - windows_w columns are dropped when
// written out and zero when read) then makes every tap one unit-stride
// multiply-add, or one dot product, over the whole plane instead of
// windows_h short rows: MobileNetV2's 7x7 and 4x4 planes have rows of 4 to
// 7 pixels, on which per-row loops run far behind torch's
// (benchmarks/bench_models.py's mobilenet_v2 rows).

inline bool unit_stride(const Window& w) { return w.stride_h == 1 && w.stride_w == 1; }

struct WideWindows {
  int64_t padded_h, padded_w;  // the zero-padded plane
  int64_t windows_h, windows_w;
  int64_t length;  // elements of wide windows that every tap covers: up to the last window position

  explicit WideWindows(const ConvShape& s)
      : padded_h(s.plane_h + 2 * s.window.pad_h),
        padded_w(s.plane_w + 2 * s.window.pad_w),
        windows_h(s.windows_h),
        windows_w(s.windows_w),
        length((s.windows_h - 1) * padded_w + s.windows_w) {}

  int64_t padded_size() const { return padded_h * padded_w; }
  int64_t wide_size() const { return windows_h * padded_w; }
  int64_t tap(const Window& w, int64_t i, int64_t j) const {
    return i * w.dilation_h * padded_w + j * w.dilation_w;
  }
  // Every tap of every window position lands inside the padded plane (true
  // of every stride-1 shape the checks pass; kept as the condition of use).
  bool fits(const Window& w) const {
    return windows_h + (w.kernel_h - 1) * w.dilation_h <= padded_h &&
           windows_w + (w.kernel_w - 1) * w.dilation_w <= padded_w;
  }

  // A plane into the padded plane, widened.
  template <typename scalar_t, typename acc>
  void pad(const scalar_t* plane, const Window& w, int64_t plane_h, int64_t plane_w, acc* padded) const {
    std::fill(padded, padded + padded_size(), acc(0));
    for (int64_t y = 0; y < plane_h; ++y) {
      convert(plane + y * plane_w, padded + (y + w.pad_h) * padded_w + w.pad_w, plane_w);
    }
  }
  // The plane inside the padded plane, plus a constant, rounded into plane.
  template <typename scalar_t, typename acc>
  void crop(const acc* padded, const Window& w, int64_t plane_h, int64_t plane_w, acc add, scalar_t* plane) const {
    for (int64_t y = 0; y < plane_h; ++y) {
      const acc* row = padded + (y + w.pad_h) * padded_w + w.pad_w;
      scalar_t* out = plane + y * plane_w;
      for (int64_t x = 0; x < plane_w; ++x) out[x] = static_cast<scalar_t>(row[x] + add);
    }
  }
  // A windows plane into wide windows, widened, their extra columns zero.
  template <typename scalar_t, typename acc>
  void widen(const scalar_t* plane, acc* wide) const {
    for (int64_t y = 0; y < windows_h; ++y) {
      convert(plane + y * windows_w, wide + y * padded_w, windows_w);
      std::fill(wide + y * padded_w + windows_w, wide + (y + 1) * padded_w, acc(0));
    }
  }
  // The columns of wide windows that belong to the windows, rounded into plane.
  template <typename scalar_t, typename acc>
  void narrow(const acc* wide, scalar_t* plane) const {
    for (int64_t y = 0; y < windows_h; ++y) convert(wide + y * padded_w, plane + y * windows_w, windows_w);
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

// Calls fn(plane_row, windows_row, x_begin, x_end) for every tap (i, j) and
// windows row y whose windows' tap row lies on the plane: window position x
// in [x_begin, x_end) pairs with plane pixel x * stride_w + offset of
// plane_row.
template <typename Fn>
void for_each_tap_row(const ConvShape& s, int64_t i, int64_t j, const Fn& fn) {
  const Window& w = s.window;
  const int64_t offset_w = j * w.dilation_w - w.pad_w;
  int64_t x_begin, x_end;
  inside_range(s.windows_w, w.stride_w, offset_w, s.plane_w, &x_begin, &x_end);
  for (int64_t y = 0; y < s.windows_h; ++y) {
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    if (iy < 0 || iy >= s.plane_h) continue;
    fn(iy * s.plane_w + offset_w, y * s.windows_w, x_begin, x_end);
  }
}

template <typename scalar_t>
void conv2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideWindows wide_windows(s);
  const bool wide = unit_stride(w) && wide_windows.fits(w);
  at::parallel_for(0, s.batch * s.windows_channels, 1, [&](int64_t begin, int64_t end) {
    auto plane_buffer = scratch<acc>(wide ? wide_windows.padded_size() : widening_size<scalar_t>(s.plane_size()));
    auto out_buffer = scratch<acc>(wide ? wide_windows.wide_size() : widening_size<scalar_t>(s.windows_size()));
    const acc* source = nullptr;
    int64_t held = -1;  // the input plane `source` holds: consecutive outputs often share it
    for (int64_t out_plane = begin; out_plane < end; ++out_plane) {
      const int64_t n = out_plane / s.windows_channels, o = out_plane % s.windows_channels, g = o / s.windows_group();
      const int64_t wanted = n * s.plane_channels + g;
      scalar_t* result = output + out_plane * s.windows_size();
      const acc b = bias != nullptr ? bias[o] : acc(0);
      if (wide) {
        if (wanted != held) {
          wide_windows.pad(input + wanted * s.plane_size(), w, s.plane_h, s.plane_w, plane_buffer.get());
          held = wanted;
        }
        acc* out = out_buffer.get();
        std::fill(out, out + wide_windows.length, b);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            axpy(weight[o * taps + i * w.kernel_w + j], plane_buffer.get() + wide_windows.tap(w, i, j), out,
                 wide_windows.length);
          }
        }
        wide_windows.narrow(out, result);
        continue;
      }
      if (wanted != held) {
        source = widened(input + wanted * s.plane_size(), s.plane_size(), plane_buffer.get());
        held = wanted;
      }
      acc* out = accumulator(result, out_buffer.get());
      std::fill(out, out + s.windows_size(), b);
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const acc wv = weight[o * taps + i * w.kernel_w + j];
          for_each_tap_row(s, i, j, [&](int64_t plane_at, int64_t windows_at, int64_t xb, int64_t xe) {
            const acc* in = source + plane_at;
            acc* row = out + windows_at;
            for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x * sw];
          });
        }
      }
      store(out, s.windows_size(), result);
    }
  });
}

template <typename scalar_t>
void conv_transpose2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideWindows wide_windows(s);
  const bool wide = unit_stride(w) && wide_windows.fits(w);
  // One output plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.plane_channels, 1, [&](int64_t begin, int64_t end) {
    auto plane_buffer = scratch<acc>(wide ? wide_windows.padded_size() : widening_size<scalar_t>(s.plane_size()));
    auto windows_buffer = scratch<acc>(wide ? wide_windows.wide_size() : widening_size<scalar_t>(s.windows_size()));
    for (int64_t out_plane = begin; out_plane < end; ++out_plane) {
      const int64_t n = out_plane / s.plane_channels, g = out_plane % s.plane_channels;
      scalar_t* result = output + out_plane * s.plane_size();
      const acc b = bias != nullptr ? bias[g] : acc(0);
      if (wide) {
        acc* padded = plane_buffer.get();
        std::fill(padded, padded + wide_windows.padded_size(), acc(0));
        for (int64_t c = g * s.windows_group(); c < (g + 1) * s.windows_group(); ++c) {
          wide_windows.widen(input + (n * s.windows_channels + c) * s.windows_size(), windows_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              axpy(weight[c * taps + i * w.kernel_w + j], windows_buffer.get(), padded + wide_windows.tap(w, i, j),
                   wide_windows.length);
            }
          }
        }
        wide_windows.crop(padded, w, s.plane_h, s.plane_w, b, result);
        continue;
      }
      acc* sums = accumulator(result, plane_buffer.get());
      std::fill(sums, sums + s.plane_size(), b);
      for (int64_t c = g * s.windows_group(); c < (g + 1) * s.windows_group(); ++c) {
        const acc* windows =
            widened(input + (n * s.windows_channels + c) * s.windows_size(), s.windows_size(), windows_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const acc wv = weight[c * taps + i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t plane_at, int64_t windows_at, int64_t xb, int64_t xe) {
              acc* out = sums + plane_at;
              const acc* row = windows + windows_at;
              for (int64_t x = xb; x < xe; ++x) out[x * sw] += wv * row[x];
            });
          }
        }
      }
      store(sums, s.plane_size(), result);
    }
  });
}

template <typename scalar_t>
void conv2d_weight_direct(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideWindows wide_windows(s);
  const bool wide = unit_stride(w) && wide_windows.fits(w);
  // One output channel per task, the batch summed inside it in order: for
  // each tap, sample after sample (and row after row).
  at::parallel_for(0, s.windows_channels, 1, [&](int64_t begin, int64_t end) {
    auto plane_buffer = scratch<acc>(wide ? wide_windows.padded_size() : widening_size<scalar_t>(s.plane_size()));
    auto dy_buffer = scratch<acc>(wide ? wide_windows.wide_size() : widening_size<scalar_t>(s.windows_size()));
    std::vector<acc> totals(taps);
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g = o / s.windows_group();
      std::fill(totals.begin(), totals.end(), acc(0));
      for (int64_t n = 0; n < s.batch; ++n) {
        const scalar_t* x_plane = input + (n * s.plane_channels + g) * s.plane_size();
        const scalar_t* dy_plane = grad_output + (n * s.windows_channels + o) * s.windows_size();
        if (wide) {
          wide_windows.pad(x_plane, w, s.plane_h, s.plane_w, plane_buffer.get());
          wide_windows.widen(dy_plane, dy_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              totals[i * w.kernel_w + j] +=
                  dot(dy_buffer.get(), plane_buffer.get() + wide_windows.tap(w, i, j), wide_windows.length);
            }
          }
          continue;
        }
        const acc* source = widened(x_plane, s.plane_size(), plane_buffer.get());
        const acc* dy = widened(dy_plane, s.windows_size(), dy_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            acc& total = totals[i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t plane_at, int64_t windows_at, int64_t xb, int64_t xe) {
              const acc* in = source + plane_at;
              const acc* row = dy + windows_at;
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
