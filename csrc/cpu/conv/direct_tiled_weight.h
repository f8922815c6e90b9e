// Tiled weight gradient: conv2d_weight summed in registers, a tile of
// result channels x weight columns at a time, from the zero-padded planes
// of the input (the plane side, shape.h) and the gradient's pixels. No
// column matrix is built.
//
//   dW[o, (c, i, j)] = sum over n, y, x of dy[n, o, y, x] * padded[n, c][(y * stride_h + i * dilation_h) * padded_w
//                                                                        + x * stride_w + j * dilation_w]
//
// A tile is tile_channels() result channels o (vectors of them, as the
// forward tiles of direct_tiled.h) x kTilePixels weight columns (c, i, j),
// the GEMM micro-kernel of dW = dy . columns^T with the reduction over the
// pixels: each pixel loads its gradient's channels as vectors (a band's
// gradient is copied pixel-major, channels adjacent) and broadcasts the
// padded pixel each column reads, so every stride and dilation is a fixed
// offset per column and a step of stride_w along a row. A task is a band of
// gradient rows of one sample and group: it pads the band's plane rows and
// copies its gradient once, then every tile passes over the band while both
// are in L2. Each thread sums its tasks into its own partial (WeightSums),
// added up in a fixed order at the end.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../precision.h"
#include "direct_tiled.h"
#include "operands.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// The tile's sums over one band: sums[m][v] += dy[p][v] * column m's padded
// pixel of p, for the band's `rows` x out_w pixels p. dy holds the band's
// pixels `dy_stride` apart (this block's channels adjacent); column m reads
// columns[m] + y * row_step + x * stride_w at pixel (y, x).
template <typename acc>
void weight_tile_step(const acc* dy, int64_t dy_stride, const acc* const* columns, int64_t rows, int64_t out_w,
                      int64_t row_step, int64_t stride_w, acc* tile) {
  using V = Vector<acc>;
  constexpr int64_t lanes = sizeof(V) / sizeof(acc);
  V sums[kTilePixels][kTileVectors];
  std::memcpy(sums, tile, sizeof(sums));
  for (int64_t y = 0; y < rows; ++y) {
    std::array<const acc*, kTilePixels> x;
    for (int m = 0; m < kTilePixels; ++m) x[m] = columns[m] + y * row_step;
    const acc* grad = dy + y * out_w * dy_stride;
    for (int64_t q = 0; q < out_w; ++q, grad += dy_stride) {
      const int64_t at = q * stride_w;
      V g[kTileVectors];
      for (int v = 0; v < kTileVectors; ++v) std::memcpy(&g[v], grad + v * lanes, sizeof(V));
      for (int m = 0; m < kTilePixels; ++m) {
        const V pixel = broadcast<V>(x[m][at]);
        for (int v = 0; v < kTileVectors; ++v) sums[m][v] = fused_multiply_add(g[v], pixel, sums[m][v]);
      }
    }
  }
  std::memcpy(tile, sums, sizeof(sums));
}

// Whether the tiled weight gradient, with tiles of `tile_channels` result
// channels, computes conv2d_weight of shape s: whole tiles of the
// gradient's channels per group; a window that im2col would copy (a
// pointwise one needs no copy: the GEMM reads the planes in place); the
// group's result within L2, where a tile's partial sums are added to it;
// and contiguous operands (channels_last ones the NHWC GEMM reads in place,
// ahead of the tiles). The bounds come from timing the tiles against the
// GEMM kernels shape by shape on the weight gradient alone
// (benchmarks/bench_ops.py; benchmarks/README.md, "Where the time goes").
inline bool uses_tiled_weight_kernel(const ConvShape& s, bool channels_last, int64_t tile_channels) {
  if (channels_last || s.is_pointwise() || s.windows_group() % tile_channels != 0) return false;
  const int64_t columns = s.column_rows(), channels = s.windows_group();
  return columns * channels * static_cast<int64_t>(sizeof(float)) <= kMaxTiledWeightBytes;
}

// The weight gradient of shape s (uses_tiled_weight_kernel holds) from the
// planes `input` and the windows `grad_output`, both read through their
// strides; the result (windows_channels, plane_group, kernel_h, kernel_w),
// contiguous.
template <typename scalar_t>
void tiled_conv2d_weight(const ConvShape& s, const at::Tensor& input, const at::Tensor& grad_output,
                         scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t tile_channels_ = tile_channels<acc>();
  const PaddedPlanes g = conv2d_planes(s);
  const Window& w = s.window;
  const int64_t sources = s.plane_group(), channels = s.windows_group(), columns = s.column_rows();
  const int64_t blocks = channels / tile_channels_, column_tiles = (columns + kTilePixels - 1) / kTilePixels;
  const int64_t tile_size = tile_channels_ * kTilePixels, group_size = blocks * column_tiles * tile_size;
  const int64_t taps = w.kernel_h * w.kernel_w, out_w = g.out_w;
  if (s.batch == 0 || g.out_h == 0 || out_w == 0) {  // no pixels: a zero gradient
    std::fill(grad_weight, grad_weight + s.windows_channels * columns, scalar_t(0));
    return;
  }
  // Bands of gradient rows (rows_per_band, direct_tiled.h): a row is its
  // padded plane rows and its gradient copy.
  const int64_t row_bytes = (sources * g.padded_w * w.stride_h + channels * out_w) * static_cast<int64_t>(sizeof(acc));
  const int64_t band = rows_per_band(g.out_h, row_bytes, 0, 1, s.batch * s.groups);
  const int64_t bands = ceil_div(g.out_h, band), tasks = s.batch * s.groups * bands;
  WeightSums<acc> sums(s.groups * group_size, tasks > 1 ? at::get_num_threads() : 1);
  const scalar_t* x = input.data_ptr<scalar_t>();
  const WindowsOperand<scalar_t, acc> dy(grad_output, false);
  const int64_t* xs = input.strides().data();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> padded(sources * g.band_stride(band));
    std::vector<acc> grad(band * out_w * channels);
    std::array<const acc*, kTilePixels> column_origins;
    acc* sum = sums.mine();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task % bands, gi = task / bands % s.groups, n = task / (bands * s.groups);
      const int64_t y0 = bi * band, rows = std::min(band, g.out_h - y0), stride = g.band_stride(rows);
      g.pad_band<1>(x + n * xs[0] + gi * sources * xs[1], sources, xs + 1, y0 * w.stride_h, rows, padded.data());
      dy.pixels(n, y0, y0 + rows, out_w, channels, grad.data(), gi * channels);
      for (int64_t ct = 0; ct < column_tiles; ++ct) {
        for (int m = 0; m < kTilePixels; ++m) {
          // A last tile's columns past the weight's read column 0, and are dropped.
          const int64_t column = ct * kTilePixels + m < columns ? ct * kTilePixels + m : 0;
          const int64_t c = column / taps, t = column % taps;
          column_origins[m] = padded.data() + c * stride + g.taps[t];
        }
        for (int64_t b = 0; b < blocks; ++b) {
          weight_tile_step(grad.data() + b * tile_channels_, channels, column_origins.data(), rows, out_w,
                           w.stride_h * g.padded_w, w.stride_w,
                           sum + gi * group_size + (b * column_tiles + ct) * tile_size);
        }
      }
    }
  });
  // Tile (b, ct) of group gi holds [m][r] = dW[gi * channels + b * tile_channels + r][ct * kTilePixels + m].
  std::vector<acc> total(s.groups * group_size);
  sums.total_into(total.data());
  for (int64_t gi = 0; gi < s.groups; ++gi) {
    for (int64_t o = 0; o < channels; ++o) {
      const int64_t b = o / tile_channels_, r = o % tile_channels_;
      scalar_t* row = grad_weight + (gi * channels + o) * columns;
      for (int64_t column = 0; column < columns; ++column) {
        const int64_t ct = column / kTilePixels, m = column % kTilePixels;
        row[column] = static_cast<scalar_t>(total[gi * group_size + (b * column_tiles + ct) * tile_size +
                                                  m * tile_channels_ + r]);
      }
    }
  }
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
