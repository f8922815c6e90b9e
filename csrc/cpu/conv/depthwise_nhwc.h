// Depthwise convolutions on channels_last tensors: the three computations
// vectorised over channels, without layout copies.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

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
// channels, which vectorises, with no layout copies. The input gradient
// gathers, for each plane pixel, the window positions whose windows hold it (no
// two tasks write one pixel); the weight gradient sums tap-major in each
// thread's partial sums, added in thread order.

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

template <typename scalar_t>
void conv2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                           const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const int64_t channels = s.windows_channels;
  auto taps = [&](int64_t n, int64_t y, int64_t x, acc_t<scalar_t>* sums) {
    add_taps<scalar_t>(channels, sums, [&](const auto& fn) {
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
        if (iy < 0 || iy >= s.plane_h) continue;
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
          if (ix < 0 || ix >= s.plane_w) continue;
          fn(weight + (i * w.kernel_w + j) * channels, input + ((n * s.plane_h + iy) * s.plane_w + ix) * channels);
        }
      }
    });
  };
  for_each_output_pixel(s.batch, s.windows_h, s.windows_w, channels, bias, output, taps);
}

template <typename scalar_t>
void conv_transpose2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                                     const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const int64_t channels = s.plane_channels;
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

template <typename scalar_t>
void conv2d_weight_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                                  scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t channels = s.windows_channels, taps = w.kernel_h * w.kernel_w;
  WeightSums<acc> sums(taps * channels, at::get_num_threads());  // tap-major
  at::parallel_for(0, s.batch * s.windows_h, 1, [&](int64_t begin, int64_t end) {
    acc* sum = sums.mine();
    std::vector<acc> dy(channels);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.windows_h, y = row % s.windows_h;
      for (int64_t x = 0; x < s.windows_w; ++x) {
        convert(grad_output + (row * s.windows_w + x) * channels, dy.data(), channels);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= s.plane_h) continue;
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
            if (ix < 0 || ix >= s.plane_w) continue;
            add_tap(dy.data(), input + ((n * s.plane_h + iy) * s.plane_w + ix) * channels,
                    sum + (i * w.kernel_w + j) * channels, channels);
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
