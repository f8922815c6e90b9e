// Direct loops of grouped convolutions whose groups each read one plane
// channel (depthwise and channel-multiplier layers; the plane and windows
// sides: shape.h): the three computations without im2col or GEMM.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "../im2col.h"
#include "../vectors.h"
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
// offset over the whole plane instead of windows_h short rows, and a block
// of results sums all taps in registers (gather_taps, dot_taps):
// MobileNetV2's 7x7 and 4x4 planes have rows of 4 to 7 pixels, on which
// per-row loops run far behind torch's (benchmarks/bench_models.py's
// mobilenet_v2 rows).

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
  // The taps' sums run over whole vectors (of at most kSlack values), past
  // `length` or the plane's last pixel: every buffer they read or write has
  // kSlack values more, zero (zeroed_slack), and the extra results are
  // never read.
  static constexpr int64_t kSlack = 16;
  template <typename acc>
  static int64_t whole_vectors(int64_t n) {
    constexpr int64_t lanes = sizeof(Vector<acc>) / sizeof(acc);
    return (n + lanes - 1) / lanes * lanes;
  }
  template <typename acc>
  static acc* zeroed_slack(acc* buffer, int64_t size) {
    std::fill(buffer + size, buffer + size + kSlack, acc(0));
    return buffer;
  }
  int64_t tap(const Window& w, int64_t i, int64_t j) const {
    return i * w.dilation_h * padded_w + j * w.dilation_w;
  }
  // Every tap's offset, in the weight's (i, j) order.
  std::vector<int64_t> taps(const Window& w) const {
    std::vector<int64_t> offsets;
    for (int64_t i = 0; i < w.kernel_h; ++i)
      for (int64_t j = 0; j < w.kernel_w; ++j) offsets.push_back(tap(w, i, j));
    return offsets;
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
  // The plane inside the padded plane, rounded into plane.
  template <typename scalar_t, typename acc>
  void crop(const acc* padded, const Window& w, int64_t plane_h, int64_t plane_w, scalar_t* plane) const {
    for (int64_t y = 0; y < plane_h; ++y) {
      convert(padded + (y + w.pad_h) * padded_w + w.pad_w, plane + y * plane_w, plane_w);
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

// out[t] = (accumulate ? out[t] : init) + sum over taps k of weights[k] *
// source[t + offsets[k]], for t in [0, n), a block of `vectors` vectors of
// t at a time from t0 on; returns where the whole blocks end. Its sums stay
// in registers while every tap adds into them (one load per multiply-add,
// one store per result, where a multiply-add per tap over the whole plane
// loads and stores every result once per tap).
template <int vectors, typename acc>
int64_t gather_tap_blocks(const acc* source, const int64_t* offsets, const acc* weights, int64_t taps, acc init,
                          bool accumulate, acc* out, int64_t t0, int64_t n) {
  using V = Vector<acc>;
  constexpr int64_t lanes = sizeof(V) / sizeof(acc), block = vectors * lanes;
  int64_t t = t0;
  for (; t + block <= n; t += block) {
    V sums[vectors];
    for (int v = 0; v < vectors; ++v) {
      if (accumulate) {
        std::memcpy(&sums[v], out + t + v * lanes, sizeof(V));
      } else {
        sums[v] = broadcast<V>(init);
      }
    }
    for (int64_t k = 0; k < taps; ++k) {
      const V w = broadcast<V>(weights[k]);
      const acc* x = source + offsets[k] + t;
      for (int v = 0; v < vectors; ++v) {
        V value;
        std::memcpy(&value, x + v * lanes, sizeof(V));
        sums[v] = fused_multiply_add(w, value, sums[v]);
      }
    }
    std::memcpy(out + t, sums, sizeof(sums));
  }
  return t;
}

// gather_tap_blocks over all of [0, n): blocks of four vectors, then of
// one, then one value at a time.
template <typename acc>
void gather_taps(const acc* source, const int64_t* offsets, const acc* weights, int64_t taps, acc init,
                 bool accumulate, acc* out, int64_t n) {
  int64_t t = gather_tap_blocks<4>(source, offsets, weights, taps, init, accumulate, out, 0, n);
  t = gather_tap_blocks<1>(source, offsets, weights, taps, init, accumulate, out, t, n);
  for (; t < n; ++t) {
    acc sum = accumulate ? out[t] : init;
    for (int64_t k = 0; k < taps; ++k) sum += weights[k] * source[t + offsets[k]];
    out[t] = sum;
  }
}

// totals[k] += sum over t in [0, n) of dy[t] * source[t + offsets[k]], for
// `count` taps k: dy loaded once for all of them, a sum per tap in a
// register (of lanes summed apart, added up at the end).
template <int count, typename acc>
void dot_taps(const acc* dy, const acc* source, const int64_t* offsets, int64_t n, acc* totals) {
  using V = Vector<acc>;
  constexpr int64_t lanes = sizeof(V) / sizeof(acc);
  V sums[count];
  for (int k = 0; k < count; ++k) sums[k] = broadcast<V>(acc(0));
  int64_t t = 0;
  for (; t + lanes <= n; t += lanes) {
    V g;
    std::memcpy(&g, dy + t, sizeof(V));
    for (int k = 0; k < count; ++k) {
      V x;
      std::memcpy(&x, source + offsets[k] + t, sizeof(V));
      sums[k] = fused_multiply_add(g, x, sums[k]);
    }
  }
  for (int k = 0; k < count; ++k) {
    acc lane_sums[lanes];
    std::memcpy(lane_sums, &sums[k], sizeof(V));
    acc total = 0;
    for (int64_t l = 0; l < lanes; ++l) total += lane_sums[l];
    for (int64_t u = t; u < n; ++u) total += dy[u] * source[offsets[k] + u];
    totals[k] += total;
  }
}

// dot_taps over any number of taps, eight at a time.
template <typename acc>
void dot_all_taps(const acc* dy, const acc* source, const int64_t* offsets, int64_t taps, int64_t n, acc* totals) {
  using DotTaps = void (*)(const acc*, const acc*, const int64_t*, int64_t, acc*);
  static constexpr std::array<DotTaps, 8> kDots = {&dot_taps<1, acc>, &dot_taps<2, acc>, &dot_taps<3, acc>,
                                                   &dot_taps<4, acc>, &dot_taps<5, acc>, &dot_taps<6, acc>,
                                                   &dot_taps<7, acc>, &dot_taps<8, acc>};
  for (int64_t k = 0; k < taps; k += 8) {
    kDots[std::min<int64_t>(8, taps - k) - 1](dy, source, offsets + k, n, totals + k);
  }
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
  const std::vector<int64_t> tap_offsets = wide_windows.taps(w);
  at::parallel_for(0, s.batch * s.windows_channels, 1, [&](int64_t begin, int64_t end) {
    const int64_t slack = wide ? WideWindows::kSlack : 0;
    auto plane_buffer =
        scratch<acc>(wide ? wide_windows.padded_size() + slack : widening_size<scalar_t>(s.plane_size()));
    auto out_buffer = scratch<acc>(wide ? wide_windows.wide_size() + slack : widening_size<scalar_t>(s.windows_size()));
    if (wide) WideWindows::zeroed_slack(plane_buffer.get(), wide_windows.padded_size());
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
        gather_taps(plane_buffer.get(), tap_offsets.data(), weight + o * taps, taps, b, false, out,
                    WideWindows::whole_vectors<acc>(wide_windows.length));
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
  // The wide path gathers: padded pixel u of the plane sums, over the taps,
  // wide window u - tap, read from wide windows with `margin` zeros before
  // them and zeros after them up to the padded plane's size. Only the
  // pixels from the plane's first to its last are computed.
  std::vector<int64_t> back_offsets = wide_windows.taps(w);
  for (int64_t& offset : back_offsets) offset = -offset;
  const int64_t margin = wide_windows.tap(w, w.kernel_h - 1, w.kernel_w - 1);
  const int64_t first = w.pad_h * wide_windows.padded_w + w.pad_w;
  const int64_t last = (w.pad_h + s.plane_h - 1) * wide_windows.padded_w + w.pad_w + s.plane_w;
  // One output plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.plane_channels, 1, [&](int64_t begin, int64_t end) {
    const int64_t slack = wide ? WideWindows::kSlack : 0;
    auto plane_buffer =
        scratch<acc>(wide ? wide_windows.padded_size() + slack : widening_size<scalar_t>(s.plane_size()));
    auto windows_buffer =
        scratch<acc>(wide ? margin + wide_windows.padded_size() + slack : widening_size<scalar_t>(s.windows_size()));
    if (wide) std::fill_n(windows_buffer.get(), margin + wide_windows.padded_size() + slack, acc(0));
    for (int64_t out_plane = begin; out_plane < end; ++out_plane) {
      const int64_t n = out_plane / s.plane_channels, g = out_plane % s.plane_channels;
      scalar_t* result = output + out_plane * s.plane_size();
      const acc b = bias != nullptr ? bias[g] : acc(0);
      if (wide) {
        acc* padded = plane_buffer.get();
        const acc* windows = windows_buffer.get() + margin;
        for (int64_t c = g * s.windows_group(); c < (g + 1) * s.windows_group(); ++c) {
          wide_windows.widen(input + (n * s.windows_channels + c) * s.windows_size(), windows_buffer.get() + margin);
          gather_taps(windows + first, back_offsets.data(), weight + c * taps, taps, b, c > g * s.windows_group(),
                      padded + first, WideWindows::whole_vectors<acc>(last - first));
        }
        wide_windows.crop(padded, w, s.plane_h, s.plane_w, result);
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
  const std::vector<int64_t> tap_offsets = wide_windows.taps(w);
  // One output channel per task, the batch summed inside it in order: for
  // each tap, sample after sample (and row after row).
  at::parallel_for(0, s.windows_channels, 1, [&](int64_t begin, int64_t end) {
    const int64_t slack = wide ? WideWindows::kSlack : 0;
    auto plane_buffer =
        scratch<acc>(wide ? wide_windows.padded_size() + slack : widening_size<scalar_t>(s.plane_size()));
    auto dy_buffer = scratch<acc>(wide ? wide_windows.wide_size() + slack : widening_size<scalar_t>(s.windows_size()));
    if (wide) {
      WideWindows::zeroed_slack(plane_buffer.get(), wide_windows.padded_size());
      WideWindows::zeroed_slack(dy_buffer.get(), wide_windows.wide_size());
    }
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
          dot_all_taps(dy_buffer.get(), plane_buffer.get(), tap_offsets.data(), taps,
                       WideWindows::whole_vectors<acc>(wide_windows.length), totals.data());
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
