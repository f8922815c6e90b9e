// The GEMM kernels' operands beyond a plain pointer: the type they are
// stored in (with_gemm_operand) and the GEMM on them (operand_gemm), bias
// additions, the float32 accumulator of a half dtype's transposed output
// (PlaneAccumulator), the windows-side operand read with any strides
// (WindowsOperand), and the per-thread partial sums of a weight gradient
// (WeightSums).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../gemm.h"
#include "../transpose8x8.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------------------------ operand type
//
// The GEMM kernels keep the GEMM's operands (the columns, the weight, copies
// of the windows-side input) in one type, operand_t: acc_t<scalar_t>, widened
// as they are copied; or, for bfloat16 where the GEMM multiplies bfloat16
// (gemm_reads_bfloat16, gemm.h), bfloat16 itself: half the bytes to write
// and read, no widened copy of the weight, and pointwise planes are their
// own column matrix. The GEMM's results (C) are acc_t either way.

// Calls fn(operand_t()) with the operand type of scalar_t's convolutions
// at the capability level in use.
template <typename scalar_t, typename Fn>
void with_gemm_operand(const Fn& fn) {
  if constexpr (std::is_same<scalar_t, at::BFloat16>::value) {
    if (gemm_reads_bfloat16()) {
      fn(at::BFloat16());
      return;
    }
  }
  fn(acc_t<scalar_t>());
}

// Whether scalar_t values are converted on their way into operand_t.
template <typename scalar_t, typename operand_t>
constexpr bool converts = !std::is_same<scalar_t, operand_t>::value;

// gemm.h's GEMM of scalar_t's convolutions on operands stored as operand_t.
template <typename scalar_t, typename operand_t>
void operand_gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, acc_t<scalar_t> alpha,
                  const operand_t* a, int64_t lda, const operand_t* b, int64_t ldb, acc_t<scalar_t> beta,
                  acc_t<scalar_t>* c, int64_t ldc) {
  if constexpr (std::is_same<operand_t, acc_t<scalar_t>>::value) {
    gemm<scalar_t>(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// A weight as the GEMM kernels read it: operand_t, contiguous, with its
// channels last when `channels_last` (free for a channels_last weight).
template <typename operand_t>
at::Tensor gemm_weight(const at::Tensor& weight, bool channels_last) {
  const at::Tensor w = weight.to(c10::CppTypeToScalarType<operand_t>::value);
  return channels_last ? w.permute({0, 2, 3, 1}).contiguous() : w.contiguous();
}

// Elements of scratch of type T that hold n elements of type U (the
// kernels' scratch holds operands and accumulators one after the other).
template <typename T, typename U>
constexpr int64_t scratch_elements(int64_t n) {
  return (n * int64_t(sizeof(U)) + int64_t(sizeof(T)) - 1) / int64_t(sizeof(T));
}

// ------------------------------------------------------------------ others

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

// Every value of `out` its channel's bias (null: zero), rounded to out's
// dtype; `out` is a 4-d tensor in either memory format.
template <typename acc>
void fill_with_bias(at::Tensor& out, const acc* bias) {
  if (bias == nullptr) {
    out.zero_();
    return;
  }
  const auto options = out.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const at::Tensor b = at::from_blob(const_cast<acc*>(bias), {out.size(1)}, options);
  out.copy_(b.view({1, out.size(1), 1, 1}).expand(out.sizes()));
}

// A transposed convolution's whole output (its planes, shape.h) as float32
// for a half dtype (its blocks add into overlapping pixels, possibly from
// two threads), rounded into the output at the end; the output itself for
// float32 and float64.
template <typename scalar_t>
struct PlaneAccumulator {
  at::Tensor storage;
  acc_t<scalar_t>* data = nullptr;
  // `used` false: the kernel writes the output itself, and nothing is allocated.
  PlaneAccumulator(at::Tensor& out, bool zeroed, bool used = true) {
    if (!used) return;
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

// The windows-side operand that a transposed convolution reads (its input)
// and the weight gradient reads (grad_output), with any strides: it is
// copied a block at a time into the thread's scratch, converted to the
// operand type, unless it is already dense in the order the GEMM reads
// (then `dense` and it is read in place). Backward passes often get an
// expanded gradient (the gradient of a sum has all strides 0): copying the
// whole of it to contiguous memory, once per backward kernel, would be the
// larger part of the peak memory above torch's on small cases (the
// peak-memory table of benchmarks/bench_ops.py, benchmarks/README.md).
template <typename scalar_t, typename operand_t = acc_t<scalar_t>>
struct WindowsOperand {
  const scalar_t* data;
  int64_t sn, sc, sh, sw;
  bool dense;  // read in place: of the operand type, and dense in the kernel's layout

  WindowsOperand(const at::Tensor& t, bool channels_last)
      : data(t.data_ptr<scalar_t>()), sn(t.stride(0)), sc(t.stride(1)), sh(t.stride(2)), sw(t.stride(3)) {
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    dense = !converts<scalar_t, operand_t> && t.is_contiguous(format);
  }
  // Channels [0, channels) of windows rows [y0, y1) of sample n as planes
  // (channel-major, rows ld_dst apart) into dst.
  void planes(int64_t n, int64_t y0, int64_t y1, int64_t windows_w, int64_t channels, operand_t* dst,
              int64_t ld_dst) const {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = y0; y < y1; ++y) {
        const scalar_t* src = data + n * sn + c * sc + y * sh;
        operand_t* out = dst + c * ld_dst + (y - y0) * windows_w;
        if (sw == 1) {
          convert(src, out, windows_w);
        } else if (sw == 0) {  // expanded along the row (the gradient of a sum)
          std::fill_n(out, windows_w, static_cast<operand_t>(*src));
        } else {
          for (int64_t x = 0; x < windows_w; ++x) out[x] = static_cast<operand_t>(src[x * sw]);
        }
      }
    }
  }
  // The same block as pixels (pixel-major, `channels` values each) into
  // dst, from channel first_channel on. Planes of adjacent pixels (float32)
  // go 8 x 8 through registers, as element-wise they would read or write a
  // cache line per element.
  void pixels(int64_t n, int64_t y0, int64_t y1, int64_t windows_w, int64_t channels, operand_t* dst,
              int64_t first_channel = 0) const {
    const scalar_t* block = data + n * sn + first_channel * sc + y0 * sh;
    int64_t done = 0;  // channels already copied
#if defined(__AVX__)
    if constexpr (std::is_same<scalar_t, float>::value && std::is_same<operand_t, float>::value) {
      if (sw == 1 && sh == windows_w) {
        transpose_words(block, channels, (y1 - y0) * windows_w, sc, dst, channels);
        done = channels;
      }
    }
#endif
    if (done == channels) return;
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = 0; x < windows_w; ++x) {
        const scalar_t* src = block + (y - y0) * sh + x * sw;
        operand_t* out = dst + ((y - y0) * windows_w + x) * channels;
        if (sc == 1) {
          convert(src, out, channels);
        } else if (sc == 0) {  // expanded across channels (the gradient of a sum)
          std::fill_n(out + done, channels - done, static_cast<operand_t>(*src));
        } else {
          for (int64_t c = done; c < channels; ++c) out[c] = static_cast<operand_t>(src[c * sc]);
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
  // The partials added in thread order and rounded into out, ranges of the
  // gradient in parallel (each value's sum in the same order whatever the split).
  template <typename scalar_t>
  void total_into(scalar_t* out) {
    constexpr int64_t kGrain = int64_t(1) << 14;
    at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
      acc* total = sums.data();
      for (int64_t t = 1; t < partials; ++t) {
        const acc* part = sums.data() + t * numel;
        for (int64_t i = begin; i < end; ++i) total[i] += part[i];
      }
      convert(total + begin, out + begin, end - begin);
    });
  }
};

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
