// The bfloat16 step of the tiled direct kernel (direct_tiled.h), compiled
// for AVX512-BF16 in direct_tiled_bf16.cpp whatever the build's flags.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace torchconv {
namespace cpu {
namespace conv {

// A bfloat16 tile: 32 result channels x 12 pixels.
constexpr int kPairTilePixels = 12;
constexpr int64_t kPairTileChannels = 32;

// One tile, its first `first_row` pixels in one row and the rest at the
// start of the next (position(m) = m, or m + gap after first_row):
//   tile[m * 32 + r] = bias[r] + sum over pairs p, taps t, j in {0, 1} of
//       packed[((p * tap_count + t) * 32 + r) * 2 + j] * padded[2 * (p * plane_stride + taps[t] + position(m)) + j]
// where padded interleaves source channels 2p and 2p + 1.
using PairStep = void (*)(const at::BFloat16* padded, int64_t gap, int64_t plane_stride, int64_t pairs,
                          const int64_t* taps, int64_t tap_count, const at::BFloat16* packed, const float* bias,
                          float* tile);

// The step for tiles whose first `first_row` (1 to 12) pixels lie in one
// row; null where it is not built (not x86).
PairStep pair_step_for(int64_t first_row);

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
