// The GEMM kernels' operands beyond a plain pointer: bias additions, the
// float32 accumulator of a half dtype's transposed output
// (ImageAccumulator), the grid-side operand read with any strides
// (GridOperand), and the per-thread partial sums of a weight gradient
// (WeightSums).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

template <typename T>
void add_bias_planes(T* out, const T* bias, int64_t channels, int64_t plane, int64_t ld) {
  for (int64_t c = 0; c < channels; ++c) {
    const T b = bias[c];
    T* row = out + c * ld;
    for (int64_t i = 0; i < plane; ++i) row[i] += b;
  }
}

template <typename T>
void add_bias_pixels(T* out, const T* bias, int64_t channels, int64_t pixels) {
  for (int64_t p = 0; p < pixels; ++p) {
    T* pixel = out + p * channels;
    for (int64_t c = 0; c < channels; ++c) pixel[c] += bias[c];
  }
}

// A whole output as float32 for a half dtype's transposed convolution (its
// blocks add into overlapping pixels, possibly from two threads), rounded
// into the output at the end; the output itself for float32 and float64.
template <typename scalar_t>
struct ImageAccumulator {
  at::Tensor storage;
  acc_t<scalar_t>* data;
  ImageAccumulator(at::Tensor& out, bool zeroed) {
    if constexpr (is_widened<scalar_t>) {
      storage = zeroed ? at::zeros(out.numel(), out.options().dtype(at::kFloat))
                       : at::empty(out.numel(), out.options().dtype(at::kFloat));
      data = storage.data_ptr<acc_t<scalar_t>>();
    } else {
      if (zeroed) out.zero_();
      data = out.data_ptr<scalar_t>();
    }
  }
  void store_into(at::Tensor& out) {
    if constexpr (is_widened<scalar_t>) {
      scalar_t* result = out.data_ptr<scalar_t>();
      const acc_t<scalar_t>* from = data;
      at::parallel_for(0, out.numel(), 1 << 16, [&](int64_t b, int64_t e) { convert(from + b, result + b, e - b); });
    }
  }
};

// The grid-side operand that a transposed convolution reads (its input) and
// the weight gradient reads (grad_output), with any strides: it is copied a
// block at a time into the thread's scratch, widened for a half dtype,
// unless it is already dense in the order the GEMM reads (then `dense` and
// it is read in place). Backward passes often get an expanded gradient
// (the gradient of a sum has all strides 0): copying the whole of it to
// contiguous memory twice, once per backward kernel, was the larger part
// of the peak-memory excess on the small cases (1x64x56x56: 2.3 MiB against
// torch's 1.5).
template <typename scalar_t>
struct GridOperand {
  const scalar_t* data;
  int64_t sn, sc, sh, sw;
  bool dense;  // read in place: acc_t, and dense in the kernel's layout

  GridOperand(const at::Tensor& t, bool channels_last)
      : data(t.data_ptr<scalar_t>()), sn(t.stride(0)), sc(t.stride(1)), sh(t.stride(2)), sw(t.stride(3)) {
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    dense = !is_widened<scalar_t> && t.is_contiguous(format);
  }
  // Channels [0, channels) of grid rows [y0, y1) of sample n as planes
  // (channel-major, rows ld_dst apart) into dst.
  void planes(int64_t n, int64_t y0, int64_t y1, int64_t grid_w, int64_t channels, acc_t<scalar_t>* dst,
              int64_t ld_dst) const {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = y0; y < y1; ++y) {
        const scalar_t* src = data + n * sn + c * sc + y * sh;
        acc_t<scalar_t>* out = dst + c * ld_dst + (y - y0) * grid_w;
        if (sw == 1) {
          convert(src, out, grid_w);
        } else {
          for (int64_t x = 0; x < grid_w; ++x) out[x] = static_cast<acc_t<scalar_t>>(src[x * sw]);
        }
      }
    }
  }
  // The same block as pixels (pixel-major, `channels` values each) into dst.
  void pixels(int64_t n, int64_t y0, int64_t y1, int64_t grid_w, int64_t channels, acc_t<scalar_t>* dst) const {
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = 0; x < grid_w; ++x) {
        const scalar_t* src = data + n * sn + y * sh + x * sw;
        acc_t<scalar_t>* out = dst + ((y - y0) * grid_w + x) * channels;
        if (sc == 1) {
          convert(src, out, channels);
        } else {
          for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<acc_t<scalar_t>>(src[c * sc]);
        }
      }
    }
  }
};


// One partial sum of the weight gradient per thread that runs blocks
// (partial_sums, blocks.h), added up at the end: no two threads write the
// same memory, and with the blocks handed out in a fixed way
// (at::parallel_for's static split) the result does not depend on
// scheduling. Blocks run in turn share one sum. Half dtypes sum the batch
// in float32 and round once.
template <typename acc>
struct WeightSums {
  int64_t numel, partials;
  std::vector<acc> sums;
  WeightSums(int64_t numel, int64_t partials) : numel(numel), partials(partials), sums(partials * numel, acc(0)) {}
  acc* mine() { return partials == 1 ? sums.data() : sums.data() + at::get_thread_num() * numel; }
  template <typename scalar_t>
  void total_into(scalar_t* out) {
    for (int64_t t = 1; t < partials; ++t) {
      const acc* part = sums.data() + t * numel;
      for (int64_t i = 0; i < numel; ++i) sums[i] += part[i];
    }
    convert(sums.data(), out, numel);
  }
};

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
