// The GEMM of bfloat16 convolutions on CPUs with AVX512-BF16 (gemm.h's
// entry at capability avx512_bf16): C (float32) = alpha * op(A) op(B) +
// beta * C, with A and B bfloat16 matrices, or float32 ones whose values
// are bfloat16 ones (widened exactly), multiplied with the CPU's bfloat16
// dot products (vdpbf16ps: two products per float32 lane, summed in
// float32).
//
// The same nest as gemm_avx512.cpp's float32 GEMM (an L1-resident A
// micro-panel, B blocks packed into L2, an 8 x 48 tile of 24 zmm
// accumulators), with the packing changed: each packing step rounds
// float32 values to bfloat16 (exact, as they are bfloat16 values; bfloat16
// ones are read as they are) and interleaves pairs of k, the operand layout vdpbf16ps reads: a 32-bit lane
// holds (x[k], x[k + 1]) of one row of A or one column of B. An odd K is
// padded with a zero. A bfloat16 A that is not transposed already holds
// its rows' pairs in that order: with an even K its micro-panels are read
// in place, which saves packing the operand that is often the larger one
// (the columns of a channels_last convolution, the weight of a deep layer).

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "gemm_avx512.h"
#include "gemm_common.h"
#include "target.h"
#include "transpose8x8.h"

namespace torchconv {
namespace cpu {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TORCHCONV_GEMM_BF16_X86 1

using gemm_common::balanced_block;

constexpr int MR = 8;           // rows of a micro-tile
constexpr int L = 16;           // float32 lanes of a zmm
constexpr int NV = 3;           // zmm vectors across a micro-tile
constexpr int NR = NV * L;      // columns of a micro-tile
// The A micro-panel (MR rows x KC bfloat16) in half of a 32 KiB L1D, and
// the packed B block in half of a 1 MiB L2: every A row panel streams it
// again, and each thread keeps one (a larger block measured no faster and
// added its size to the peak memory of small bfloat16 convolutions:
// benchmarks/README.md, "The measurements behind the kernels' fixed bounds").
constexpr int64_t kAPanelBytes = 16 * 1024;
constexpr int64_t kBBlockBytes = 512 * 1024;
constexpr int64_t kMaxPairs = kAPanelBytes / (MR * 4);  // k pairs per A panel

thread_local gemm_common::Scratch tls_packed_b;

// Everything down to TORCHCONV_TARGET_END is compiled for AVX512-BF16 (target.h).
TORCHCONV_TARGET_BEGIN(TORCHCONV_TARGET_AVX512_BF16)

inline __mmask16 first_lanes(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

// The first `valid` of 16 float32 values at p (zeros after), from float32
// or (exactly widened) bfloat16 storage.
inline __m512 load16(__mmask16 valid, const float* p) { return _mm512_maskz_loadu_ps(valid, p); }
inline __m512 load16(__mmask16 valid, const at::BFloat16* p) {
  const __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
}

// The same 16 values as bfloat16.
inline __m256i load16_bf16(__mmask16 valid, const float* p) {
  return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(valid, p));
}
inline __m256i load16_bf16(__mmask16 valid, const at::BFloat16* p) { return _mm256_maskz_loadu_epi16(valid, p); }

// 16 lanes of pairs (low half from `low`, high half from `high`), each
// float32 rounded to bfloat16.
inline __m512i pairs_of(__m512 low, __m512 high) {
  const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(low));
  const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(high));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// dst[kk * W + c] = (x(2kk, c), x(2kk + 1, c)) for a source stored k-major,
// x(k, c) = src[k * ld + c]: zero for c >= w or k >= kc. W: MR or NR.
template <typename T>
void pack_k_major(const T* src, int64_t ld, int64_t kc, int w, int W, uint32_t* dst) {
  for (int64_t k = 0; k < kc; k += 2, dst += W) {
    const T* row = src + k * ld;
    const bool second = k + 1 < kc;
    for (int c0 = 0; c0 < W; c0 += L) {
      const __mmask16 valid = first_lanes(std::max(0, std::min(L, w - c0)));
      const __m512 low = load16(valid, row + c0);
      const __m512 high = second ? load16(valid, row + ld + c0) : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(dst + c0, first_lanes(std::min(L, W - c0)), pairs_of(low, high));
    }
  }
}

// A whole block of B stored k-major (kc rows of nc columns), packed as
// pack_k_major's NR-wide panels one after the other (panel p at dst + p *
// pairs * NR): two source rows at a time, each read across the whole block,
// so that the reads stream instead of walking down the rows panel by panel.
template <typename T>
void pack_block_k_major(const T* src, int64_t ld, int64_t kc, int64_t nc, int64_t pairs, uint32_t* dst) {
  const int64_t padded = ceil_div(nc, NR) * NR;
  for (int64_t k = 0; k < kc; k += 2) {
    const T* row = src + k * ld;
    const bool second = k + 1 < kc;
    for (int64_t col = 0; col < padded; col += L) {
      const __mmask16 valid = first_lanes(static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(L, nc - col))));
      const __m512 low = load16(valid, row + col);
      const __m512 high = second ? load16(valid, row + ld + col) : _mm512_setzero_ps();
      _mm512_storeu_si512(dst + (col / NR) * pairs * NR + (k / 2) * NR + col % NR, pairs_of(low, high));
    }
  }
}

// The same for a source stored k-minor, x(k, c) = src[c * ld + k]: each
// row's run of k rounds to bfloat16 pairs in order, and 8 x 8 blocks of
// pairs are transposed in registers.
template <typename T>
void pack_k_minor(const T* src, int64_t ld, int64_t kc, int w, int W, uint32_t* dst) {
  const int64_t pairs = ceil_div(kc, 2);
  for (int c0 = 0; c0 < W; c0 += 8) {
    const int rows = std::max(0, std::min(8, w - c0));
    for (int64_t kk0 = 0; kk0 < pairs; kk0 += 8) {
      const int64_t k0 = 2 * kk0;
      const __mmask16 valid = first_lanes(static_cast<int>(std::min<int64_t>(16, kc - k0)));
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = i < rows ? (__m256)load16_bf16(valid, src + (c0 + i) * ld + k0) : _mm256_setzero_ps();
      }
      transpose8x8(r);
      const int64_t count = std::min<int64_t>(8, pairs - kk0);
      for (int64_t i = 0; i < count; ++i) _mm256_storeu_ps(reinterpret_cast<float*>(dst + (kk0 + i) * W + c0), r[i]);
    }
  }
}

// Where a micro-kernel reads the pairs of A: a packed micro-panel (pair kk
// of row i at a[kk * MR + i], pack_k_minor / pack_k_major), or A itself
// where its rows already hold the pairs in order (bfloat16 A, not
// transposed, an even K: pair kk of row i is the 32 bits at byte 4 * kk of
// row i, rows a_row_bytes apart), which saves packing A.
enum class PanelA { Packed, InPlace };

template <PanelA panel>
inline __m512bh broadcast_pair(const char* a, int64_t a_row_bytes, int i, int64_t kk) {
  uint32_t pair;
  std::memcpy(&pair, panel == PanelA::InPlace ? a + i * a_row_bytes + 4 * kk : a + 4 * (kk * MR + i), 4);
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
}

// C[0:mr, 0:(nv-1)*L + popcount(last)] = alpha * A B + beta * C from A's
// pairs (PanelA) and a packed B panel (pairs x NR lanes). A tile of few
// accumulators keeps two sets of them, for even and odd pairs, so that
// enough independent sums are in flight to cover the dot product's latency.
template <int mr, int nv, PanelA panel>
void micro_kernel(int64_t pairs, const char* __restrict a, int64_t a_row_bytes, const uint32_t* __restrict b,
                  float* __restrict c, int64_t ldc, float alpha, float beta, __mmask16 last) {
  constexpr int ways = mr * nv <= 8 ? 2 : 1;
  __m512 acc[ways][mr][nv];
#pragma GCC unroll 2
  for (int w = 0; w < ways; ++w)
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) acc[w][i][j] = _mm512_setzero_ps();
  const auto step = [&](__m512(&sums)[mr][nv], int64_t kk) __attribute__((always_inline)) {
    __m512bh bv[nv];
#pragma GCC unroll 3
    for (int j = 0; j < nv; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + kk * NR + j * L);
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i) {
      const __m512bh av = broadcast_pair<panel>(a, a_row_bytes, i, kk);
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) sums[i][j] = _mm512_dpbf16_ps(sums[i][j], av, bv[j]);
    }
  };
  int64_t kk = 0;
  for (; kk + ways <= pairs; kk += ways) {
#pragma GCC unroll 2
    for (int w = 0; w < ways; ++w) step(acc[w], kk + w);
  }
  for (; kk < pairs; ++kk) step(acc[0], kk);
  if constexpr (ways == 2) {
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) acc[0][i][j] = _mm512_add_ps(acc[0][i][j], acc[1][i][j]);
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
#pragma GCC unroll 3
    for (int j = 0; j < nv; ++j) {
      const __mmask16 lanes = j == nv - 1 ? last : __mmask16(0xFFFF);
      __m512 r = alpha == 1.0f ? acc[0][i][j] : _mm512_mul_ps(acc[0][i][j], va);
      if (beta != 0.0f) {  // beta == 0 never reads C
        const __m512 old = _mm512_maskz_loadu_ps(lanes, ci + j * L);
        r = beta == 1.0f ? _mm512_add_ps(r, old) : _mm512_fmadd_ps(old, vb, r);
      }
      _mm512_mask_storeu_ps(ci + j * L, lanes, r);
    }
  }
}

using KernelFn = void (*)(int64_t, const char*, int64_t, const uint32_t*, float*, int64_t, float, float, __mmask16);

template <PanelA panel, int mr, int... nv>
constexpr std::array<KernelFn, NV> kernel_row(std::integer_sequence<int, nv...>) {
  return {&micro_kernel<mr, nv + 1, panel>...};
}

template <PanelA panel, int... mr>
constexpr std::array<std::array<KernelFn, NV>, MR> kernel_table(std::integer_sequence<int, mr...>) {
  return {kernel_row<panel, mr + 1>(std::make_integer_sequence<int, NV>{})...};
}

// kKernels<panel>[mr - 1][nv - 1]: the micro-kernel of an mr x nv-vector tile.
template <PanelA panel>
constexpr std::array<std::array<KernelFn, NV>, MR> kKernels =
    kernel_table<panel>(std::make_integer_sequence<int, MR>{});

// Whether the micro-kernels read A in place (PanelA::InPlace).
template <typename T>
bool reads_a_in_place(bool transA, int64_t K) {
  return std::is_same<T, at::BFloat16>::value && !transA && K % 2 == 0;
}

// Single-threaded blocked GEMM; M, N, K > 0 and alpha != 0.
template <typename T>
void blocked_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                  const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t KC = balanced_block(K, 2 * kMaxPairs, 2);
  const int64_t nc_max = std::max<int64_t>(NR, kBBlockBytes / (KC * 2) / NR * NR);
  const int64_t NC = balanced_block(N, nc_max, NR);
  auto* packed_b = static_cast<uint32_t*>(tls_packed_b.get(static_cast<size_t>(KC / 2 * NC) * sizeof(uint32_t)));
  alignas(64) uint32_t packed_a[kMaxPairs * MR];
  const bool in_place = reads_a_in_place<T>(transA, K);
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc), pairs = ceil_div(kc, 2);
      if (transB) {
        for (int64_t p = 0; p * NR < nc; ++p) {
          const int64_t col = jc + p * NR;
          const int w = static_cast<int>(std::min<int64_t>(NR, N - col));
          pack_k_minor(B + col * ldb + pc, ldb, kc, w, NR, packed_b + p * pairs * NR);
        }
      } else {
        pack_block_k_major(B + pc * ldb + jc, ldb, kc, nc, pairs, packed_b);
      }
      // Later K blocks add onto the earlier ones' partial result.
      const float beta_k = pc == 0 ? beta : 1.0f;
      for (int64_t ir = 0; ir < M; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, M - ir));
        const char* a = reinterpret_cast<const char*>(packed_a);
        int64_t a_row_bytes = 0;
        if (in_place) {
          a = reinterpret_cast<const char*>(A + ir * lda + pc);
          a_row_bytes = lda * static_cast<int64_t>(sizeof(T));
        } else if (transA) {
          pack_k_major(A + pc * lda + ir, lda, kc, mr, MR, packed_a);
        } else {
          pack_k_minor(A + ir * lda + pc, lda, kc, mr, MR, packed_a);
        }
        const auto& kernels = in_place ? kKernels<PanelA::InPlace> : kKernels<PanelA::Packed>;
        for (int64_t p = 0; p * NR < nc; ++p) {
          const int64_t col = jc + p * NR;
          const int w = static_cast<int>(std::min<int64_t>(NR, N - col));
          const int nv = static_cast<int>(ceil_div(w, L));
          kernels[mr - 1][nv - 1](pairs, a, a_row_bytes, packed_b + p * pairs * NR, C + ir * ldc + col, ldc, alpha,
                                  beta_k, first_lanes(w - (nv - 1) * L));
        }
      }
    }
  }
}

TORCHCONV_TARGET_END

// Single-threaded GEMM of any shape: with no product to compute (alpha ==
// 0 or K == 0) only C's scaling is left, which the float32 GEMM does.
template <typename T>
void serial_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (alpha == 0.0f || K <= 0) {
    avx512::gemm<float>(transA, transB, M, N, 0, alpha, nullptr, 1, nullptr, 1, beta, C, ldc);
  } else {
    blocked_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

#else
#define TORCHCONV_GEMM_BF16_X86 0
#endif

}  // namespace

namespace avx512 {

template <typename T>
void gemm_bf16(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, float beta, float* c, int64_t ldc) {
#if TORCHCONV_GEMM_BF16_X86
  gemm_common::parallel_gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                             serial_gemm<T>);
#else
  TORCH_CHECK(false, "torchconv: the AVX512-BF16 GEMM is not built for this CPU");
#endif
}

template void gemm_bf16<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                               int64_t, float, float*, int64_t);
template void gemm_bf16<at::BFloat16>(bool, bool, int64_t, int64_t, int64_t, float, const at::BFloat16*, int64_t,
                                      const at::BFloat16*, int64_t, float, float*, int64_t);

}  // namespace avx512
}  // namespace cpu
}  // namespace torchconv
