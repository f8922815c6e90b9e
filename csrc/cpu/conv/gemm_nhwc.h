// The GEMM kernels of the three computations on channels_last (NHWC)
// tensors, read and written in place; samples with few window positions
// fold whole into one block (blocks.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "../gemm.h"
#include "../im2col.h"
#include "blocks.h"
#include "operands.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------------------------- channels_last
//
// Channels_last tensors are read and written in place: the column matrix
// is the transpose of the NCHW one (a row per window position, im2col_nhwc),
// the weight is read in its channels_last order (Cout x kH x kW x Cin/G,
// which is the column rows' (i, j, c) order), and the GEMMs swap operands:
//   conv2d            y[block, g]  = columns (L x K) . W[g]^T (K x Cout/G)
//   conv_transpose2d  columns (L x K) = x[block, g] (L x Cin/G) . W[g] (Cin/G x K), col2im_nhwc
//   conv2d_weight     dW[g] (Cout/G x K) += dy[block, g]^T (Cout/G x L) . columns (L x K)
// A block of windows rows of one sample is one contiguous run of pixels.

// Group g's column matrix of the block of windows rows [y0, y1) from sample
// n, with its row stride in *ld: for a pointwise convolution the block's
// pixels themselves, in place or (converted to the operand type, by the
// caller, once per block) in `buffer`; else im2col_nhwc into `buffer`.
template <typename scalar_t, typename operand_t>
const operand_t* group_columns_nhwc(const ConvShape& s, const scalar_t* input, int64_t g, int64_t n, int64_t y0,
                                    int64_t y1, operand_t* buffer, int64_t* ld) {
  const int64_t cin = s.plane_channels, cig = s.plane_group(), ww = s.windows_w, depth = s.column_rows();
  if (s.is_pointwise()) {
    *ld = cin;
    if constexpr (converts<scalar_t, operand_t>) {
      return buffer + g * cig;
    } else {
      return input + n * s.plane_sample() + y0 * ww * cin + g * cig;
    }
  }
  for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
    im2col_nhwc(input + m * s.plane_sample(), cin, g * cig, cig, s.plane_h, s.plane_w, ww, s.window, ya, yb,
                buffer + before * ww * depth);
  });
  *ld = depth;
  return buffer;
}

template <typename scalar_t, typename operand_t>
void conv2d_nhwc_kernel(const ConvShape& s, const scalar_t* input, const operand_t* weight,
                        const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), ww = s.windows_w, cin = s.plane_channels, cout = s.windows_channels;
  const int64_t cog = s.windows_group();
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || converts<scalar_t, operand_t>;
  const int64_t column_row = pointwise ? cin : depth;  // a pointwise block is converted whole
  const int64_t row_bytes = ((columns_needed ? column_row * int64_t(sizeof(operand_t)) : 0) +
                             widening_size<scalar_t>(cout) * int64_t(sizeof(acc))) * ww;
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * blocks.samples * ww;
  const int64_t column_size = scratch_elements<acc, operand_t>(columns_needed ? column_row * width : 0);
  const int64_t out_size = widening_size<scalar_t>(cout * width);
  for_each_block<acc>(s, blocks, false, column_size + out_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t pixels = (y1 - y0) * ww, first = y0 * ww;
    operand_t* column_buffer = reinterpret_cast<operand_t*>(buffer);
    const scalar_t* planes = input + n * s.plane_sample();
    scalar_t* result = output + (n * s.windows_size() + first) * cout;
    acc* out = accumulator(result, buffer + column_size);
    if (pointwise && columns_needed) convert(planes + first * cin, column_buffer, pixels * cin);
    for (int64_t g = 0; g < s.groups; ++g) {
      int64_t ld_columns = 0;
      const operand_t* columns = group_columns_nhwc(s, input, g, n, y0, y1, column_buffer, &ld_columns);
      operand_gemm<scalar_t>(false, true, pixels, cog, depth, 1, columns, std::max<int64_t>(ld_columns, 1),
                             weight + g * cog * depth, std::max<int64_t>(depth, 1), 0, out + g * cog,
                             std::max<int64_t>(cout, 1));
    }
    if (bias != nullptr) add_bias_pixels(out, bias, cout, pixels);
    store(out, pixels * cout, result);
  });
}

template <typename scalar_t, typename operand_t>
void conv_transpose2d_nhwc_kernel(const ConvShape& s, const WindowsOperand<scalar_t, operand_t>& input,
                                  const operand_t* weight, const acc_t<scalar_t>* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), ww = s.windows_w, cin = s.windows_channels, cout = s.plane_channels;
  const int64_t cig = s.windows_group(), cog = s.plane_group();
  const bool pointwise = s.is_pointwise();
  const int64_t copied = input.dense ? 0 : cin;
  const int64_t row_bytes =
      ((pointwise ? 0 : depth) * int64_t(sizeof(acc)) + copied * int64_t(sizeof(operand_t))) * ww;
  const Blocks blocks = make_blocks(s, row_bytes, pointwise ? 1 : disjoint_rows(s.window));
  const int64_t width = blocks.rows * blocks.samples * ww;
  // A half output of disjoint taps takes each value rounded straight from
  // the columns (col2im_nhwc_disjoint): no float32 copy of the whole output.
  const bool rounded_in_place = is_widened<scalar_t> && !pointwise && taps_disjoint(s.window);
  if (rounded_in_place) fill_with_bias(output, bias);
  PlaneAccumulator<scalar_t> out_planes(output, !pointwise, !rounded_in_place);
  const int64_t column_size = pointwise ? 0 : depth * width;
  const int64_t x_size = scratch_elements<acc, operand_t>(copied * width);
  const int64_t bias_size = rounded_in_place && bias != nullptr ? cout : 0;
  for_each_block<acc>(s, blocks, !pointwise, column_size + x_size + bias_size,
                      [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t pixels = (y1 - y0) * ww, first = y0 * ww;
    operand_t* x_buffer = reinterpret_cast<operand_t*>(buffer + column_size);
    acc* bias_scratch = buffer + column_size + x_size;
    const operand_t* x = x_buffer;
    if (input.dense) {
      x = reinterpret_cast<const operand_t*>(input.data) + (n * s.windows_size() + first) * cin;
    } else {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        input.pixels(m, ya, yb, ww, cin, x_buffer + before * ww * cin);
      });
    }
    acc* sample_planes = out_planes.data + n * s.plane_sample();
    for (int64_t g = 0; g < s.groups; ++g) {
      acc* columns = pointwise ? sample_planes + first * cout + g * cog : buffer;
      const int64_t ld_columns = pointwise ? cout : depth;
      operand_gemm<scalar_t>(false, false, pixels, depth, cig, 1, x + g * cig, std::max<int64_t>(cin, 1),
                             weight + g * cig * depth, std::max<int64_t>(depth, 1), 0, columns,
                             std::max<int64_t>(ld_columns, 1));
      if (rounded_in_place) {
        scalar_t* planes = output.data_ptr<scalar_t>();
        for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
          col2im_nhwc_disjoint(columns + before * ww * depth, bias, cout, g * cog, cog, s.plane_h, s.plane_w, ww,
                               s.window, ya, yb, bias_scratch, planes + m * s.plane_sample());
        });
      } else if (!pointwise) {
        for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
          col2im_nhwc(columns + before * ww * depth, cout, g * cog, cog, s.plane_h, s.plane_w, ww, s.window, ya, yb,
                      out_planes.data + m * s.plane_sample());
        });
      }
    }
  });
  if (rounded_in_place) return;
  if (bias != nullptr) {
    at::parallel_for(0, s.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        add_bias_pixels(out_planes.data + n * s.plane_sample(), bias, cout, s.plane_size());
      }
    });
  }
  out_planes.store_into(output);
}

template <typename scalar_t, typename operand_t>
void conv2d_weight_nhwc_kernel(const ConvShape& s, const scalar_t* input,
                               const WindowsOperand<scalar_t, operand_t>& grad_output, scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), ww = s.windows_w, cin = s.plane_channels, cout = s.windows_channels;
  const int64_t cog = s.windows_group();
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || converts<scalar_t, operand_t>;
  const int64_t column_row = pointwise ? cin : depth;
  const int64_t copied = grad_output.dense ? 0 : cout;
  const int64_t row_bytes = ((columns_needed ? column_row : 0) + copied) * ww * int64_t(sizeof(operand_t));
  Blocks blocks = make_blocks(s, row_bytes, 1, folds_samples(s) ? kColumnBlockBytes : kNhwcWeightBlockBytes);
  blocks.in_turn = sums_weight_in_turn(s, cout * depth);
  const int64_t width = blocks.rows * blocks.samples * ww;
  WeightSums<acc> sums(cout * depth, partial_sums(s, blocks));
  const int64_t column_size = columns_needed ? column_row * width : 0;
  const int64_t dy_size = copied * width;
  for_each_block<operand_t>(s, blocks, false, column_size + dy_size,
                            [&](int64_t n, int64_t y0, int64_t y1, operand_t* buffer) {
    const int64_t pixels = (y1 - y0) * ww, first = y0 * ww;
    acc* sum = sums.mine();
    const scalar_t* planes = input + n * s.plane_sample();
    const operand_t* dy = buffer + column_size;
    if (grad_output.dense) {
      dy = reinterpret_cast<const operand_t*>(grad_output.data) + (n * s.windows_size() + first) * cout;
    } else {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        grad_output.pixels(m, ya, yb, ww, cout, buffer + column_size + before * ww * cout);
      });
    }
    if (pointwise && columns_needed) convert(planes + first * cin, buffer, pixels * cin);
    for (int64_t g = 0; g < s.groups; ++g) {
      int64_t ld_columns = 0;
      const operand_t* columns = group_columns_nhwc(s, input, g, n, y0, y1, buffer, &ld_columns);
      operand_gemm<scalar_t>(true, false, cog, depth, pixels, 1, dy + g * cog, std::max<int64_t>(cout, 1), columns,
                             std::max<int64_t>(ld_columns, 1), 1, sum + g * cog * depth, std::max<int64_t>(depth, 1));
    }
  });
  sums.total_into(grad_weight);
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
