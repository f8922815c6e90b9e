// im2col of whole float32 planes by gathers (AVX-512): each tap's column
// row is one masked gather of the plane per 16 window positions, at offsets
// worked out once per shape, the positions whose pixel lies in the padding
// masked to zero. im2col.h copies a column row one windows row at a time,
// which on narrow strided windows rows (a 7-pixel row at stride 2) is
// mostly bounds and short copies; planes of at most 64 values take the
// register permutes of im2col_small.h instead.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "precision.h"  // TORCHCONV_STORE16, lanes_mask
#include "window.h"

namespace torchconv {
namespace cpu {

class GatheredColumns {
 public:
  static constexpr int kLanes = 16;
  // The most window positions a plane's column rows are gathered for
  // (four gathers per tap). Timed against im2col.h's rows: 7 x 7 and 8 x 8
  // windows at stride 2 gained 5-18%, 14 x 14 and 16 x 16 ones lost up to 8%
  // (benchmarks/README.md).
  static constexpr int64_t kMaxPositions = 64;

  // Whether planes of plane_h x plane_w with windows_h x windows_w window
  // positions are gathered (and the build has the gathers).
  static bool fits(int64_t plane_h, int64_t plane_w, int64_t windows_h, int64_t windows_w) {
    return TORCHCONV_STORE16 && plane_h * plane_w < (int64_t(1) << 31) && windows_h * windows_w <= kMaxPositions &&
           windows_h * windows_w > 0;
  }

  // The gathers of window w over planes of plane_h x plane_w (fits holds).
  GatheredColumns(const Window& w, int64_t plane_h, int64_t plane_w, int64_t windows_h, int64_t windows_w)
      : positions_(windows_h * windows_w), vectors_((positions_ + kLanes - 1) / kLanes),
        taps_(w.kernel_h * w.kernel_w) {
    offsets_.assign(taps_ * vectors_ * kLanes, 0);
    masks_.assign(taps_ * vectors_, 0);
    for_each_tap_in_plane(w, plane_h, plane_w, windows_w, positions_, [&](int64_t tap, int64_t p, int64_t pixel) {
      offsets_[tap * vectors_ * kLanes + p] = static_cast<int32_t>(pixel);
      masks_[tap * vectors_ + p / kLanes] |= uint16_t(1) << (p % kLanes);
    });
  }

  // The column matrix of one plane: row `tap` (kernel_h * kernel_w rows,
  // ld apart) holds the plane's pixel of that tap at every window position.
  void columns(const float* plane, float* rows, int64_t ld) const {
#if TORCHCONV_STORE16
    for (int64_t tap = 0; tap < taps_; ++tap) {
      for (int64_t v = 0; v < vectors_; ++v) {
        const int64_t at = tap * vectors_ + v;
        const __m512i offsets = _mm512_loadu_si512(offsets_.data() + at * kLanes);
        const __m512 values = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), masks_[at], offsets, plane, sizeof(float));
        _mm512_mask_storeu_ps(rows + tap * ld + v * kLanes, static_cast<__mmask16>(lanes_mask(positions_ - v * kLanes)),
                              values);
      }
    }
#else
    (void)plane;
    (void)rows;
    (void)ld;
#endif
  }

 private:
  int64_t positions_, vectors_, taps_;
  std::vector<int32_t> offsets_;  // per tap, vectors_ * kLanes window positions' plane offsets
  std::vector<uint16_t> masks_;   // per tap and vector: the positions inside the plane
};

}  // namespace cpu
}  // namespace torchconv
