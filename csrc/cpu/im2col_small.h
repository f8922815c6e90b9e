// im2col of small planes by register permutes (AVX-512 BW): a sample's
// plane of at most 64 values (two vectors of bfloat16, four of float32) is
// loaded once, and each vector of a tap's column row (up to 64 window
// positions) is a two-source permute of it (vpermt2w; float32: two
// vpermt2ps and a blend) under a mask that zeroes the positions whose
// pixel lies in the padding. The
// general im2col (im2col.h) spends its time on the bounds of each short
// run of such planes (a 4 x 4 or 7 x 7 plane of a deep layer: a few values
// per row); here the bounds are worked out once per shape, into the
// permute indices.
#pragma once

#include <c10/util/BFloat16.h>

#include <array>
#include <memory>
#include <cstdint>
#include <type_traits>
#include <vector>


#include "precision.h"  // TORCHCONV_STORE16, lanes_mask
#include "window.h"


namespace torchconv {
namespace cpu {

// T: float or at::BFloat16 (the planes' type and the columns').
template <typename T>
class SmallPlaneColumns {
 public:
  static constexpr int kLanes = 64 / static_cast<int>(sizeof(T));  // values per vector
  static constexpr int kValues = 64;                               // the most plane values, and window positions
  static constexpr int kVectors = kValues / kLanes;                 // vectors of each: 2 bfloat16, 4 float32
  using Index = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  using Mask = std::conditional_t<sizeof(T) == 2, uint32_t, uint16_t>;

  // Whether planes of plane_h x plane_w with windows_h x windows_w window
  // positions fit (and the build has the permutes).
  static bool fits(int64_t plane_h, int64_t plane_w, int64_t windows_h, int64_t windows_w) {
    return TORCHCONV_STORE16 && (std::is_same<T, float>::value || std::is_same<T, c10::BFloat16>::value) &&
           plane_h * plane_w <= kValues && windows_h * windows_w <= kValues && windows_h * windows_w > 0;
  }

  // The permutes of window w over planes of plane_h x plane_w (fits holds).
  SmallPlaneColumns(const Window& w, int64_t plane_h, int64_t plane_w, int64_t windows_h, int64_t windows_w)
      : plane_size_(plane_h * plane_w), positions_(windows_h * windows_w), taps_(w.kernel_h * w.kernel_w) {
    indices_.assign(taps_ * kVectors, {});
    masks_.assign(taps_ * kVectors, 0);
    for_each_tap_in_plane(w, plane_h, plane_w, windows_w, positions_, [&](int64_t tap, int64_t p, int64_t pixel) {
      const int64_t vector = tap * kVectors + p / kLanes, lane = p % kLanes;
      indices_[vector][lane] = static_cast<Index>(pixel);
      masks_[vector] |= Mask(1) << lane;
    });
  }

  // The column matrix of one plane: row `tap` (kernel_h * kernel_w rows,
  // ld apart) holds the plane's pixel of that tap at every window position.
  void columns(const T* plane, T* rows, int64_t ld) const {
#if TORCHCONV_STORE16
    const int64_t stored_vectors = (positions_ + kLanes - 1) / kLanes;
    if constexpr (std::is_same<T, c10::BFloat16>::value) {
      const __m512i lo = _mm512_maskz_loadu_epi16(lanes_of(plane_size_), plane);
      const __m512i hi = _mm512_maskz_loadu_epi16(lanes_of(plane_size_ - kLanes), plane + kLanes);
      for (int64_t tap = 0; tap < taps_; ++tap) {
        for (int64_t v = 0; v < stored_vectors; ++v) {
          const int64_t at = tap * kVectors + v;
          const __m512i index = _mm512_loadu_si512(indices_[at].data());
          const __m512i values = _mm512_maskz_permutex2var_epi16(masks_[at], lo, index, hi);
          _mm512_mask_storeu_epi16(rows + tap * ld + v * kLanes, lanes_of(positions_ - v * kLanes), values);
        }
      }
    } else if constexpr (std::is_same<T, float>::value) {
      // Values 0-31 from the first two vectors, 32-63 from the last two:
      // one two-source permute of each pair, and index bit 5 picks.
      __m512 parts[kVectors];
      for (int v = 0; v < kVectors; ++v) {
        parts[v] = _mm512_maskz_loadu_ps(lanes_of(plane_size_ - v * kLanes), plane + v * kLanes);
      }
      const bool four = plane_size_ > 2 * kLanes;
      const __m512i upper = _mm512_set1_epi32(2 * kLanes);
      for (int64_t tap = 0; tap < taps_; ++tap) {
        for (int64_t v = 0; v < stored_vectors; ++v) {
          const int64_t at = tap * kVectors + v;
          const __m512i index = _mm512_loadu_si512(indices_[at].data());
          __m512 values = _mm512_permutex2var_ps(parts[0], index, parts[1]);
          if (four) {
            values = _mm512_mask_blend_ps(_mm512_test_epi32_mask(index, upper), values,
                                          _mm512_permutex2var_ps(parts[2], index, parts[3]));
          }
          values = _mm512_maskz_mov_ps(masks_[at], values);
          _mm512_mask_storeu_ps(rows + tap * ld + v * kLanes, lanes_of(positions_ - v * kLanes), values);
        }
      }
    }
#else
    (void)plane;
    (void)rows;
    (void)ld;
#endif
  }

 private:
#if TORCHCONV_STORE16
  // The first n of a vector's kLanes lanes (lanes_mask, precision.h).
  static Mask lanes_of(int64_t n) { return static_cast<Mask>(lanes_mask(n)); }
#endif

  int64_t plane_size_, positions_, taps_;
  std::vector<std::array<Index, kLanes>> indices_;  // per tap, kVectors vectors of window positions
  std::vector<Mask> masks_;                         // per tap and vector: the positions inside the plane
};

}  // namespace cpu
}  // namespace torchconv
