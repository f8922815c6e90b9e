// Depthwise convolutions on channels_last tensors: the three computations
// vectorised over channels, without layout copies.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../vectors.h"
#include "direct.h"
#include "operands.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------------- depthwise, channels_last
//
// A depthwise convolution (every group one plane channel and one windows
// channel, shape.h) on channels_last tensors: every pixel's channels are
// contiguous on both sides, and so are they in a tap-major weight (kH * kW
// rows of C), so each tap of each pixel is one multiply-add over a run of C
// channels, which vectorises, with no layout copies. conv2d and the
// stride-1 input gradient gather (depthwise_nhwc_gather): tiles of a
// vector of channels x several pixels of a row hold their sums in
// registers across the taps; the input gradient at other strides gathers,
// for each plane pixel, the window positions whose windows hold it (no two
// tasks write one pixel); the weight gradient sums a row of taps in
// registers over a row's pixels, into each thread's tap-major partial
// sums, added in thread order.

inline bool is_depthwise(const ConvShape& s) { return uses_direct_loops(s) && s.windows_group() == 1; }

// A depthwise weight (C, 1, kH, kW) as (kH * kW, C), in the compute type.
inline at::Tensor tap_major_weight(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).t().to(at::toOpMathType(weight.scalar_type())).contiguous();
}

// sum[c] += weight[c] * pixel[c] for c in [0, channels).
template <typename scalar_t, typename acc>
inline void add_tap(const acc* __restrict weight, const scalar_t* __restrict pixel, acc* __restrict sum,
                    int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) sum[c] += weight[c] * static_cast<acc>(pixel[c]);
}

// Channels per block of a pixel's sums kept in registers across its taps
// (four 16-float vectors): each tap then costs two loads and a multiply-add
// per vector instead of also a load and a store of the sums.
constexpr int64_t kChannelBlock = 64;

// sums[c] += weight_t[c] * pixel_t[c] summed over the taps t that
// for_each_tap(fn) passes as fn(weight_t, pixel_t), a block of channels at
// a time (kChannelBlock), the taps of each channel added in the same order
// as add_tap would.
template <typename scalar_t, typename acc, typename ForEachTap>
inline void add_taps(int64_t channels, acc* __restrict sums, const ForEachTap& for_each_tap) {
  int64_t c0 = 0;
  for (; c0 + kChannelBlock <= channels; c0 += kChannelBlock) {
    acc block[kChannelBlock];
    for (int64_t c = 0; c < kChannelBlock; ++c) block[c] = sums[c0 + c];
    for_each_tap([&](const acc* __restrict weight, const scalar_t* __restrict pixel) {
      for (int64_t c = 0; c < kChannelBlock; ++c) block[c] += weight[c0 + c] * static_cast<acc>(pixel[c0 + c]);
    });
    for (int64_t c = 0; c < kChannelBlock; ++c) sums[c0 + c] = block[c];
  }
  if (c0 < channels) {
    for_each_tap([&](const acc* weight, const scalar_t* pixel) {
      add_tap(weight + c0, pixel + c0, sums + c0, channels - c0);
    });
  }
}

// For every pixel (n, y, x) of a channels_last output of batch x height x
// width pixels: its channels' sums, started at the bias (or zero), added to
// by fn(n, y, x, sums), then rounded into the output. Rows of pixels are the
// threads' tasks: no two write one pixel.
template <typename scalar_t, typename Fn>
void for_each_output_pixel(int64_t batch, int64_t height, int64_t width, int64_t channels,
                           const acc_t<scalar_t>* bias, scalar_t* output, const Fn& fn) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(channels);
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t x = 0; x < width; ++x) {
        if (bias != nullptr) {
          std::copy(bias, bias + channels, sums.data());
        } else {
          std::fill(sums.begin(), sums.end(), acc(0));
        }
        fn(row / height, row % height, x, sums.data());
        convert(sums.data(), output + (row * width + x) * channels, channels);
      }
    }
  });
}

// The taps' sources along one axis: result position y reads source
// position y * step + base[i] through tap i (conv2d: step = stride,
// base[i] = i * dilation - pad; a stride-1 conv_transpose2d, which reads
// the window positions holding plane position y: step = 1,
// base[i] = pad - i * dilation), valid within [0, size).
struct TapAxis {
  int64_t step, size;
  std::vector<int64_t> base;
  bool rising;  // base grows with i
  TapAxis(int64_t kernel, int64_t step, int64_t size, int64_t pad, int64_t dilation, bool transposed)
      : step(step), size(size), base(kernel), rising(!transposed) {
    for (int64_t i = 0; i < kernel; ++i) base[i] = transposed ? pad - i * dilation : i * dilation - pad;
  }
  bool reads(int64_t y, int64_t i) const {
    const int64_t at = y * step + base[i];
    return at >= 0 && at < size;
  }
  // The result positions [first, last) whose every tap reads a source
  // position, within [0, positions).
  std::pair<int64_t, int64_t> inner(int64_t positions) const {
    const auto [low, high] = std::minmax_element(base.begin(), base.end());
    const int64_t first = std::min(positions, *low >= 0 ? 0 : ceil_div(-*low, step));
    const int64_t last = size - 1 - *high < 0 ? 0 : (size - 1 - *high) / step + 1;
    return {first, std::max(first, std::min(positions, last))};
  }
};

// A tile of the gather below: kDepthwisePixels result pixels x
// kDepthwiseLanes channels (one float32 vector), its sums in registers
// while every tap adds into them, each tap's weights loaded once for all
// its pixels.
constexpr int64_t kDepthwiseLanes = sizeof(Vector<float>) / sizeof(float);
constexpr int kDepthwisePixels = kVectorBytes == 64 ? 8 : 4;  // AVX2 has 16 registers

// A float32 vector's lanes as bfloat16 bits and as float32 bits.
typedef uint16_t BFloat16Bits __attribute__((vector_size(kVectorBytes / 2)));
typedef uint32_t FloatBits __attribute__((vector_size(kVectorBytes)));

// A vector's lanes of x, widened to the accumulation type.
template <typename V, typename scalar_t>
inline V load_widened(const scalar_t* x) {
  V v;
  if constexpr (sizeof(V) / sizeof(v[0]) * sizeof(scalar_t) == sizeof(V)) {
    std::memcpy(&v, x, sizeof(V));
  } else if constexpr (std::is_same<scalar_t, at::BFloat16>::value && sizeof(V) == sizeof(FloatBits)) {
    // A bfloat16 is the top half of its float32.
#if defined(__AVX512F__)
    const __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)x)), 16);
#elif defined(__AVX2__)
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)x)), 16);
#else
    BFloat16Bits h;
    std::memcpy(&h, x, sizeof(h));
    const FloatBits w = __builtin_convertvector(h, FloatBits) << 16;
#endif
    std::memcpy(&v, &w, sizeof(V));
  } else {
    for (size_t l = 0; l < sizeof(V) / sizeof(v[0]); ++l) v[l] = static_cast<acc_t<scalar_t>>(x[l]);
  }
  return v;
}

// A tile's sums started at the bias (null: zero), a vector of channels
// per entry of each pixel.
template <typename V, int pixels, int vectors, typename acc>
inline void start_sums(V (&sums)[pixels][vectors], const acc* bias) {
  constexpr int lanes = sizeof(V) / sizeof(acc);
  for (int v = 0; v < vectors; ++v) {
    V b = broadcast<V>(acc(0));
    if (bias != nullptr) std::memcpy(&b, bias + v * lanes, sizeof(V));
    for (int m = 0; m < pixels; ++m) sums[m][v] = b;
  }
}

// A tile's sums rounded into its pixels, `channels` apart.
template <typename V, int pixels, int vectors, typename scalar_t>
inline void store_sums(const V (&sums)[pixels][vectors], int64_t channels, scalar_t* out) {
  using acc = acc_t<scalar_t>;
  for (int m = 0; m < pixels; ++m) {
    acc values[kDepthwiseLanes];
    std::memcpy(values, sums[m], sizeof(values));
    convert(values, out + m * channels, kDepthwiseLanes);
  }
}

// `pixels` result pixels (pixel_step source values apart) of
// kDepthwiseLanes channels: bias (or zero) plus sum over taps k of
// weight[tap[k] * channels + c] * source[offset[k] + m * pixel_step + c],
// rounded into out[m * channels + c].
template <int pixels, typename scalar_t, typename acc>
inline void depthwise_tile(const scalar_t* source, int64_t pixel_step, const int64_t* offset, const int64_t* tap,
                           int64_t taps, const acc* weight, int64_t channels, const acc* bias, scalar_t* out) {
  using V = Vector<acc>;
  constexpr int lanes = sizeof(V) / sizeof(acc), vectors = kDepthwiseLanes / lanes;
  V sums[pixels][vectors];
  start_sums(sums, bias);
  for (int64_t k = 0; k < taps; ++k) {
    const acc* w = weight + tap[k] * channels;
    const scalar_t* x = source + offset[k];
    for (int v = 0; v < vectors; ++v) {
      V wv;
      std::memcpy(&wv, w + v * lanes, sizeof(V));
      for (int m = 0; m < pixels; ++m) {
        sums[m][v] = fused_multiply_add(wv, load_widened<V>(x + m * pixel_step + v * lanes), sums[m][v]);
      }
    }
  }
  store_sums(sums, channels, out);
}

// depthwise_tile's sums for a stride-1, dilation-1 window of kw taps per
// row whose every tap reads the source (the inner pixels of a row): taps k
// come a row at a time, kw taps each, reading adjacent source pixels
// (offset[k + j] = offset[k] + j * channels). A row's kw taps of `pixels`
// adjacent result pixels read pixels + kw - 1 source pixels, each loaded
// once.
template <int pixels, int kw, typename scalar_t, typename acc>
inline void depthwise_row_tile(const scalar_t* source, const int64_t* offset, const int64_t* tap, int64_t taps,
                               const acc* weight, int64_t channels, const acc* bias, scalar_t* out) {
  using V = Vector<acc>;
  constexpr int lanes = sizeof(V) / sizeof(acc), vectors = kDepthwiseLanes / lanes;
  V sums[pixels][vectors];
  start_sums(sums, bias);
  for (int64_t k = 0; k < taps; k += kw) {
    const scalar_t* x = source + offset[k];
    for (int v = 0; v < vectors; ++v) {
      V row[pixels + kw - 1];
      for (int q = 0; q < pixels + kw - 1; ++q) row[q] = load_widened<V>(x + q * channels + v * lanes);
      for (int j = 0; j < kw; ++j) {
        V wv;
        std::memcpy(&wv, weight + tap[k + j] * channels + v * lanes, sizeof(V));
        for (int m = 0; m < pixels; ++m) sums[m][v] = fused_multiply_add(wv, row[m + j], sums[m][v]);
      }
    }
  }
  store_sums(sums, channels, out);
}

// The same for one pixel's last `width` (< kDepthwiseLanes) channels.
template <typename scalar_t, typename acc>
inline void depthwise_tail(const scalar_t* source, const int64_t* offset, const int64_t* tap, int64_t taps,
                           const acc* weight, int64_t channels, const acc* bias, int64_t width, scalar_t* out) {
  acc sums[kDepthwiseLanes];
  for (int64_t c = 0; c < width; ++c) sums[c] = bias != nullptr ? bias[c] : acc(0);
  for (int64_t k = 0; k < taps; ++k) add_tap(weight + tap[k] * channels, source + offset[k], sums, width);
  convert(sums, out, width);
}

// conv2d, or a stride-1 conv_transpose2d (`transposed`), of one-channel
// groups on channels_last tensors: every result pixel's channels summed over
// its taps by depthwise_tile, several pixels at a time where all of a row's
// taps read the source, one at a time at the row's ends. source is
// (batch, source_h, source_w, channels), weight tap-major (taps, channels).
template <typename scalar_t>
void depthwise_nhwc_gather(const TapAxis& rows, const TapAxis& cols, int64_t batch, int64_t out_h, int64_t out_w,
                           int64_t channels, const scalar_t* source, const acc_t<scalar_t>* weight,
                           const acc_t<scalar_t>* bias, scalar_t* output) {
  const int64_t kh = rows.base.size(), kw = cols.base.size();
  const int64_t full = channels / kDepthwiseLanes * kDepthwiseLanes;
  const auto [inner_first, inner_last] = cols.inner(out_w);
  // A row's taps read adjacent source pixels (stride and dilation 1 along
  // the row): depthwise_row_tile for the window widths it is compiled for.
  const int64_t reach = cols.base.front() - cols.base.back();
  const bool adjacent = cols.step == 1 && (cols.rising ? -reach : reach) == kw - 1;
  const int64_t adjacent_taps = adjacent ? kw : 0;
  auto bias_at = [&](int64_t c) { return bias == nullptr ? nullptr : bias + c; };
  at::parallel_for(0, batch * out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> offset(kh * kw), tap(kh * kw);
    // The taps of result pixel (y, x), as offsets from its first source
    // pixel (x * cols.step): those whose source lies in the plane.
    auto taps_of = [&](int64_t y, int64_t x) {
      int64_t taps = 0;
      for (int64_t i = 0; i < kh; ++i) {
        if (!rows.reads(y, i)) continue;
        for (int64_t q = 0; q < kw; ++q) {
          const int64_t j = cols.rising ? q : kw - 1 - q;  // source pixels left to right
          if (!cols.reads(x, j)) continue;
          offset[taps] = ((y * rows.step + rows.base[i]) * cols.size + cols.base[j]) * channels;
          tap[taps++] = i * kw + j;
        }
      }
      return taps;
    };
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / out_h, y = row % out_h;
      const scalar_t* sample = source + n * rows.size * cols.size * channels;
      scalar_t* out_row = output + row * out_w * channels;
      // One pixel at a time, its channels a vector at a time.
      auto single = [&](int64_t x, int64_t taps) {
        const scalar_t* first = sample + x * cols.step * channels;
        scalar_t* out = out_row + x * channels;
        for (int64_t c = 0; c < full; c += kDepthwiseLanes) {
          depthwise_tile<1>(first + c, 0, offset.data(), tap.data(), taps, weight + c, channels, bias_at(c),
                            out + c);
        }
        if (full < channels) {
          depthwise_tail(first + full, offset.data(), tap.data(), taps, weight + full, channels, bias_at(full),
                         channels - full, out + full);
        }
      };
      for (int64_t x = 0; x < inner_first; ++x) single(x, taps_of(y, x));
      for (int64_t x = inner_last; x < out_w; ++x) single(x, taps_of(y, x));
      if (inner_first == inner_last) continue;
      const int64_t taps = taps_of(y, inner_first);  // every inner pixel has the same taps
      const int64_t pixel_step = cols.step * channels;
      int64_t x = inner_first;
      for (; x + kDepthwisePixels <= inner_last; x += kDepthwisePixels) {
        const scalar_t* first = sample + x * pixel_step;
        scalar_t* out = out_row + x * channels;
        for (int64_t c = 0; c < full; c += kDepthwiseLanes) {
          const acc_t<scalar_t>* b = bias_at(c);
          if (adjacent_taps == 3) {
            depthwise_row_tile<kDepthwisePixels, 3>(first + c, offset.data(), tap.data(), taps, weight + c, channels,
                                                    b, out + c);
          } else if (adjacent_taps == 5) {
            depthwise_row_tile<kDepthwisePixels, 5>(first + c, offset.data(), tap.data(), taps, weight + c, channels,
                                                    b, out + c);
          } else {
            depthwise_tile<kDepthwisePixels>(first + c, pixel_step, offset.data(), tap.data(), taps, weight + c,
                                             channels, b, out + c);
          }
        }
        for (int64_t m = 0; full < channels && m < kDepthwisePixels; ++m) {
          depthwise_tail(first + m * pixel_step + full, offset.data(), tap.data(), taps, weight + full, channels,
                         bias_at(full), channels - full, out + m * channels + full);
        }
      }
      for (; x < inner_last; ++x) single(x, taps);
    }
  });
}

template <typename scalar_t>
void conv2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                           const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const TapAxis rows(w.kernel_h, w.stride_h, s.plane_h, w.pad_h, w.dilation_h, false);
  const TapAxis cols(w.kernel_w, w.stride_w, s.plane_w, w.pad_w, w.dilation_w, false);
  depthwise_nhwc_gather(rows, cols, s.batch, s.windows_h, s.windows_w, s.windows_channels, input, weight, bias,
                        output);
}

template <typename scalar_t>
void conv_transpose2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                                     const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const int64_t channels = s.plane_channels;
  if (w.stride_h == 1 && w.stride_w == 1) {
    const TapAxis rows(w.kernel_h, 1, s.windows_h, w.pad_h, w.dilation_h, true);
    const TapAxis cols(w.kernel_w, 1, s.windows_w, w.pad_w, w.dilation_w, true);
    depthwise_nhwc_gather(rows, cols, s.batch, s.plane_h, s.plane_w, channels, input, weight, bias, output);
    return;
  }
  auto taps = [&](int64_t n, int64_t iy, int64_t ix, acc_t<scalar_t>* sums) {
    add_taps<scalar_t>(channels, sums, [&](const auto& fn) {
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        const int64_t y = window_position_reading<int64_t>(iy, i, s.windows_h, w.stride_h, w.pad_h, w.dilation_h);
        if (y < 0) continue;
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const int64_t x = window_position_reading<int64_t>(ix, j, s.windows_w, w.stride_w, w.pad_w, w.dilation_w);
          if (x < 0) continue;
          fn(weight + (i * w.kernel_w + j) * channels, input + ((n * s.windows_h + y) * s.windows_w + x) * channels);
        }
      }
    });
  };
  for_each_output_pixel(s.batch, s.plane_h, s.plane_w, channels, bias, output, taps);
}

// partial[tap[k + j]][c] += sum over `count` result pixels q of
// dy[q * channels + c] * source[offset[k + j] + q * pixel_step + c], for
// the kw taps k + j of one row and kDepthwiseLanes channels: one row of a
// depthwise weight gradient, its kw sums in registers over the pixels.
template <int kw, typename scalar_t, typename acc>
inline void depthwise_weight_row(const scalar_t* dy, const scalar_t* source, int64_t pixel_step, int64_t count,
                                 const int64_t* offset, const int64_t* tap, int64_t channels, acc* partial) {
  using V = Vector<acc>;
  constexpr int lanes = sizeof(V) / sizeof(acc), vectors = kDepthwiseLanes / lanes;
  for (int v = 0; v < vectors; ++v) {
    V sums[kw];
    for (int j = 0; j < kw; ++j) sums[j] = broadcast<V>(acc(0));
    for (int64_t q = 0; q < count; ++q) {
      const V g = load_widened<V>(dy + q * channels + v * lanes);
      for (int j = 0; j < kw; ++j) {
        sums[j] = fused_multiply_add(g, load_widened<V>(source + offset[j] + q * pixel_step + v * lanes), sums[j]);
      }
    }
    for (int j = 0; j < kw; ++j) {
      acc* out = partial + tap[j] * channels + v * lanes;
      V total;
      std::memcpy(&total, out, sizeof(V));
      total += sums[j];
      std::memcpy(out, &total, sizeof(V));
    }
  }
}

template <typename scalar_t>
void conv2d_weight_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                                  scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t channels = s.windows_channels, taps = w.kernel_h * w.kernel_w, kw = w.kernel_w;
  const TapAxis rows(w.kernel_h, w.stride_h, s.plane_h, w.pad_h, w.dilation_h, false);
  const TapAxis cols(w.kernel_w, w.stride_w, s.plane_w, w.pad_w, w.dilation_w, false);
  const auto [inner_first, inner_last] = cols.inner(s.windows_w);
  const int64_t full = channels / kDepthwiseLanes * kDepthwiseLanes;
  WeightSums<acc> sums(taps * channels, at::get_num_threads());  // tap-major
  at::parallel_for(0, s.batch * s.windows_h, 1, [&](int64_t begin, int64_t end) {
    acc* sum = sums.mine();
    std::vector<acc> dy(channels);
    std::vector<int64_t> offset(kw), tap(kw);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.windows_h, y = row % s.windows_h;
      const scalar_t* sample = input + n * s.plane_h * s.plane_w * channels;
      const scalar_t* dy_row = grad_output + row * s.windows_w * channels;
      // One pixel's taps that read the plane, all channels: the row's ends
      // and, past the last whole vector, its inner pixels' last channels.
      auto single = [&](int64_t x, int64_t c0) {
        convert(dy_row + x * channels + c0, dy.data(), channels - c0);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          if (!rows.reads(y, i)) continue;
          for (int64_t j = 0; j < kw; ++j) {
            if (!cols.reads(x, j)) continue;
            const int64_t iy = y * rows.step + rows.base[i], ix = x * cols.step + cols.base[j];
            add_tap(dy.data(), sample + (iy * s.plane_w + ix) * channels + c0, sum + (i * kw + j) * channels + c0,
                    channels - c0);
          }
        }
      };
      for (int64_t x = 0; x < inner_first; ++x) single(x, 0);
      for (int64_t x = inner_last; x < s.windows_w; ++x) single(x, 0);
      const int64_t count = inner_last - inner_first;
      if (count == 0) continue;
      for (int64_t x = inner_first; full < channels && x < inner_last; ++x) single(x, full);
      const int64_t pixel_step = cols.step * channels;
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        if (!rows.reads(y, i)) continue;
        const int64_t iy = y * rows.step + rows.base[i];
        for (int64_t j = 0; j < kw; ++j) {
          offset[j] = (iy * s.plane_w + inner_first * cols.step + cols.base[j]) * channels;
          tap[j] = i * kw + j;
        }
        const scalar_t* dy_first = dy_row + inner_first * channels;
        for (int64_t c = 0; c < full; c += kDepthwiseLanes) {
          if (kw == 3) {
            depthwise_weight_row<3>(dy_first + c, sample + c, pixel_step, count, offset.data(), tap.data(), channels,
                                    sum + c);
          } else {
            for (int64_t j = 0; j < kw; ++j) {
              depthwise_weight_row<1>(dy_first + c, sample + c, pixel_step, count, offset.data() + j,
                                      tap.data() + j, channels, sum + c);
            }
          }
        }
      }
    }
  });
  std::vector<acc> total(taps * channels);
  sums.total_into(total.data());
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < taps; ++t) grad_weight[c * taps + t] = static_cast<scalar_t>(total[t * channels + c]);
  }
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
