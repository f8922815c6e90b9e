// The GEMM kernels of the three computations on contiguous (NCHW) tensors:
// im2col/col2im around one GEMM per block of grid rows and group.
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

// ---------------------------------------------------------------- conv2d (NCHW)
//
// Per block of grid rows: out[g][:, block] (Cout/G x L) = W[g] (Cout/G x rows)
// . columns (rows x L), written in place (ldc = the plane) for float32.

template <typename scalar_t>
void conv2d_kernel(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t row_bytes =
      ((columns_needed ? rows : 0) + widening_size<scalar_t>(s.grid_channels)) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * gw;
  // Per thread: the block's columns, then (half dtypes) its float32 output.
  const int64_t column_size = columns_needed ? rows * width : 0;
  const int64_t out_size = widening_size<scalar_t>(s.grid_channels * width);
  for_each_block<acc>(s, blocks, false, column_size + out_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    const scalar_t* image = input + n * s.image_sample();
    scalar_t* result = output + n * s.grid_sample() + first;
    acc* out = accumulator(result, buffer + column_size);
    const int64_t ld_out = is_widened<scalar_t> ? cols : grid;
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* group_image = image + g * s.image_group() * s.image_size();
      const acc* columns = buffer;
      int64_t ld_columns = cols;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          for (int64_t c = 0; c < s.image_group(); ++c)
            convert(group_image + c * s.image_size() + first, buffer + c * cols, cols);
        } else {
          columns = group_image + first;
          ld_columns = grid;
        }
      } else {
        im2col(group_image, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, buffer);
      }
      gemm<scalar_t>(false, false, s.grid_group(), cols, rows, 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), columns, std::max<int64_t>(ld_columns, 1), 0,
                out + g * s.grid_group() * ld_out, std::max<int64_t>(ld_out, 1));
    }
    if (bias != nullptr) add_bias_planes(out, bias, s.grid_channels, cols, ld_out);
    if constexpr (is_widened<scalar_t>) {
      for (int64_t c = 0; c < s.grid_channels; ++c) convert(out + c * cols, result + c * grid, cols);
    }
  });
}

// ------------------------------------------------------- conv_transpose2d (NCHW)
//
// Per block of grid rows: columns (rows x L) = W[g]^T (rows x Cin/G) .
// x[g][:, block] (Cin/G x L), then col2im adds them into the image.

template <typename scalar_t>
void conv_transpose2d_kernel(const ConvShape& s, const GridOperand<scalar_t>& input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  // Here the input lives on the grid and the output is the image.
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const int64_t copied = input.dense ? 0 : s.grid_channels;
  const int64_t row_bytes = ((pointwise ? 0 : rows) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, pointwise ? 1 : disjoint_rows(s.window));
  const int64_t width = blocks.rows * gw;
  ImageAccumulator<scalar_t> image(output, !pointwise);
  // Per thread: the block's columns, then (half dtypes) its widened input.
  const int64_t column_size = pointwise ? 0 : rows * width;
  const int64_t x_size = copied * width;
  for_each_block<acc>(s, blocks, !pointwise, column_size + x_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    const acc* x = nullptr;
    int64_t ld_x = grid;
    if (input.dense) {
      x = reinterpret_cast<const acc*>(input.data) + n * s.grid_sample() + first;
    } else {
      input.planes(n, y0, y1, gw, s.grid_channels, buffer + column_size);
      x = buffer + column_size;
      ld_x = cols;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      acc* group_image = image.data + n * s.image_sample() + g * s.image_group() * s.image_size();
      acc* columns = pointwise ? group_image + first : buffer;
      const int64_t ld_columns = pointwise ? s.image_size() : cols;
      gemm<scalar_t>(true, false, rows, cols, s.grid_group(), 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), x + g * s.grid_group() * ld_x, std::max<int64_t>(ld_x, 1), 0, columns,
                std::max<int64_t>(ld_columns, 1));
      if (!pointwise) col2im(columns, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, group_image);
    }
  });
  if (bias != nullptr) {
    at::parallel_for(0, s.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        add_bias_planes(image.data + n * s.image_sample(), bias, s.image_channels, s.image_size(), s.image_size());
    });
  }
  image.store_into(output);
}

// ---------------------------------------------------------- conv2d_weight (NCHW)


template <typename scalar_t>
void conv2d_weight_kernel(const ConvShape& s, const scalar_t* input, const GridOperand<scalar_t>& grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t copied = grad_output.dense ? 0 : s.grid_channels;
  const int64_t row_bytes = ((columns_needed ? rows : 0) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * gw;
  WeightSums<acc> sums(s.grid_channels * rows);
  // Per thread: the block's columns, then (half dtypes) its widened grad_output.
  const int64_t column_size = columns_needed ? rows * width : 0;
  const int64_t dy_size = copied * width;
  for_each_block<acc>(s, blocks, false, column_size + dy_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    acc* sum = sums.mine();
    const scalar_t* image = input + n * s.image_sample();
    const acc* dy = nullptr;
    int64_t ld_dy = grid;
    if (grad_output.dense) {
      dy = reinterpret_cast<const acc*>(grad_output.data) + n * s.grid_sample() + first;
    } else {
      grad_output.planes(n, y0, y1, gw, s.grid_channels, buffer + column_size);
      dy = buffer + column_size;
      ld_dy = cols;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* group_image = image + g * s.image_group() * s.image_size();
      const acc* columns = buffer;
      int64_t ld_columns = cols;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          for (int64_t c = 0; c < s.image_group(); ++c)
            convert(group_image + c * s.image_size() + first, buffer + c * cols, cols);
        } else {
          columns = group_image + first;
          ld_columns = grid;
        }
      } else {
        im2col(group_image, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, buffer);
      }
      // sum[g] (Cout/G x rows) += dy[g] (Cout/G x L) . columns^T (L x rows)
      gemm<scalar_t>(false, true, s.grid_group(), rows, cols, 1, dy + g * s.grid_group() * ld_dy,
                std::max<int64_t>(ld_dy, 1), columns, std::max<int64_t>(ld_columns, 1), 1,
                sum + g * s.grid_group() * rows, std::max<int64_t>(rows, 1));
    }
  });
  sums.total_into(grad_weight);
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
