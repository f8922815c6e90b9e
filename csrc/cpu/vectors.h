// Vector types for the direct kernels' register tiles (conv/direct.h,
// conv/direct_tiled.h, conv/depthwise_nhwc.h), and the two operations on
// them that need the instruction set's own intrinsics.
#pragma once

#include <cstddef>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace torchconv {
namespace cpu {

// The vectors of the build's instruction set (-march=native: setup.py), as
// GCC/Clang vector types, so one source serves AVX-512 and AVX2 builds (a
// build with neither does not use the float step: kTiledVectorsBuilt).
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

}  // namespace cpu
}  // namespace torchconv
