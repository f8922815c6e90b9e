// Tiled direct convolution: a window slid over zero-padded planes,
// a tile of result channels x pixels held in vector registers while every
// source channel and tap adds into it. No column matrix is built: the
// GEMM's B operand is read straight from the padded planes.
//
// Geometry. Each source plane (h x w) is copied, a band of rows at a time
// and widened to the operand type, into a zero-padded plane of row stride
// padded_w. Result pixel (y, x) of tap (i, j) reads padded pixel
// (y * stride_h + i * dilation_h) * padded_w + x * stride_w + j * dilation_w:
// a fixed offset per tap, whatever the kernel size or dilation.
//
// Computation. A tile is tile_channels() result channels (vectors of them)
// x kTilePixels consecutive result pixels (raster order, so a tile may end
// one row and start the next: tiled_step's `first_row`):
//
//   tile[p, r] = bias[r] + sum over c, (i, j) of W[r, c, i, j] * padded[c][position(p) + tap(i, j)]
//
// Each step (one c and tap) loads the block's weights as vectors (packed
// [block][c][i][j][r] by pack_tiled_weight, so they are adjacent) and
// broadcasts each of the tile's pixels: tile_channels x kTilePixels
// multiply-adds for kTileVectors vector loads and kTilePixels scalar ones,
// as a GEMM micro-kernel does, with no padding column computed. A task is a
// band of result rows of one sample and group: it pads the band's source
// rows once, and every block of result channels passes over each tile
// while the band's padded rows are in L2; each tile reads the group's whole
// packed weight, which the rule keeps within L2 too.
//
// conv2d at stride 1 or 2 uses it as it is (a stride is a step between the
// pixels' positions in the padded rows). conv_transpose2d at stride 1 is the
// same sum over its input padded by dilation * (kernel - 1) - pad (plus the
// output padding at the bottom and right) with the weight flipped and its
// two channel axes swapped: the pack reads the weight through strides and a
// flip, so neither needs a copy of its own. channels_last sources are
// transposed into the padded planes as they are copied; channels_last
// results take a tile's rows of channels as they are.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "../precision.h"
#include "../transpose8x8.h"
#include "../vectors.h"
#include "direct_tiled_bf16.h"
#include "../../memory_format.h"
#include "operands.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// A tile is tile_channels() result channels (kTileVectors vectors) x
// kTilePixels pixels: 24 accumulators of the 32 AVX-512 registers, 12 of
// AVX2's 16 (which must also hold a step's weight vectors).
constexpr int kTileVectors = 2;
constexpr int kTilePixels = kVectorBytes == 64 ? 12 : 6;

template <typename T>
constexpr int64_t tile_channels() {
  return kTileVectors * static_cast<int64_t>(sizeof(Vector<T>) / sizeof(T));
}

// Where a window reads its source: the padded planes, and the
// result they give. A task pads a band of the planes' rows at a time.
struct PaddedPlanes {
  int64_t h, w;                // a source plane
  int64_t top, left;           // zero rows above it and columns left of it in the padded plane
  int64_t padded_w;            // a padded row
  int64_t out_h, out_w;        // the result plane
  int64_t reach_h;             // padded rows a window spans below its first: (kernel_h - 1) * dilation_h
  int64_t stride_h, stride_w;  // padded rows between the windows of two result rows, columns between two pixels'
  std::vector<int64_t> taps;   // each tap's offset in the padded plane, row-major over (i, j)

  PaddedPlanes(int64_t h, int64_t w, int64_t top, int64_t left, int64_t right, int64_t out_h, int64_t out_w,
               const Window& window)
      : h(h), w(w), top(top), left(left), padded_w(w + left + right), out_h(out_h), out_w(out_w),
        reach_h((window.kernel_h - 1) * window.dilation_h), stride_h(window.stride_h),
        stride_w(window.stride_w) {
    for (int64_t i = 0; i < window.kernel_h; ++i)
      for (int64_t j = 0; j < window.kernel_w; ++j)
        taps.push_back(i * window.dilation_h * padded_w + j * window.dilation_w);
  }

  int64_t out_size() const { return out_h * out_w; }
  // The padded rows of a band of `rows` result rows: the windows' rows,
  // and those of one more result row that a band's last tile may run into
  // (its pixels past the band, computed and dropped). A tile's reads end
  // within them: rows hold a whole tile, so a tile's pixels lie in two
  // rows, and a row's last pixel reaches the padded row's last column.
  int64_t band_rows(int64_t rows) const { return rows * stride_h + reach_h + 1; }
  int64_t band_stride(int64_t rows) const { return band_rows(rows) * padded_w; }

  // The padded rows from y0 of a band of `rows` result rows of `planes`
  // source planes, as `lanes` planes interleaved (1, or 2 for the bfloat16
  // step's pairs; a last pair short of a plane gets a zero one): plane c's
  // pixel (y, x) at source[c * strides[0] + y * strides[1] + x * strides[2]]
  // (any strides: contiguous, channels_last, or the expanded gradient of
  // a sum, read in place), its padded position q at
  // band[((c / lanes) * band_stride(rows) + q) * lanes + c % lanes].
  template <int lanes, typename scalar_t, typename operand_t>
  void pad_band(const scalar_t* source, int64_t planes, const int64_t* strides, int64_t y0, int64_t rows,
                operand_t* band) const {
    const int64_t stride = band_stride(rows), padded_planes = ceil_div(planes, lanes) * lanes;
    const int64_t sc = strides[0], sy = strides[1], sx = strides[2];
    auto at = [&](int64_t c, int64_t q) { return band + ((c / lanes) * stride + q) * lanes + c % lanes; };
    auto zero = [&](int64_t c, int64_t q0, int64_t q1) {
      operand_t* p = at(c, q0);
      for (int64_t q = q0; q < q1; ++q, p += lanes) *p = operand_t(0);
    };
    // Channels adjacent (channels_last): read the row pixel by pixel and
    // write each channel to its plane; otherwise plane by plane.
    const bool pixel_major = sc == 1 && sx != 1;
    for (int64_t k = 0; k < band_rows(rows); ++k) {
      const int64_t y = y0 + k - top, q = k * padded_w;
      const bool inside = y >= 0 && y < h;
      for (int64_t c = 0; c < padded_planes; ++c) {
        if (!inside || c >= planes) {
          zero(c, q, q + padded_w);
          continue;
        }
        zero(c, q, q + left);
        zero(c, q + left + w, q + padded_w);
        if (pixel_major) continue;
        const scalar_t* row = source + c * sc + y * sy;
        if (lanes == 1 && sx == 1) {
          convert(row, at(c, q + left), w);
        } else {
          operand_t* p = at(c, q + left);
          for (int64_t x = 0; x < w; ++x) p[x * lanes] = static_cast<operand_t>(row[x * sx]);
        }
      }
      if (pixel_major && inside) {
        int64_t done = 0;  // planes already copied
#if defined(__AVX__)
        // A word of `lanes` channels is one padded plane's value: a
        // transpose of (pixels x words), unless channels are converted or
        // the pixels are not a whole number of words apart.
        if constexpr (std::is_same<scalar_t, operand_t>::value && sizeof(operand_t) * lanes == 4) {
          if (sx % lanes == 0) {
            done = planes / lanes * lanes;
            transpose_words(source + y * sy, w, planes / lanes, sx / lanes, at(0, q + left), stride);
          }
        }
#endif
        if (done < planes) {
          for (int64_t x = 0; x < w; ++x) {
            const scalar_t* pixel = source + y * sy + x * sx;
            for (int64_t c = done; c < planes; ++c) *at(c, q + left + x) = static_cast<operand_t>(pixel[c]);
          }
        }
      }
    }
  }
};

// Rows per band of the tiled kernels' tasks (bands of rows of one sample
// and group, `units` = samples x groups of them): as many as keep a band's
// copies within kBandBytes (`row_bytes` per row, `extra_rows` more per
// band), so they stay in L2 while every tile of the band passes over them,
// and fewer where the tasks would otherwise be too few for the threads.
inline int64_t rows_per_band(int64_t rows, int64_t row_bytes, int64_t extra_rows, int64_t step, int64_t units) {
  constexpr int64_t kBandBytes = int64_t(256) << 10, kTasksPerThread = 4;
  int64_t band = std::min(rows, std::max<int64_t>(1, (kBandBytes / row_bytes - extra_rows) / step));
  while (band > 1 && units * ceil_div(rows, band) < kTasksPerThread * at::get_num_threads()) band = (band + 1) / 2;
  return band;
}

// The elements of one group's packed weight (pack_tiled_weight).
inline int64_t tiled_weight_size(int64_t block_channels, int64_t channels, int64_t sources, int64_t taps,
                                 int64_t lanes) {
  return ceil_div(channels, block_channels) * ceil_div(sources, lanes) * taps * block_channels * lanes;
}

// The weight of one group, packed for the tiles in `lanes` interleaved
// source channels (as pad_band) into `packed`, zeroed by the caller
// (tiled_weight_size elements): block b's values
// [c / lanes][tap][r][c % lanes] = weight(b * block_channels + r, c, tap),
// left zero past `channels` and `sources`. weight(o, c, i, j) lies at
// w[o * stride_o + c * stride_c + tap], tap = i * kernel_w + j, or the tap
// (kernel_h - 1 - i, kernel_w - 1 - j) when `flip`; it is read in its own
// dtype, which operand_t holds exactly (the operand is the weight's dtype or
// wider). Result channels are packed in parallel.
template <int lanes, typename weight_t, typename operand_t>
void pack_tiled_weight(const weight_t* w, int64_t block_channels, int64_t channels, int64_t sources, int64_t taps,
                       int64_t stride_o, int64_t stride_c, bool flip, operand_t* packed) {
  const int64_t sets = ceil_div(sources, lanes);
  // Packs of a few thousand values stay on the calling thread (a fork costs more).
  constexpr int64_t kMinParallelValues = int64_t(1) << 15;
  const int64_t grain = std::max<int64_t>(1, kMinParallelValues / std::max<int64_t>(sources * taps, 1));
  at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t c = 0; c < sources; ++c) {
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t at = (((o / block_channels) * sets + c / lanes) * taps + t) * block_channels * lanes +
                             (o % block_channels) * lanes + c % lanes;
          packed[at] = static_cast<operand_t>(w[o * stride_o + c * stride_c + (flip ? taps - 1 - t : t)]);
        }
      }
    }
  });
}

// One tile of kTilePixels consecutive result pixels, the first `first_row`
// of them in one row and the rest at the start of the next, of a window at
// column stride `stride` (the next row's first window is `gap` positions
// past where a window after the row's last would be):
//   tile[m * tile_channels + r] = bias[r] + sum over c, t of
//       packed[(c * taps + t) * tile_channels + r] * padded[c * plane_stride + taps[t] + position(m)]
// with position(m) = m * stride for m < first_row, m * stride + gap after. Each step loads
// kTileVectors vectors of weights and broadcasts one pixel per row of
// accumulators: pixel loads never split a cache line, and no padding
// column is computed.
template <typename acc, int stride, int first_row>
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
        const V pixel = broadcast<V>(m < first_row ? x[m * stride] : next_row[m * stride]);
        for (int v = 0; v < kTileVectors; ++v) sums[m][v] = fused_multiply_add(weight[v], pixel, sums[m][v]);
      }
    }
  }
  std::memcpy(tile, sums, sizeof(sums));
}

template <typename acc>
using TiledStep = void (*)(const acc*, int64_t, int64_t, int64_t, const int64_t*, int64_t, const acc*, const acc*,
                           acc*);

// tiled_step<acc, stride, k> at index k - 1, for k in [1, kTilePixels].
template <typename acc, int stride, int... k>
constexpr std::array<TiledStep<acc>, sizeof...(k)> tiled_steps(std::integer_sequence<int, k...>) {
  return {&tiled_step<acc, stride, k + 1>...};
}

// The window strides the float step is compiled for (the same along both axes).
constexpr int64_t kMaxTiledStride = 2;

// The bounds of uses_tiled_kernel's rule.
constexpr int64_t kMinTiledReduction = 64, kMaxTiledReduction = 2304, kMaxTiledWeightBytes = int64_t(576) << 10;
constexpr int64_t kMaxTiledStridedWeightBytes = int64_t(192) << 10;
constexpr int64_t kMaxTiledChannelsLast = 128, kMinTiledChannelsLastWidth = 28;

// Whether the float step has the build's vectors and fused multiply-adds
// to run on. Without them (a portable build) its vectors would be emulated
// and its multiply-adds unfused, while the GEMM kernels still pick their
// AVX-512 variants at run time; the rule's bounds were set by timing builds
// with them only.
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
constexpr bool kTiledVectorsBuilt = true;
#else
constexpr bool kTiledVectorsBuilt = false;
#endif

// The tile of an operand type: the pairs of bfloat16 (direct_tiled_bf16.h),
// or the vectors of the accumulation type.
template <typename operand_t>
struct TileOf {
  static constexpr int lanes = 1;  // source channels interleaved in the padded planes and the packed weight
  static constexpr int64_t pixels = kTilePixels, channels = tile_channels<operand_t>();
};
template <>
struct TileOf<at::BFloat16> {
  static constexpr int lanes = 2;
  static constexpr int64_t pixels = kPairTilePixels, channels = kPairTileChannels;
};

// A tile (tile[m * tile_channels + r]: `count` pixels of `channels`
// result channels) stored as rows of result channels, out[r * out_size +
// m], rounded to scalar_t. With AVX-512 a result channel's pixels are
// gathered into one vector and rounded and stored together (store16),
// instead of one scalar conversion per value.
template <typename scalar_t, typename acc>
void store_tile_by_channel(const acc* tile, int64_t tile_channels, int64_t channels, int64_t count, scalar_t* out,
                           int64_t out_size) {
#if TORCHCONV_STORE16
  if constexpr (std::is_same<acc, float>::value) {
    if (count <= 16) {
      const __m512i pixels = _mm512_mullo_epi32(
          _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
          _mm512_set1_epi32(static_cast<int>(tile_channels)));
      const __mmask16 lanes = static_cast<__mmask16>(lanes_mask(count));
      for (int64_t r = 0; r < channels; ++r) {
        const __m512 values = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, pixels, tile + r, sizeof(float));
        store16(values, lanes, out + r * out_size);
      }
      return;
    }
  }
#endif
  for (int64_t r = 0; r < channels; ++r)
    for (int64_t m = 0; m < count; ++m) out[r * out_size + m] = static_cast<scalar_t>(tile[m * tile_channels + r]);
}

// Where the tiled kernel's result pixel (y, x) lies in the result's planes
// of plane_size pixels: at(y, x). The whole result is its own grid; one
// phase of a strided transposed convolution (direct_tiled_phases.h) is
// every stride-th pixel of every stride-th row.
struct ResultGrid {
  int64_t plane_size;
  int64_t offset, row_step, col_step;

  int64_t at(int64_t y, int64_t x) const { return offset + y * row_step + x * col_step; }
  // Whether a raster run of pixels is a run of adjacent result pixels.
  bool is_raster(int64_t out_w) const { return col_step == 1 && row_step == out_w; }
};

inline ResultGrid whole_result(const PaddedPlanes& g) { return ResultGrid{g.out_size(), 0, g.out_w, 1}; }

// One tiled convolution over a batch's source planes: how they are padded,
// where its results lie, and each group's packed weight (pack_tiled_weight
// for TileOf<operand_t>) one after the other. A convolution is one part;
// a strided transposed convolution's phases are one part each
// (direct_tiled_phases.h).
template <typename operand_t>
struct TiledPart {
  PaddedPlanes planes;
  ResultGrid grid;
  std::vector<operand_t> packed;
};

// The tiled convolution of a batch: source (batch, groups * sources, h, w)
// with strides source_strides (any), result (batch, groups * channels,
// grid pixels), contiguous, or channels_last when `channels_last`, each
// part's pixel (y, x) at part.grid.at(y, x); bias (groups * channels
// values) may be null. Rows at least a tile wide: planes.out_w >=
// TileOf<operand_t>::pixels. A task is one band of rows of every part, so
// that the parts' results, which interleave, are written while in cache.
template <typename scalar_t, typename operand_t>
void tiled_conv(const std::vector<TiledPart<operand_t>>& parts, int64_t batch, int64_t groups, int64_t sources,
                int64_t channels, bool channels_last, const scalar_t* source, const int64_t* source_strides,
                const acc_t<scalar_t>* bias, scalar_t* result) {
  using acc = acc_t<scalar_t>;
  using Tile = TileOf<operand_t>;
  constexpr bool pairs = Tile::lanes == 2;
  static constexpr std::array<TiledStep<acc>, kTilePixels> unit_steps =
      tiled_steps<acc, 1>(std::make_integer_sequence<int, kTilePixels>());
  static constexpr std::array<TiledStep<acc>, kTilePixels> double_steps =
      tiled_steps<acc, 2>(std::make_integer_sequence<int, kTilePixels>());
  const int64_t sets = (sources + Tile::lanes - 1) / Tile::lanes;
  const int64_t blocks = (channels + Tile::channels - 1) / Tile::channels;
  std::vector<acc> block_bias(groups * blocks * Tile::channels, acc(0));
  if (bias != nullptr) {
    for (int64_t gi = 0; gi < groups; ++gi)
      for (int64_t o = 0; o < channels; ++o) block_bias[gi * blocks * Tile::channels + o] = bias[gi * channels + o];
  }
  // Bands of result rows (rows_per_band), as many rows of every part; the
  // scratch stays small for any plane.
  int64_t out_h = 0, padded_w = 0, reach_h = 0, stride_h = 1;
  for (const TiledPart<operand_t>& part : parts) {
    const PaddedPlanes& g = part.planes;
    TORCH_INTERNAL_ASSERT(g.out_w >= Tile::pixels, "tiled_conv: rows narrower than a tile");
    TORCH_INTERNAL_ASSERT(g.stride_w >= 1 && g.stride_w <= kMaxTiledStride && (!pairs || g.stride_w == 1),
                          "tiled_conv: a window stride the steps are not compiled for");
    out_h = std::max(out_h, g.out_h);
    padded_w = std::max(padded_w, g.padded_w);
    reach_h = std::max(reach_h, g.reach_h);
    stride_h = std::max(stride_h, g.stride_h);
  }
  const int64_t row_bytes = sets * Tile::lanes * padded_w * static_cast<int64_t>(sizeof(operand_t));
  const int64_t band = rows_per_band(out_h, row_bytes, reach_h + 1, stride_h, batch * groups);
  const int64_t bands = ceil_div(out_h, band), result_channels = groups * channels;
  int64_t scratch = 0;
  for (const TiledPart<operand_t>& part : parts) scratch = std::max(scratch, part.planes.band_stride(band));
  at::parallel_for(0, batch * groups * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<operand_t> padded(sets * Tile::lanes * scratch);
    alignas(64) acc tile[Tile::channels * Tile::pixels];
    scalar_t rounded[Tile::channels * Tile::pixels];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task % bands, gi = task / bands % groups, n = task / (bands * groups);
      scalar_t* out = result + n * result_channels * parts[0].grid.plane_size;
      for (const TiledPart<operand_t>& part : parts) {
        const PaddedPlanes& g = part.planes;
        const ResultGrid& grid = part.grid;
        const int64_t y0 = bi * band;
        if (y0 >= g.out_h) continue;
        const int64_t rows = std::min(band, g.out_h - y0), stride = g.band_stride(rows);
        const int64_t out_size = grid.plane_size, tap_count = static_cast<int64_t>(g.taps.size());
        const int64_t gap = g.stride_h * g.padded_w - g.out_w * g.stride_w;
        const int64_t block_weight = sets * tap_count * Tile::channels * Tile::lanes;
        const bool raster = grid.is_raster(g.out_w);
        const auto& steps = g.stride_w == 1 ? unit_steps : double_steps;
        g.pad_band<Tile::lanes>(source + n * source_strides[0] + gi * sources * source_strides[1], sources,
                                source_strides + 1, y0 * g.stride_h, rows, padded.data());
        const int64_t band_pixels = rows * g.out_w;
        for (int64_t q = 0; q < band_pixels; q += Tile::pixels) {
          const int64_t y = q / g.out_w, x = q % g.out_w;
          const int64_t first_row = std::min<int64_t>(Tile::pixels, g.out_w - x);
          const int64_t count = std::min<int64_t>(Tile::pixels, band_pixels - q);
          // Tile pixel m's result pixel.
          auto pixel_at = [&](int64_t m) {
            return m < first_row ? grid.at(y0 + y, x + m) : grid.at(y0 + y + 1, m - first_row);
          };
          const operand_t* origin = padded.data() + (y * g.stride_h * g.padded_w + x * g.stride_w) * Tile::lanes;
          for (int64_t b = 0; b < blocks; ++b) {
            const operand_t* weight = part.packed.data() + (gi * blocks + b) * block_weight;
            const acc* tile_bias = block_bias.data() + (gi * blocks + b) * Tile::channels;
            if constexpr (pairs) {
              pair_step_for(first_row)(origin, gap, stride, sets, g.taps.data(), tap_count, weight, tile_bias, tile);
            } else {
              steps[first_row - 1](origin, gap, stride, sources, g.taps.data(), tap_count, weight, tile_bias, tile);
            }
            const int64_t first_channel = gi * channels + b * Tile::channels;
            const int64_t rows_of_tile = std::min<int64_t>(Tile::channels, channels - b * Tile::channels);
            if (channels_last) {
              for (int64_t m = 0; m < count; ++m)
                convert(tile + m * Tile::channels, out + pixel_at(m) * result_channels + first_channel, rows_of_tile);
            } else if (raster) {
              store_tile_by_channel(tile, Tile::channels, rows_of_tile, count,
                                    out + first_channel * out_size + pixel_at(0), out_size);
            } else {
              // Rounded as rows of channels first (as a raster tile is), then
              // placed value by value.
              store_tile_by_channel(tile, Tile::channels, rows_of_tile, count, rounded, Tile::pixels);
              scalar_t* planes_out = out + first_channel * out_size;
              for (int64_t m = 0; m < count; ++m) {
                const int64_t p = pixel_at(m);
                for (int64_t r = 0; r < rows_of_tile; ++r) planes_out[r * out_size + p] = rounded[r * Tile::pixels + m];
              }
            }
          }
        }
      }
    }
  });
}

// conv2d (and its weight gradient, whose result rows are the gradient's):
// its input (the plane side, shape.h) padded by the window's padding.
inline PaddedPlanes conv2d_planes(const ConvShape& s) {
  const Window& w = s.window;
  return PaddedPlanes(s.plane_h, s.plane_w, w.pad_h, w.pad_w, w.pad_w, s.windows_h, s.windows_w, w);
}

// conv_transpose2d at stride 1: its input (the windows side, shape.h)
// padded so that the flipped window's sums are the transposed convolution's
// output (the plane side).
inline PaddedPlanes conv_transpose2d_planes(const ConvShape& s) {
  const Window& w = s.window;
  const int64_t top = w.dilation_h * (w.kernel_h - 1) - w.pad_h, left = w.dilation_w * (w.kernel_w - 1) - w.pad_w;
  // Rows below the input are zero however many a band reads; the columns
  // right of it make the padded row as wide as the output's reach.
  const int64_t right = s.plane_w + w.dilation_w * (w.kernel_w - 1) - s.windows_w - left;
  return PaddedPlanes(s.windows_h, s.windows_w, top, left, right, s.plane_h, s.plane_w, w);
}

// Whether the tiled kernel, with tiles of `tile_pixels` x `tile_channels`,
// computes computation `transposed ? conv_transpose2d : conv2d` of shape s
// and is the kernel to run it: a window whose rows hold whole tiles, at a
// stride the float step is compiled for (conv_transpose2d: 1; conv2d: 1
// or 2, the same along both axes), and for conv_transpose2d a padding no wider than the window's
// reach: a wider one would crop its padded input), with whole tiles of
// result channels, reductions neither too short for a tile's stores and
// padding to pay off nor too long (at most 256 channels x 3 x 3, and the
// group's packed weight, which every tile reads, within L2: 576 KiB is 64
// channels x 2304; at stride 2, whose band of source rows is twice as
// tall, a third of that), and in channels_last, where the padding also
// transposes the source, only windows of more than one tap (the NHWC GEMM
// reads a 1x1 window's columns in place) and small channel counts over
// wide rows. The bounds come from timing the tiles against the GEMM kernels
// shape by shape on the forward and transposed computations alone
// (benchmarks/bench_ops.py; benchmarks/README.md, "Where the time goes").
inline bool uses_tiled_kernel(const ConvShape& s, bool transposed, bool channels_last, int64_t tile_pixels,
                              int64_t tile_channels) {
  const Window& w = s.window;
  const int64_t max_stride = transposed ? 1 : kMaxTiledStride;
  if (w.stride_h != w.stride_w || w.stride_w > max_stride) return false;
  const int64_t out_w = transposed ? s.plane_w : s.windows_w;
  const int64_t sources = transposed ? s.windows_group() : s.plane_group();
  const int64_t channels = transposed ? s.plane_group() : s.windows_group();
  if (out_w < tile_pixels) return false;
  if (transposed && (w.pad_h > w.dilation_h * (w.kernel_h - 1) || w.pad_w > w.dilation_w * (w.kernel_w - 1))) {
    return false;
  }
  const int64_t reduction = sources * w.kernel_h * w.kernel_w;
  if (channels % tile_channels != 0 || reduction < kMinTiledReduction || reduction > kMaxTiledReduction) return false;
  const int64_t max_weight = w.stride_w == 1 ? kMaxTiledWeightBytes : kMaxTiledStridedWeightBytes;
  if (channels * reduction * static_cast<int64_t>(sizeof(float)) > max_weight) return false;
  if (channels_last) {
    return w.kernel_h * w.kernel_w > 1 && sources <= kMaxTiledChannelsLast && channels <= kMaxTiledChannelsLast &&
           out_w >= kMinTiledChannelsLastWidth;
  }
  return true;
}

// One part of a tiled convolution of shape s (the whole of it, or a phase):
// the planes, where its results lie, and its weight (windows_channels,
// plane_group, kh, kw), contiguous: weight(o, c, tap) of result channel o
// and source channel c is conv2d's [o][c], conv_transpose2d's [c][o] at
// the flipped tap.
struct TiledPlan {
  PaddedPlanes planes;
  ResultGrid grid;
  at::Tensor weight;
};

// conv2d (`transposed` false) or conv_transpose2d of shape s by the tiled
// kernel, its parts `plans`, into `out` (contiguous, or channels_last when
// `to_channels_last`). The input is read through its strides, so an
// expanded gradient is not materialised; bias is in the accumulation type
// or undefined.
template <bool transposed>
void tiled_convolution_into(const ConvShape& s, const std::vector<TiledPlan>& plans, const at::Tensor& input,
                            const at::Tensor& bias, bool to_channels_last, at::Tensor& out) {
  constexpr const char* op_name = transposed ? "torchconv_cpp::conv_transpose2d" : "torchconv_cpp::conv2d";
  const int64_t sources = transposed ? s.windows_group() : s.plane_group();
  const int64_t channels = transposed ? s.plane_group() : s.windows_group();
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), op_name, [&] {
    using acc = acc_t<scalar_t>;
    with_gemm_operand<scalar_t>([&](auto operand) {
      using operand_t = decltype(operand);
      using Tile = TileOf<operand_t>;
      std::vector<TiledPart<operand_t>> parts;
      for (const TiledPlan& plan : plans) {
        TORCH_INTERNAL_ASSERT(plan.weight.is_contiguous(), "tiled_convolution_into: a weight read through its strides");
        const int64_t taps = static_cast<int64_t>(plan.planes.taps.size());
        const int64_t stride_o = transposed ? taps : sources * taps, stride_c = transposed ? channels * taps : taps;
        const int64_t group_size = tiled_weight_size(Tile::channels, channels, sources, taps, Tile::lanes);
        TiledPart<operand_t> part{plan.planes, plan.grid, std::vector<operand_t>(s.groups * group_size, operand_t(0))};
        for (int64_t g = 0; g < s.groups; ++g) {
          pack_tiled_weight<Tile::lanes>(plan.weight.data_ptr<scalar_t>() + g * channels * sources * taps,
                                         Tile::channels, channels, sources, taps, stride_o, stride_c, transposed,
                                         part.packed.data() + g * group_size);
        }
        parts.push_back(std::move(part));
      }
      tiled_conv(parts, s.batch, s.groups, sources, channels, to_channels_last, input.data_ptr<scalar_t>(),
                 input.strides().data(), data_or_null<acc>(bias), out.data_ptr<scalar_t>());
    });
  });
}

// conv2d (`transposed` false) or conv_transpose2d of shape s by the tiled
// kernel (uses_tiled_kernel holds), its result `out_sizes`, channels_last
// when `to_channels_last`.
template <bool transposed>
at::Tensor tiled_convolution(const ConvShape& s, const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::IntArrayRef out_sizes, bool to_channels_last) {
  const PaddedPlanes planes = transposed ? conv_transpose2d_planes(s) : conv2d_planes(s);
  at::Tensor out = to_channels_last ? empty_channels_last(out_sizes, input) : at::empty(out_sizes, input.options());
  tiled_convolution_into<transposed>(s, {TiledPlan{planes, whole_result(planes), weight.contiguous()}}, input, bias,
                                     to_channels_last, out);
  return out;
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
