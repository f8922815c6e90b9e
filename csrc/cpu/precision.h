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

// n elements of src converted into dst (rounding to nearest even when
// narrowing to a half dtype).
template <typename from_t, typename to_t>
inline void convert(const from_t* src, to_t* dst, int64_t n) {
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
