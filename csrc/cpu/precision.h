// Half precision (float16, bfloat16) in the CPU kernels.
//
// Every kernel computes in acc_t<scalar_t> (at::opmath_type: float32 for
// both half dtypes; float32 and float64 are their own). Half values are
// widened where they are read, sums run in float32, and each result is
// rounded to the tensor's dtype once, when it is stored: as torch's own CPU
// kernels do, and so that a sum of halves neither overflows nor loses its
// small terms. For float32 and float64 these helpers compile to nothing (no
// buffer, no copy): those dtypes pay nothing for the half ones.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// Every CPU entry point dispatches over float32, float64, float16 and bfloat16.
#define TORCHCONV_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, __VA_ARGS__)

namespace torchconv {
namespace cpu {

template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

// True for the dtypes that compute in a wider type (float16, bfloat16).
template <typename scalar_t>
constexpr bool is_widened = !std::is_same<scalar_t, acc_t<scalar_t>>::value;

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define TORCHCONV_STORE16 1
// The mask of the first n lanes of a vector of up to 64 (none for n <= 0,
// all 64 for n >= 64), cast to the width of a vector's mask by its user.
inline uint64_t lanes_mask(int64_t n) {
  if (n <= 0) return 0;
  return n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
}

// The lanes of v (float32) that `lanes` selects, stored at dst as to_t:
// rounded to nearest even for the half dtypes, bit for bit c10's scalar
// conversions (a NaN narrows to bfloat16's 0x7FC0; denormals kept: not
// AVX512-BF16's vcvtneps2bf16, which flushes them to zero; float16 by the
// F16C rounding, IEEE's).
template <typename to_t>
inline void store16(__m512 v, __mmask16 lanes, to_t* dst) {
  if constexpr (std::is_same<to_t, float>::value) {
    _mm512_mask_storeu_ps(dst, lanes, v);
  } else if constexpr (std::is_same<to_t, c10::BFloat16>::value) {
    const __m512i bits = _mm512_castps_si512(v);
    // Round to nearest even: add 0x7FFF plus the lowest kept bit, keep the high half.
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd)), 16);
    rounded = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, _mm512_set1_epi32(0x7FC0));
    _mm512_mask_cvtepi32_storeu_epi16(dst, lanes, rounded);
  } else {
    static_assert(std::is_same<to_t, c10::Half>::value, "store16: float32, bfloat16 or float16");
    const __m256i halves = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(dst, lanes, halves);
  }
}
#else
#define TORCHCONV_STORE16 0
#endif

// n elements of src converted into dst (rounding to nearest even when
// narrowing to a half dtype).
template <typename from_t, typename to_t>
inline void convert(const from_t* src, to_t* dst, int64_t n) {
#if TORCHCONV_STORE16
  // The half dtypes <-> float32 sixteen at a time (store16's rounding), bit
  // for bit c10's scalar conversions below.
  if constexpr (std::is_same<from_t, c10::BFloat16>::value && std::is_same<to_t, float>::value) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)));
    }
    for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
    return;
  } else if constexpr (std::is_same<from_t, float>::value &&
                       (std::is_same<to_t, c10::BFloat16>::value || std::is_same<to_t, c10::Half>::value)) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) store16(_mm512_loadu_ps(src + i), __mmask16(0xFFFF), dst + i);
    if (i < n) {
      const __mmask16 tail = static_cast<__mmask16>(lanes_mask(n - i));
      store16(_mm512_maskz_loadu_ps(tail, src + i), tail, dst + i);
    }
    return;
  } else if constexpr (std::is_same<from_t, c10::Half>::value && std::is_same<to_t, float>::value) {
    // float16 <-> float32 with the F16C conversions of AVX-512 F: exact
    // widening, IEEE round to nearest even (denormals kept), as c10's.
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    }
    for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
    return;
  }
#endif
  if constexpr (std::is_same<from_t, to_t>::value) {
    // A call of memcpy costs more than a copy of a few elements (the rows
    // of small planes).
    if (n >= 16) {
      if (src != dst) std::memcpy(dst, src, n * sizeof(to_t));
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<to_t>(src[i]);
  }
}

// n elements of data to read in acc_t: data itself when it is acc_t, else
// its widened copy in buffer (n elements).
template <typename scalar_t>
inline const acc_t<scalar_t>* widened(const scalar_t* data, int64_t n, acc_t<scalar_t>* buffer) {
  if constexpr (is_widened<scalar_t>) {
    convert(data, buffer, n);
    return buffer;
  } else {
    return data;
  }
}

// Where to accumulate a result destined for data: data itself when it is
// acc_t, else buffer, to be rounded into data by store().
template <typename scalar_t>
inline acc_t<scalar_t>* accumulator(scalar_t* data, acc_t<scalar_t>* buffer) {
  if constexpr (is_widened<scalar_t>) {
    return buffer;
  } else {
    return data;
  }
}

// Rounds n accumulated elements into data; nothing to do when the
// accumulator was data itself.
template <typename scalar_t>
inline void store(const acc_t<scalar_t>* accumulated, int64_t n, scalar_t* data) {
  if constexpr (is_widened<scalar_t>) convert(accumulated, data, n);
}

// Scratch for one of the above: n elements for a half dtype, none otherwise.
template <typename scalar_t>
constexpr int64_t widening_size(int64_t n) {
  return is_widened<scalar_t> ? n : 0;
}

}  // namespace cpu
}  // namespace torchconv
