// The tiled direct kernel's step for bfloat16 at capability avx512_bf16
// (direct_tiled_bf16.h; the kernel is direct_tiled.h's): the same tile of
// 32 result channels x 12 pixels, summed with the CPU's bfloat16 dot
// products (vdpbf16ps: two products per float32 lane, summed in float32).
//
// vdpbf16ps reads pairs along the reduction, so the operands come in pairs
// of source channels: the padded planes interleave channels (2p, 2p + 1)
// position by position (one 32-bit lane holds both at a pixel, broadcast
// whole), and the packed weight holds, per pair and tap, 32 result
// channels x the pair's two values. A step is a pair and a tap: two vector
// loads of weights, twelve broadcasts, twenty-four dot products, for twice
// the multiply-adds of a float32 step.
//
// Everything AVX-512 is compiled under a target pragma, as in
// gemm_avx512_bf16.cpp, so that the file builds with any flags; the kernel
// calls it only at capability avx512_bf16.

#include "../target.h"
#include "direct_tiled_bf16.h"

#include <array>
#include <cstring>
#include <utility>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TORCHCONV_TILED_BF16_X86 1
#include <immintrin.h>
#else
#define TORCHCONV_TILED_BF16_X86 0
#endif

namespace torchconv {
namespace cpu {
namespace conv {
namespace {

#if TORCHCONV_TILED_BF16_X86

// Everything down to TORCHCONV_TARGET_END is compiled for AVX512-BF16 (target.h).
TORCHCONV_TARGET_BEGIN(TORCHCONV_TARGET_AVX512_BF16)

template <int first_row>
void pair_step(const at::BFloat16* padded, int64_t gap, int64_t plane_stride, int64_t pairs, const int64_t* taps,
               int64_t tap_count, const at::BFloat16* packed, const float* bias, float* tile) {
  constexpr int kVectors = kPairTileChannels / 16;
  __m512 sums[kPairTilePixels][kVectors];
  for (int v = 0; v < kVectors; ++v) {
    const __m512 b = _mm512_loadu_ps(bias + 16 * v);
    for (int m = 0; m < kPairTilePixels; ++m) sums[m][v] = b;
  }
  for (int64_t p = 0; p < pairs; ++p) {
    const at::BFloat16* plane = padded + 2 * p * plane_stride;
    for (int64_t t = 0; t < tap_count; ++t, packed += 2 * kPairTileChannels) {
      const at::BFloat16* x = plane + 2 * taps[t];
      const at::BFloat16* next_row = x + 2 * gap;
      __m512bh weight[kVectors];
      for (int v = 0; v < kVectors; ++v) weight[v] = (__m512bh)_mm512_loadu_si512(packed + 32 * v);
      for (int m = 0; m < kPairTilePixels; ++m) {
        int32_t both;
        std::memcpy(&both, (m < first_row ? x : next_row) + 2 * m, sizeof(both));
        const __m512bh pixel = (__m512bh)_mm512_set1_epi32(both);
        for (int v = 0; v < kVectors; ++v) sums[m][v] = _mm512_dpbf16_ps(sums[m][v], weight[v], pixel);
      }
    }
  }
  for (int m = 0; m < kPairTilePixels; ++m)
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(tile + m * kPairTileChannels + 16 * v, sums[m][v]);
}

TORCHCONV_TARGET_END

template <int... k>
constexpr std::array<PairStep, sizeof...(k)> pair_steps(std::integer_sequence<int, k...>) {
  return {&pair_step<k + 1>...};
}

constexpr std::array<PairStep, kPairTilePixels> kPairSteps =
    pair_steps(std::make_integer_sequence<int, kPairTilePixels>());

#endif

}  // namespace

PairStep pair_step_for(int64_t first_row) {
#if TORCHCONV_TILED_BF16_X86
  return kPairSteps[first_row - 1];
#else
  (void)first_row;
  return nullptr;
#endif
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
