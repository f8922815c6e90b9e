// The GEMM kernels of the three computations on contiguous (NCHW) tensors:
// im2col/col2im around one GEMM per block of windows rows and group.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <type_traits>

#include "../gemm.h"
#include "../capability.h"
#include "../im2col.h"
#include "../im2col_gather.h"
#include "../im2col_small.h"
#include "blocks.h"
#include "operands.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// Samples with few window positions fold whole into one block
// (folds_samples, blocks.h): the block's samples then sit side by side in
// one column matrix (rows x samples * windows), and the windows-side
// operand of the block (the output, or the gradient read) is gathered into,
// or scattered from, scratch of the same width, as no single matrix of the
// tensor spans them. A folded block is still narrow: where its window
// positions are fewer than its column rows and at most
// kMaxTransposedPositions, conv_transpose2d's GEMM is the transposed
// product, with the window positions as the rows of C, as the GEMM's tiles
// run along C's rows, which a narrow C leaves part empty; wider blocks fill
// the tiles as they are and measured faster untransposed.
// conv2d's is not: there the weight is the GEMM's A, which the bfloat16 GEMM
// reads in place, and the product as it is measured faster at every width
// in both dtypes (benchmarks/README.md, "The measurements behind the
// kernels' fixed bounds").

constexpr int64_t kMaxTransposedPositions = 64;

// The im2col of whole planes for shape s, where one applies at a level with
// AVX-512 to planes of the operand type that are not pointwise: the
// register permutes of im2col_small.h for planes of at most 64 values, else
// for float32 the gathers of im2col_gather.h where im2col.h would copy
// short rows (any window stride but 1, or windows rows narrower than the
// plane's). Neither: im2col.h, a windows row at a time. Built once per call
// of a kernel.
template <typename operand_t>
struct WholePlaneColumns {
  std::unique_ptr<SmallPlaneColumns<operand_t>> small;
  std::unique_ptr<GatheredColumns> gathered;

  bool applies() const { return small != nullptr || gathered != nullptr; }
  void columns(const operand_t* plane, operand_t* rows, int64_t ld) const {
    if (small != nullptr) {
      small->columns(plane, rows, ld);
    } else if constexpr (std::is_same<operand_t, float>::value) {
      gathered->columns(plane, rows, ld);
    }
  }
};

template <typename scalar_t, typename operand_t>
WholePlaneColumns<operand_t> whole_plane_columns(const ConvShape& s) {
  WholePlaneColumns<operand_t> whole;
  if constexpr (!converts<scalar_t, operand_t>) {
    if (s.is_pointwise() || capability() < Capability::AVX512) return whole;
    const Window& w = s.window;
    if (SmallPlaneColumns<operand_t>::fits(s.plane_h, s.plane_w, s.windows_h, s.windows_w)) {
      whole.small = std::make_unique<SmallPlaneColumns<operand_t>>(w, s.plane_h, s.plane_w, s.windows_h, s.windows_w);
    } else if (std::is_same<operand_t, float>::value && (w.stride_w != 1 || s.windows_w != s.plane_w) &&
               GatheredColumns::fits(s.plane_h, s.plane_w, s.windows_h, s.windows_w)) {
      whole.gathered = std::make_unique<GatheredColumns>(w, s.plane_h, s.plane_w, s.windows_h, s.windows_w);
    }
  }
  return whole;
}

// Group g's column matrix of the block of windows rows [y0, y1) from sample
// n, with its row stride in *ld: in place when `in_place` (a pointwise block
// of one sample whose planes are of the operand type is its own column
// matrix, rows a plane apart), else built into `buffer` (rows ld_buffer
// apart; several samples side by side when folded): im2col (by `whole`'s
// whole planes where whole_plane_columns gave a way), or for a
// pointwise convolution the planes copied (converted to the operand type).
template <typename scalar_t, typename operand_t>
const operand_t* group_columns(const ConvShape& s, const scalar_t* input, int64_t g, int64_t n, int64_t y0,
                               int64_t y1, bool in_place, const WholePlaneColumns<operand_t>& whole,
                               operand_t* buffer, int64_t ld_buffer, int64_t* ld) {
  const int64_t ww = s.windows_w, taps = s.window.kernel_h * s.window.kernel_w;
  if constexpr (!converts<scalar_t, operand_t>) {
    if (in_place) {
      *ld = s.windows_size();
      return input + n * s.plane_sample() + g * s.plane_group() * s.plane_size() + y0 * ww;
    }
  }
  const int64_t elements = taps * std::min(y1 - y0, s.windows_h) * ww;  // per (sample, channel)
  for_each_sample_channel(s, n, y0, y1, s.plane_group(), elements, [&](int64_t m, int64_t ya, int64_t yb,
                                                                        int64_t before, int64_t c) {
    const scalar_t* plane = input + m * s.plane_sample() + (g * s.plane_group() + c) * s.plane_size();
    operand_t* rows = buffer + c * taps * ld_buffer + before * ww;
    if (s.is_pointwise()) {
      convert(plane + ya * ww, rows, (yb - ya) * ww);
    } else if (whole.applies() && ya == 0 && yb == s.windows_h) {
      if constexpr (!converts<scalar_t, operand_t>) whole.columns(plane, rows, ld_buffer);
    } else {
      im2col(plane, 1, s.plane_h, s.plane_w, ww, s.window, ya, yb, rows, ld_buffer);
    }
  });
  *ld = ld_buffer;
  return buffer;
}

// ---------------------------------------------------------------- conv2d (NCHW)
//
// Per block of windows rows: out[g][:, block] (Cout/G x L) = W[g] (Cout/G x rows)
// . columns (rows x L), written in place (ldc = the plane) for float32.

template <typename scalar_t, typename operand_t>
void conv2d_kernel(const ConvShape& s, const scalar_t* input, const operand_t* weight, const acc_t<scalar_t>* bias,
                   scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = s.column_rows(), windows = s.windows_size(), ww = s.windows_w;
  const bool pointwise = s.is_pointwise(), folding = folds_samples(s);
  const bool columns_needed = !pointwise || converts<scalar_t, operand_t> || folding;
  const bool out_in_scratch = is_widened<scalar_t> || folding;
  const int64_t row_bytes = ((columns_needed ? rows * int64_t(sizeof(operand_t)) : 0) +
                             (out_in_scratch ? s.windows_channels * int64_t(sizeof(acc)) : 0)) * ww;
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * blocks.samples * ww;
  // Per thread: the block's columns, then (half dtypes, folded samples) its float32 output.
  const int64_t column_size = scratch_elements<acc, operand_t>(columns_needed ? rows * width : 0);
  const int64_t out_size = out_in_scratch ? s.windows_channels * width : 0;
  const auto whole = whole_plane_columns<scalar_t, operand_t>(s);
  for_each_block<acc>(s, blocks, false, column_size + out_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * ww;
    operand_t* column_buffer = reinterpret_cast<operand_t*>(buffer);
    acc* out = buffer + column_size;
    int64_t ld_out = cols;
    if constexpr (!is_widened<scalar_t>) {
      if (!out_in_scratch) {
        out = output + n * s.windows_sample() + y0 * ww;
        ld_out = windows;
      }
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      int64_t ld_columns = 0;
      const operand_t* columns =
          group_columns(s, input, g, n, y0, y1, !columns_needed, whole, column_buffer, cols, &ld_columns);
      const operand_t* group_weight = weight + g * s.windows_group() * rows;
      operand_gemm<scalar_t>(false, false, s.windows_group(), cols, rows, 1, group_weight, std::max<int64_t>(rows, 1),
                             columns, std::max<int64_t>(ld_columns, 1), 0, out + g * s.windows_group() * ld_out,
                             std::max<int64_t>(ld_out, 1));
    }
    if (bias != nullptr) add_bias_planes(out, bias, s.windows_channels, cols, ld_out);
    if (out_in_scratch) {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        for (int64_t c = 0; c < s.windows_channels; ++c)
          convert(out + c * cols + before * ww, output + m * s.windows_sample() + c * windows + ya * ww,
                  (yb - ya) * ww);
      });
    }
  });
}

// ------------------------------------------------------- conv_transpose2d (NCHW)
//
// Per block of windows rows: columns (rows x L) = W[g]^T (rows x Cin/G) .
// x[g][:, block] (Cin/G x L), then col2im adds them into the output's
// planes. A pointwise block of one sample writes its product into the
// planes in place.

template <typename scalar_t, typename operand_t>
void conv_transpose2d_kernel(const ConvShape& s, const WindowsOperand<scalar_t, operand_t>& input,
                             const operand_t* weight, const acc_t<scalar_t>* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  // Here the input is the windows side and the output the plane side.
  const int64_t rows = s.column_rows(), windows = s.windows_size(), ww = s.windows_w;
  const bool folding = folds_samples(s);
  const bool via_columns = !s.is_pointwise() || folding;
  const bool x_copied = !input.dense || folding;
  const int64_t row_bytes = ((via_columns ? rows * int64_t(sizeof(acc)) : 0) +
                             (x_copied ? s.windows_channels * int64_t(sizeof(operand_t)) : 0)) * ww;
  const Blocks blocks = make_blocks(s, row_bytes, via_columns ? disjoint_rows(s.window) : 1);
  const int64_t width = blocks.rows * blocks.samples * ww;
  // A half output of a 1x1 window (whose taps are disjoint at any stride:
  // taps_disjoint) takes each value rounded straight from the columns
  // (col2im_disjoint): no float32 copy of the whole output. A 2x2 window's
  // disjoint taps interleave along the rows, whose strided scalar stores
  // measured slower than the float32 copy.
  const bool rounded_in_place = is_widened<scalar_t> && via_columns && s.window.kernel_h * s.window.kernel_w == 1;
  if (rounded_in_place) fill_with_bias(output, bias);
  PlaneAccumulator<scalar_t> out_planes(output, via_columns, !rounded_in_place);
  // Per thread: the block's columns, then its copy of the input (in the operand type).
  const int64_t column_size = via_columns ? rows * width : 0;
  const int64_t x_size = scratch_elements<acc, operand_t>(x_copied ? s.windows_channels * width : 0);
  const bool transposed = folding && width < rows && width <= kMaxTransposedPositions;
  for_each_block<acc>(s, blocks, via_columns, column_size + x_size,
                      [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * ww;
    operand_t* x_buffer = reinterpret_cast<operand_t*>(buffer + column_size);
    const operand_t* x = x_buffer;
    int64_t ld_x = cols;
    if (x_copied) {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        input.planes(m, ya, yb, ww, s.windows_channels, x_buffer + before * ww, cols);
      });
    } else {
      x = reinterpret_cast<const operand_t*>(input.data) + n * s.windows_sample() + y0 * ww;
      ld_x = windows;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const operand_t* group_x = x + g * s.windows_group() * ld_x;
      const operand_t* group_weight = weight + g * s.windows_group() * rows;
      if (!via_columns) {
        acc* group_planes = out_planes.data + n * s.plane_sample() + g * s.plane_group() * s.plane_size() + y0 * ww;
        operand_gemm<scalar_t>(true, false, rows, cols, s.windows_group(), 1, group_weight, std::max<int64_t>(rows, 1),
                               group_x, std::max<int64_t>(ld_x, 1), 0, group_planes,
                               std::max<int64_t>(s.plane_size(), 1));
        continue;
      }
      // Entry (r, p) of the columns at buffer[r * ld_rows + p * ld_pixels]:
      // transposed, L x rows.
      const int64_t ld_rows = transposed ? 1 : cols, ld_pixels = transposed ? rows : 1;
      if (transposed) {
        operand_gemm<scalar_t>(true, false, cols, rows, s.windows_group(), 1, group_x, std::max<int64_t>(ld_x, 1),
                               group_weight, std::max<int64_t>(rows, 1), 0, buffer, std::max<int64_t>(rows, 1));
      } else {
        operand_gemm<scalar_t>(true, false, rows, cols, s.windows_group(), 1, group_weight, std::max<int64_t>(rows, 1),
                               group_x, std::max<int64_t>(ld_x, 1), 0, buffer, std::max<int64_t>(cols, 1));
      }
      const int64_t taps = s.window.kernel_h * s.window.kernel_w;
      const int64_t elements = taps * std::min(y1 - y0, s.windows_h) * ww;  // per (sample, channel)
      for_each_sample_channel(s, n, y0, y1, s.plane_group(), elements, [&](int64_t m, int64_t ya, int64_t yb,
                                                                            int64_t before, int64_t c) {
        const int64_t channel = g * s.plane_group() + c, at = m * s.plane_sample() + channel * s.plane_size();
        const acc* columns = buffer + c * taps * ld_rows + before * ww * ld_pixels;
        if (rounded_in_place) {
          col2im_disjoint(columns, ld_rows, ld_pixels, 1, bias != nullptr ? bias[channel] : acc(0), s.plane_h,
                          s.plane_w, ww, s.window, ya, yb, output.data_ptr<scalar_t>() + at);
        } else {
          col2im(columns, ld_rows, ld_pixels, 1, s.plane_h, s.plane_w, ww, s.window, ya, yb, out_planes.data + at);
        }
      });
    }
  });
  if (rounded_in_place) return;
  if (bias != nullptr) {
    at::parallel_for(0, s.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        add_bias_planes(out_planes.data + n * s.plane_sample(), bias, s.plane_channels, s.plane_size(), s.plane_size());
    });
  }
  out_planes.store_into(output);
}

// ---------------------------------------------------------- conv2d_weight (NCHW)
//
// Per block of windows rows: dW[g] (Cout/G x rows) += dy[g][:, block] (Cout/G x
// L) . columns^T (L x rows), into the running thread's partial sum.

template <typename scalar_t, typename operand_t>
void conv2d_weight_kernel(const ConvShape& s, const scalar_t* input,
                          const WindowsOperand<scalar_t, operand_t>& grad_output, scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = s.column_rows(), windows = s.windows_size(), ww = s.windows_w;
  const bool pointwise = s.is_pointwise(), folding = folds_samples(s);
  const bool columns_needed = !pointwise || converts<scalar_t, operand_t> || folding;
  const bool dy_copied = !grad_output.dense || folding;
  const int64_t row_bytes =
      ((columns_needed ? rows : 0) + (dy_copied ? s.windows_channels : 0)) * ww * int64_t(sizeof(operand_t));
  Blocks blocks = make_blocks(s, row_bytes, 1);
  blocks.in_turn = sums_weight_in_turn(s, s.windows_channels * rows);
  const int64_t width = blocks.rows * blocks.samples * ww;
  WeightSums<acc> sums(s.windows_channels * rows, partial_sums(s, blocks));
  // Per thread: the block's columns, then its copy of grad_output (both in the operand type).
  const int64_t column_size = columns_needed ? rows * width : 0;
  const int64_t dy_size = dy_copied ? s.windows_channels * width : 0;
  const auto whole = whole_plane_columns<scalar_t, operand_t>(s);
  for_each_block<operand_t>(s, blocks, false, column_size + dy_size,
                            [&](int64_t n, int64_t y0, int64_t y1, operand_t* buffer) {
    const int64_t cols = (y1 - y0) * ww;
    acc* sum = sums.mine();
    const operand_t* dy = buffer + column_size;
    int64_t ld_dy = cols;
    if (dy_copied) {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        grad_output.planes(m, ya, yb, ww, s.windows_channels, buffer + column_size + before * ww, cols);
      });
    } else {
      dy = reinterpret_cast<const operand_t*>(grad_output.data) + n * s.windows_sample() + y0 * ww;
      ld_dy = windows;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      int64_t ld_columns = 0;
      const operand_t* columns = group_columns(s, input, g, n, y0, y1, !columns_needed, whole, buffer, cols,
                                                 &ld_columns);
      operand_gemm<scalar_t>(false, true, s.windows_group(), rows, cols, 1, dy + g * s.windows_group() * ld_dy,
                             std::max<int64_t>(ld_dy, 1), columns, std::max<int64_t>(ld_columns, 1), 1,
                             sum + g * s.windows_group() * rows, std::max<int64_t>(rows, 1));
    }
  });
  sums.total_into(grad_weight);
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
