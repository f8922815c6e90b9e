// Tiled direct convolution: a stride-1 window slid over zero-padded planes,
// a tile of result channels x pixels held in vector registers while every
// source channel and tap adds into it. No column matrix is built: the
// GEMM's B operand is read straight from the padded planes.
//
// Geometry. Each source plane (h x w) is copied, widened to the accumulation
// type, into a zero-padded plane of padded_h x padded_w, row stride
// padded_w. Result pixel (y, x) of tap (i, j) reads padded pixel
// (y + i * dilation_h) * padded_w + x + j * dilation_w: a fixed offset per
// tap, whatever the kernel size or dilation.
//
// Computation. A tile is tile_channels() result channels (vectors of them)
// x kTilePixels consecutive result pixels (raster order, so a tile may end
// one row and start the next: tiled_step's `first_row`):
//
//   tile[p, r] = bias[r] + sum over c, (i, j) of W[r, c, i, j] * padded[c][position(p) + tap(i, j)]
//
// Each step (one c and tap) loads the block's weights as vectors (packed
// [block][c][i][j][r] by pack_tiled_weight, so they are adjacent and aligned)
// and broadcasts each of the tile's pixels: tile_channels x kTilePixels
// multiply-adds for kTileVectors vector loads and kTilePixels scalar ones,
// as a GEMM micro-kernel does, with no padding column computed. A task is a
// run of tiles of one sample and group; every block of result channels
// passes over the run while its padded rows are in L1.
//
// conv2d at stride 1 uses it as it is. conv_transpose2d at stride 1 is the
// same sum over its input padded by dilation * (kernel - 1) - pad (plus the
// output padding at the bottom and right) with the weight flipped and its
// two channel axes swapped: the pack reads the weight through strides and a
// flip, so neither needs a copy of its own. channels_last sources are
// transposed into the padded planes as they are copied; channels_last
// results take a tile's rows of channels as they are.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "../precision.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// The vectors of the build's instruction set (-march=native: setup.py), as
// GCC/Clang vector types, so one source serves AVX-512, AVX2 and SSE.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif

template <typename T>
struct VectorOf;
template <>
struct VectorOf<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct VectorOf<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vector = typename VectorOf<T>::type;

// a * b + c with one rounding where the instruction set has FMA: an ISO C++
// build does not contract `a * b + c` by itself (-ffp-contract=off).
template <typename V>
inline V fused_multiply_add(V a, V b, V c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 4) return _mm512_fmadd_ps(a, b, c);
  if constexpr (sizeof(V) == 64 && sizeof(a[0]) == 8) return _mm512_fmadd_pd(a, b, c);
#endif
#if defined(__FMA__)
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 4) return _mm256_fmadd_ps(a, b, c);
  if constexpr (sizeof(V) == 32 && sizeof(a[0]) == 8) return _mm256_fmadd_pd(a, b, c);
#endif
  return a * b + c;
}

// x in every lane, as one broadcast (`V{} + x` would add to zero first: an
// addition the compiler must keep, as 0 + -0 is +0).
template <typename V, typename T>
inline V broadcast(T x) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(T) == 4) return _mm512_set1_ps(x);
  if constexpr (sizeof(V) == 64 && sizeof(T) == 8) return _mm512_set1_pd(x);
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32 && sizeof(T) == 4) return _mm256_set1_ps(x);
  if constexpr (sizeof(V) == 32 && sizeof(T) == 8) return _mm256_set1_pd(x);
#endif
  V v;
  for (size_t i = 0; i < sizeof(V) / sizeof(T); ++i) v[i] = x;
  return v;
}

// A tile is tile_channels() result channels (kTileVectors vectors) x
// kTilePixels pixels: 24 accumulators of the 32 AVX-512 registers, 12 of
// AVX2's 16 (which must also hold a step's weight vectors).
constexpr int kTileVectors = 2;
#if defined(__AVX512F__)
constexpr int kTilePixels = 12;
#else
constexpr int kTilePixels = 6;
#endif

template <typename T>
constexpr int64_t tile_channels() {
  return kTileVectors * static_cast<int64_t>(sizeof(Vector<T>) / sizeof(T));
}

// Where a stride-1 window reads its source: the padded planes, and the result they give.
struct PaddedPlanes {
  int64_t h, w;                // a source plane
  int64_t top, left;           // zero rows above it and columns left of it in the padded plane
  int64_t padded_h, padded_w;  // the padded plane
  int64_t out_h, out_w;        // the result plane
  std::vector<int64_t> taps;   // each tap's offset in the padded plane, row-major over (i, j)

  PaddedPlanes(int64_t h, int64_t w, int64_t top, int64_t left, int64_t bottom, int64_t right, int64_t out_h,
               int64_t out_w, const Window& window)
      : h(h), w(w), top(top), left(left), padded_h(h + top + bottom), padded_w(w + left + right), out_h(out_h),
        out_w(out_w) {
    for (int64_t i = 0; i < window.kernel_h; ++i)
      for (int64_t j = 0; j < window.kernel_w; ++j)
        taps.push_back(i * window.dilation_h * padded_w + j * window.dilation_w);
  }

  int64_t out_size() const { return out_h * out_w; }
  // Padded planes lie this far apart: the pixels of a last tile past the
  // result's end read one row and a tile past the padded plane, zero.
  int64_t plane_stride() const { return (padded_h + 1) * padded_w + kTilePixels; }

  // A source plane into a padded plane (plane_stride elements), widened.
  template <typename scalar_t, typename acc>
  void pad(const scalar_t* plane, acc* padded) const {
    clear_border(padded);
    for (int64_t y = 0; y < h; ++y) convert(plane + y * w, padded + (top + y) * padded_w + left, w);
  }
  // Row y of `planes` channels_last source planes (pixels `pixel_stride`
  // apart) into the padded planes whose borders clear_border zeroed.
  template <typename scalar_t, typename acc>
  void pad_row(const scalar_t* row, int64_t pixel_stride, int64_t planes, int64_t y, acc* padded) const {
    acc* at = padded + (top + y) * padded_w + left;
    for (int64_t x = 0; x < w; ++x) {
      const scalar_t* pixel = row + x * pixel_stride;
      for (int64_t c = 0; c < planes; ++c) at[c * plane_stride() + x] = static_cast<acc>(pixel[c]);
    }
  }
  // The zeros of a padded plane: rows above and below the source plane,
  // columns left and right of it, the slack after it.
  template <typename acc>
  void clear_border(acc* padded) const {
    std::fill(padded, padded + top * padded_w, acc(0));
    for (int64_t y = 0; y < h; ++y) {
      acc* row = padded + (top + y) * padded_w;
      std::fill(row, row + left, acc(0));
      std::fill(row + left + w, row + padded_w, acc(0));
    }
    std::fill(padded + (top + h) * padded_w, padded + plane_stride(), acc(0));
  }
};

// The weight of one group, packed for the tiles: block b's values
// [c][tap][r] = weight(b * tile_channels + r, c, tap), zero past `channels`.
// weight(o, c, i, j) lies at w[o * stride_o + c * stride_c + tap], tap = i *
// kernel_w + j, or the tap (kernel_h - 1 - i, kernel_w - 1 - j) when `flip`.
template <typename acc>
std::vector<acc> pack_tiled_weight(const acc* w, int64_t channels, int64_t sources, int64_t taps, int64_t stride_o,
                                   int64_t stride_c, bool flip) {
  constexpr int64_t kTileChannels = tile_channels<acc>();
  const int64_t blocks = (channels + kTileChannels - 1) / kTileChannels;
  std::vector<acc> packed(blocks * sources * taps * kTileChannels, acc(0));
  for (int64_t o = 0; o < channels; ++o) {
    acc* block = packed.data() + (o / kTileChannels) * sources * taps * kTileChannels + o % kTileChannels;
    for (int64_t c = 0; c < sources; ++c) {
      for (int64_t t = 0; t < taps; ++t) {
        block[(c * taps + t) * kTileChannels] = w[o * stride_o + c * stride_c + (flip ? taps - 1 - t : t)];
      }
    }
  }
  return packed;
}

// One tile of kTilePixels consecutive result pixels, the first `first_row`
// of them in one row and the rest at the start of the next (a padded row is
// `gap` positions longer than a result row):
//   tile[m * tile_channels + r] = bias[r] + sum over c, t of
//       packed[(c * taps + t) * tile_channels + r] * padded[c * plane_stride + taps[t] + position(m)]
// with position(m) = m for m < first_row, m + gap after. Each step loads
// kTileVectors vectors of weights and broadcasts one pixel per row of
// accumulators: pixel loads never split a cache line, weight loads are
// aligned, and no padding column is computed.
template <typename acc, int first_row>
void tiled_step(const acc* padded, int64_t gap, int64_t plane_stride, int64_t sources, const int64_t* taps,
                int64_t tap_count, const acc* packed, const acc* bias, acc* tile) {
  using V = Vector<acc>;
  constexpr int64_t lanes = sizeof(V) / sizeof(acc), channels = tile_channels<acc>();
  V sums[kTilePixels][kTileVectors];
  for (int v = 0; v < kTileVectors; ++v) {
    V b;
    std::memcpy(&b, bias + v * lanes, sizeof(V));
    for (int m = 0; m < kTilePixels; ++m) sums[m][v] = b;
  }
  for (int64_t c = 0; c < sources; ++c) {
    const acc* plane = padded + c * plane_stride;
    for (int64_t t = 0; t < tap_count; ++t, packed += channels) {
      const acc* x = plane + taps[t];
      const acc* next_row = x + gap;
      V weight[kTileVectors];
      for (int v = 0; v < kTileVectors; ++v) std::memcpy(&weight[v], packed + v * lanes, sizeof(V));
      for (int m = 0; m < kTilePixels; ++m) {
        const V pixel = broadcast<V>(m < first_row ? x[m] : next_row[m]);
        for (int v = 0; v < kTileVectors; ++v) sums[m][v] = fused_multiply_add(weight[v], pixel, sums[m][v]);
      }
    }
  }
  std::memcpy(tile, sums, sizeof(sums));
}

template <typename acc>
using TiledStep = void (*)(const acc*, int64_t, int64_t, int64_t, const int64_t*, int64_t, const acc*, const acc*,
                           acc*);

// tiled_step<acc, k> at index k - 1, for k in [1, kTilePixels].
template <typename acc, int... k>
constexpr std::array<TiledStep<acc>, sizeof...(k)> tiled_steps(std::integer_sequence<int, k...>) {
  return {&tiled_step<acc, k + 1>...};
}

// The bounds of uses_tiled_kernel's rule.
constexpr int64_t kMinTiledReduction = 64, kMaxTiledReduction = 1152;
constexpr int64_t kMaxTiledChannelsLast = 64, kMinTiledChannelsLastWidth = 28;

// Whether the tiles fit the result's rows: a tile's pixels lie in at most two rows.
inline bool rows_hold_tiles(int64_t out_w) { return out_w >= kTilePixels; }

// The tiled convolution of a batch: source (batch, groups * sources, h, w),
// result (batch, groups * channels, out_h, out_w), both contiguous; packed
// holds each group's packed weight (pack_tiled_weight) one after the other;
// bias (groups * channels values) may be null. Both channels_last when
// `channels_last`. Needs rows_hold_tiles(g.out_w).
template <typename scalar_t>
void tiled_conv(const PaddedPlanes& g, int64_t batch, int64_t groups, int64_t sources, int64_t channels,
                bool channels_last, const scalar_t* source, const std::vector<acc_t<scalar_t>>& packed, const acc_t<scalar_t>* bias,
                scalar_t* result) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t kTileChannels = tile_channels<acc>();
  constexpr int64_t kTilesPerTask = 4;
  static constexpr std::array<TiledStep<acc>, kTilePixels> steps =
      tiled_steps<acc>(std::make_integer_sequence<int, kTilePixels>());
  const int64_t stride = g.plane_stride(), planes = groups * sources, out_size = g.out_size();
  const int64_t gap = g.padded_w - g.out_w, tap_count = static_cast<int64_t>(g.taps.size());
  const int64_t tiles = (out_size + kTilePixels - 1) / kTilePixels, runs = (tiles + kTilesPerTask - 1) / kTilesPerTask;
  const int64_t blocks = (channels + kTileChannels - 1) / kTileChannels;
  const int64_t block_weight = sources * tap_count * kTileChannels;
  std::vector<acc> block_bias(groups * blocks * kTileChannels, acc(0));
  if (bias != nullptr) {
    for (int64_t gi = 0; gi < groups; ++gi)
      for (int64_t o = 0; o < channels; ++o) block_bias[gi * blocks * kTileChannels + o] = bias[gi * channels + o];
  }
  // Samples padded at once: a few MiB of padded planes, at least one sample.
  constexpr int64_t kPaddedBytes = int64_t(4) << 20;
  const int64_t chunk = std::max<int64_t>(1, std::min(batch, kPaddedBytes / (planes * stride * int64_t(sizeof(acc)))));
  std::vector<acc> padded(chunk * planes * stride);
  for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
    const int64_t count = std::min(chunk, batch - n0);
    if (channels_last) {
      at::parallel_for(0, count * planes, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) g.clear_border(padded.data() + p * stride);
      });
      at::parallel_for(0, count * g.h, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t n = r / g.h, y = r % g.h;
          g.pad_row(source + ((n0 + n) * g.h + y) * g.w * planes, planes, planes, y, padded.data() + n * planes * stride);
        }
      });
    } else {
      at::parallel_for(0, count * planes, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) g.pad(source + (n0 * planes + p) * g.h * g.w, padded.data() + p * stride);
      });
    }
    // A task is a run of tiles of one sample and group, for every block of
    // result channels in turn: the blocks share the run's padded rows while
    // they are in L1.
    at::parallel_for(0, count * groups * runs, 1, [&](int64_t begin, int64_t end) {
      alignas(64) acc tile[kTileChannels * kTilePixels];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t run = task % runs, gi = task / runs % groups, n = task / (runs * groups);
        const acc* planes_in = padded.data() + (n * groups + gi) * sources * stride;
        const int64_t result_channels = groups * channels;
        for (int64_t t = run * kTilesPerTask; t < std::min(tiles, (run + 1) * kTilesPerTask); ++t) {
          const int64_t q = t * kTilePixels, y = q / g.out_w, x = q % g.out_w;
          const int64_t first_row = std::min<int64_t>(kTilePixels, g.out_w - x);
          const int64_t count_in_plane = std::min<int64_t>(kTilePixels, out_size - q);
          for (int64_t b = 0; b < blocks; ++b) {
            steps[first_row - 1](planes_in + y * g.padded_w + x, gap, stride, sources, g.taps.data(), tap_count,
                                 packed.data() + (gi * blocks + b) * block_weight,
                                 block_bias.data() + (gi * blocks + b) * kTileChannels, tile);
            const int64_t first_channel = gi * channels + b * kTileChannels;
            const int64_t rows = std::min<int64_t>(kTileChannels, channels - b * kTileChannels);
            scalar_t* out = result + (n0 + n) * result_channels * out_size;
            if (channels_last) {
              for (int64_t m = 0; m < count_in_plane; ++m)
                convert(tile + m * kTileChannels, out + (q + m) * result_channels + first_channel, rows);
            } else {
              out += first_channel * out_size + q;
              for (int64_t r = 0; r < rows; ++r)
                for (int64_t m = 0; m < count_in_plane; ++m)
                  out[r * out_size + m] = static_cast<scalar_t>(tile[m * kTileChannels + r]);
            }
          }
        }
      }
    });
  }
}

// conv2d at stride 1: the image padded by the window's padding.
inline PaddedPlanes conv2d_planes(const ConvShape& s) {
  const Window& w = s.window;
  return PaddedPlanes(s.image_h, s.image_w, w.pad_h, w.pad_w, w.pad_h, w.pad_w, s.grid_h, s.grid_w, w);
}

// conv_transpose2d at stride 1: its input (the grid) padded so that the
// flipped window's sums are the transposed convolution's output (the image).
inline PaddedPlanes conv_transpose2d_planes(const ConvShape& s) {
  const Window& w = s.window;
  const int64_t top = w.dilation_h * (w.kernel_h - 1) - w.pad_h, left = w.dilation_w * (w.kernel_w - 1) - w.pad_w;
  const int64_t bottom = s.image_h + w.dilation_h * (w.kernel_h - 1) - s.grid_h - top;
  const int64_t right = s.image_w + w.dilation_w * (w.kernel_w - 1) - s.grid_w - left;
  return PaddedPlanes(s.grid_h, s.grid_w, top, left, bottom, right, s.image_h, s.image_w, w);
}

// Whether the tiled kernel computes computation `transposed ? conv_transpose2d
// : conv2d` of shape s, and is the kernel to run it: a stride-1 window
// whose rows hold whole tiles (and for conv_transpose2d a padding no wider
// than the window's reach: a wider one would crop its padded input), with
// whole tiles of result channels, reductions neither too short for a tile's
// stores and padding to pay off nor too long for a block's weight to stay
// in L2, and in channels_last, where the padding also transposes the
// source, only small channel counts over wide rows. Measured against the
// GEMM kernels shape by shape (benchmarks/README.md, "Tiled kernels").
inline bool uses_tiled_kernel(const ConvShape& s, bool transposed, bool channels_last) {
  const Window& w = s.window;
  if (w.stride_h != 1 || w.stride_w != 1) return false;
  const int64_t out_w = transposed ? s.image_w : s.grid_w;
  const int64_t sources = transposed ? s.grid_group() : s.image_group();
  const int64_t channels = transposed ? s.image_group() : s.grid_group();
  if (!rows_hold_tiles(out_w)) return false;
  if (transposed && (w.pad_h > w.dilation_h * (w.kernel_h - 1) || w.pad_w > w.dilation_w * (w.kernel_w - 1))) return false;
  const int64_t reduction = sources * w.kernel_h * w.kernel_w;
  if (channels % tile_channels<float>() != 0 || reduction < kMinTiledReduction || reduction > kMaxTiledReduction) return false;
  if (channels_last) return sources <= kMaxTiledChannelsLast && channels <= kMaxTiledChannelsLast && out_w >= kMinTiledChannelsLastWidth;
  return true;
}

// conv2d: weight (grid_channels, image_group, kh, kw), contiguous.
template <typename scalar_t>
void conv2d_tiled(const ConvShape& s, bool channels_last, const scalar_t* input, const acc_t<scalar_t>* weight,
                  const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t taps = s.window.kernel_h * s.window.kernel_w, sources = s.image_group(), channels = s.grid_group();
  std::vector<acc> packed;
  for (int64_t g = 0; g < s.groups; ++g) {
    const std::vector<acc> group = pack_tiled_weight(weight + g * channels * sources * taps, channels, sources, taps,
                                                     sources * taps, taps, false);
    packed.insert(packed.end(), group.begin(), group.end());
  }
  tiled_conv(conv2d_planes(s), s.batch, s.groups, sources, channels, channels_last, input, packed, bias, output);
}

// conv_transpose2d: weight (grid_channels, image_group, kh, kw), contiguous.
template <typename scalar_t>
void conv_transpose2d_tiled(const ConvShape& s, bool channels_last, const scalar_t* input, const acc_t<scalar_t>* weight,
                            const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t taps = s.window.kernel_h * s.window.kernel_w, sources = s.grid_group(), channels = s.image_group();
  std::vector<acc> packed;
  for (int64_t g = 0; g < s.groups; ++g) {
    const std::vector<acc> group = pack_tiled_weight(weight + g * sources * channels * taps, channels, sources, taps,
                                                     taps, channels * taps, true);
    packed.insert(packed.end(), group.begin(), group.end());
  }
  tiled_conv(conv_transpose2d_planes(s), s.batch, s.groups, sources, channels, channels_last, input, packed, bias, output);
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
