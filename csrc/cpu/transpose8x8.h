// An 8 x 8 transpose of 32-bit elements held in eight ymm registers (one
// row each), for the GEMMs' packing (gemm_avx512.cpp,
// gemm_avx512_bf16.cpp): 8 loads, 24 shuffles and 8 stores instead of 64
// scalar gathers. Compiled for AVX whatever the build's flags, so that the
// GEMM files can call it from their AVX-512 code.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace torchconv {
namespace cpu {
namespace {

__attribute__((target("avx"), always_inline)) inline void transpose8x8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m256 u[8];
  for (int h = 0; h < 2; ++h) {
    const int o = 4 * h;
    u[o + 0] = _mm256_shuffle_ps(t[o + 0], t[o + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[o + 1] = _mm256_shuffle_ps(t[o + 0], t[o + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[o + 2] = _mm256_shuffle_ps(t[o + 1], t[o + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[o + 3] = _mm256_shuffle_ps(t[o + 1], t[o + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// dst[k * dst_stride + x] = src[x * src_stride + k] for x < rows, k < cols:
// a matrix of 32-bit words transposed 8 x 8 through registers, the edges
// word by word (through memcpy: the words need not be aligned). For the
// tiled kernel's channels_last sources (direct_tiled.h), where a word is a
// float32 channel or a pair of bfloat16 ones, and float32 planes read as
// pixels (WindowsOperand::pixels, operands.h).
__attribute__((target("avx"))) inline void transpose_words(const void* src, int64_t rows, int64_t cols,
                                                            int64_t src_stride, void* dst, int64_t dst_stride) {
  const float* from = static_cast<const float*>(src);
  float* to = static_cast<float*>(dst);
  const int64_t row_end = rows / 8 * 8, col_end = cols / 8 * 8;
  for (int64_t x = 0; x < row_end; x += 8) {
    for (int64_t k = 0; k < col_end; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(from + (x + i) * src_stride + k);
      transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(to + (k + i) * dst_stride + x, r[i]);
    }
  }
  auto copy = [&](int64_t x, int64_t k) {
    std::memcpy(to + k * dst_stride + x, from + x * src_stride + k, sizeof(float));
  };
  for (int64_t x = 0; x < row_end; ++x)
    for (int64_t k = col_end; k < cols; ++k) copy(x, k);
  for (int64_t x = row_end; x < rows; ++x)
    for (int64_t k = 0; k < cols; ++k) copy(x, k);
}

}  // namespace
}  // namespace cpu
}  // namespace torchconv

#endif
