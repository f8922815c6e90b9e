// GotoBLAS/BLIS-style GEMM with an AVX-512 micro-kernel, threaded over
// blocks of C: what gemm.h's entry runs on CPUs with AVX-512 (declared in
// gemm_avx512.h; the contract is gemm.h's).
//
// Loop nest (per block of C, single thread):
//
//   for jc in N by NC:                 B block KC x NC, packed, lives in L2
//     for pc in K by KC:
//       for ir in M by MR:             A micro-panel MR x KC, lives in L1
//         pack A[ir:+MR, pc:+KC]        (if transpose_a; else read in place, see a_in_place)
//         for jr in NC by NR:          stream one B panel from L2
//           (ir == 0: pack B[pc:+KC, jc+jr:+NR] first, transposing if transpose_b,
//            unless B is used in place, see kInPlaceMaxRows)
//           micro-kernel: C[ir:+MR, jc+jr:+NR] (+)= alpha * Apanel @ Bpanel
//
// This is the BLIS nest with the two innermost loops swapped: the L1-resident
// operand is the A micro-panel (MR*KC*4 B = 16 KiB) instead of the B one,
// because an 8x48 tile's B panel (48*KC*4 B) would not fit the 32 KiB L1D
// for a useful KC, whereas the A panel does. Each B panel is then streamed
// from L2 once per MR rows: 3 zmm loads per 24 FMAs, far below L2 bandwidth.
// Packing sources are prefetched into L2 by the kernel call that precedes
// each packing step (see Prefetch).
//
// Everything AVX-512 is compiled under a target pragma, so this file builds
// with plain -O2/-O3 and gemm.cpp chooses this GEMM at run time
// (capability.h).

#include "gemm_avx512.h"
#include "gemm_common.h"
#include "target.h"
#include "transpose8x8.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TORCHCONV_GEMM_X86 1
#include <immintrin.h>
#else
#define TORCHCONV_GEMM_X86 0
#endif

namespace torchconv {
namespace cpu {
namespace {

#if TORCHCONV_GEMM_X86

using gemm_common::balanced_block;

// C = beta * C without reading C when beta == 0 (BLAS semantics).
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  if (beta == T(1)) {
    return;
  }
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));
    } else {
      for (int64_t j = 0; j < N; ++j) {
        c[j] *= beta;
      }
    }
  }
}

// ------------------------------------------------------------- blocking --
//
// Micro-tile MR x (NV zmm vectors): 8 x 48 floats / 8 x 24 doubles.
// Register budget (32 zmm): 24 accumulators + 3 B vectors + 1 broadcast A
// = 28. Per k step: 3 vector loads + 8 broadcasts feed 24 FMAs, so the FMA
// pipe (one zmm FMA per cycle on Zen 4, two on Intel server cores) stays
// the bottleneck. MR = 8 divides the usual channel counts (M = C_out or
// C_in*kh*kw), so M edges are rare; N (= H_out*W_out) is often ragged,
// and NV-templated kernels cover its remainder 16 lanes at a time with only
// the last vector masked. Wider tiles are no better: 8x32 (16 acc) to
// 14x32 (28 acc) all reach the FMA peak with L1-resident operands
// (benchmarks/gemm_bench/bench.py).
constexpr int MR = 8;
constexpr int NV = 3;

// A micro-panel MR x KC kept in L1D (32 KiB on Zen 4 / recent Intel) next
// to the B panel stream: half of L1D gives KC = 512 floats / 256 doubles.
constexpr int64_t kAPanelBytes = 16 * 1024;
// Packed B block KC x NC kept in L2 (1 MiB or more per core on the
// AVX-512 CPUs of AMD and Intel); half of it leaves room for C tiles and the A panels
// passing through.
constexpr int64_t kBBlockBytes = 1024 * 1024;

thread_local gemm_common::Scratch tls_bblock;

// Everything down to TORCHCONV_TARGET_END is compiled for AVX-512 (target.h).
TORCHCONV_TARGET_BEGIN(TORCHCONV_TARGET_AVX512)

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int L = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static reg maskz_loadu(mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void storeu(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static void mask_storeu(float* p, mask m, reg v) { _mm512_mask_storeu_ps(p, m, v); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static mask tail_mask(int n) { return static_cast<mask>((1u << n) - 1u); }
};

template <>
struct Vec<double> {
  using reg = __m512d;
  using mask = __mmask8;
  static constexpr int L = 8;
  static reg zero() { return _mm512_setzero_pd(); }
  static reg set1(double x) { return _mm512_set1_pd(x); }
  static reg loadu(const double* p) { return _mm512_loadu_pd(p); }
  static reg maskz_loadu(mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void storeu(double* p, reg v) { _mm512_storeu_pd(p, v); }
  static void mask_storeu(double* p, mask m, reg v) { _mm512_mask_storeu_pd(p, m, v); }
  static reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static mask tail_mask(int n) { return static_cast<mask>((1u << n) - 1u); }
};

template <typename T>
constexpr int kNR = NV * Vec<T>::L;

// A source region to pull into L2 while a micro-kernel runs, so that the
// next packing step copies from L2 instead of stalling on L3/DRAM: without
// it, packing is a large share of a small-M product's time
// (benchmarks/gemm_bench/bench.py).
// Iteration k of the kernel's loop (k < count) touches the NR-element run
// starting at base + (k % rows) * ld + (k / rows) * NR: a walk down `rows`
// rows, then the next NR columns. One NR run is 3 cache lines per k step,
// next to 24 FMAs, so the extra loads are free. Lines go to L2, not L1:
// a whole panel (up to 96 KiB) would flush the L1-resident A panel.
template <typename T>
struct Prefetch {
  const T* base = nullptr;  // nullptr: nothing to prefetch
  int64_t ld = 0;
  int64_t rows = 1;
  int64_t count = 0;
};

// The source of a panel of `w` columns/rows stored k-major (row k at
// src + k * ld, kc rows) or k-minor (w rows of kc elements each).
template <typename T>
Prefetch<T> prefetch_panel(const T* src, int64_t ld, int64_t kc, int64_t w, bool k_major) {
  if (k_major) {
    return {src, ld, kc, kc};
  }
  return {src, ld, w, w * ceil_div(kc, kNR<T>)};
}

// C[0:mr, 0:(nv-1)*L + popcount(last)] = alpha * A @ B + beta * C, where
// a is a packed MR x kc panel (k-major, MR values per k), or with
// a_in_place A's own rows (row i at a + i * lda, k-minor), and b a kc x NR
// panel with row stride ldbk (NR when packed, ldb when B is used in place).
// Only the first mr rows / nv vectors are computed; the rest of the packed
// layout is padding. The last vector of every row is loaded/stored under
// `last` (all ones for a full tile). Meanwhile `pf` is prefetched into L2.
template <typename T, int mr, int nv, bool a_in_place>
void micro_kernel(int64_t kc, const T* __restrict a, int64_t lda, const T* __restrict b, int64_t ldbk,
                  T* __restrict c, int64_t ldc, T alpha, T beta,
                  typename Vec<T>::mask last, const Prefetch<T>& pf) {
  using V = Vec<T>;
  using reg = typename V::reg;
  constexpr int L = V::L;
  constexpr int NR = kNR<T>;

  reg acc[mr][nv];
#pragma GCC unroll 8
  for (int i = 0; i < mr; ++i) {
#pragma GCC unroll 3
    for (int j = 0; j < nv; ++j) {
      acc[i][j] = V::zero();
    }
  }

  const char* pf_col = reinterpret_cast<const char*>(pf.base);
  const char* pf_row = pf_col;
  const int64_t pf_ld = pf.ld * static_cast<int64_t>(sizeof(T));
  int64_t pf_left = pf.base == nullptr ? 0 : pf.count;
  int64_t pf_rows_left = pf.rows;
  for (int64_t k = 0; k < kc; ++k) {
    if (pf_left > 0) {
      // Bytes 0, 64, 128 and the last element: every line of the run
      // (3 or 4 lines, depending on its alignment).
      _mm_prefetch(pf_row, _MM_HINT_T1);
      _mm_prefetch(pf_row + 64, _MM_HINT_T1);
      _mm_prefetch(pf_row + 128, _MM_HINT_T1);
      _mm_prefetch(pf_row + (NR - 1) * sizeof(T), _MM_HINT_T1);
      --pf_left;
      pf_row += pf_ld;
      if (--pf_rows_left == 0) {
        pf_rows_left = pf.rows;
        pf_col += NR * sizeof(T);
        pf_row = pf_col;
      }
    }
    reg bv[nv];
#pragma GCC unroll 3
    for (int j = 0; j < nv; ++j) {
      bv[j] = V::loadu(b + j * L);
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i) {
      const reg av = V::set1(a_in_place ? a[i * lda] : a[i]);
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) {
        acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
      }
    }
    a += a_in_place ? 1 : MR;
    b += ldbk;
  }

  // Write-back. Branch once per tile; the j == nv - 1 tests are resolved
  // at compile time after unrolling.
  const reg va = V::set1(alpha);
  if (beta == T(0)) {
    const bool unit = alpha == T(1);
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i) {
      T* ci = c + i * ldc;
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) {
        const reg r = unit ? acc[i][j] : V::mul(acc[i][j], va);
        if (j == nv - 1) {
          V::mask_storeu(ci + j * L, last, r);
        } else {
          V::storeu(ci + j * L, r);
        }
      }
    }
  } else {
    const bool unit = beta == T(1);
    const reg vb = V::set1(beta);
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i) {
      T* ci = c + i * ldc;
#pragma GCC unroll 3
      for (int j = 0; j < nv; ++j) {
        const bool tail = j == nv - 1;
        reg old = tail ? V::maskz_loadu(last, ci + j * L) : V::loadu(ci + j * L);
        if (!unit) {
          old = V::mul(old, vb);
        }
        const reg r = V::fmadd(acc[i][j], va, old);
        if (tail) {
          V::mask_storeu(ci + j * L, last, r);
        } else {
          V::storeu(ci + j * L, r);
        }
      }
    }
  }
}

template <typename T>
using KernelFn = void (*)(int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, T, T,
                          typename Vec<T>::mask, const Prefetch<T>&);

template <typename T, bool a_in_place, int mr, int... nv>
constexpr std::array<KernelFn<T>, NV> kernel_row(std::integer_sequence<int, nv...>) {
  return {&micro_kernel<T, mr, nv + 1, a_in_place>...};
}

template <typename T, bool a_in_place, int... mr>
constexpr std::array<std::array<KernelFn<T>, NV>, MR> kernel_table(
    std::integer_sequence<int, mr...>) {
  return {kernel_row<T, a_in_place, mr + 1>(std::make_integer_sequence<int, NV>{})...};
}

// kKernels<T, a_in_place>[mr - 1][nv - 1]: the micro-kernel for an mr x
// nv-vector tile, reading A packed or in place.
template <typename T, bool a_in_place>
constexpr std::array<std::array<KernelFn<T>, NV>, MR> kKernels =
    kernel_table<T, a_in_place>(std::make_integer_sequence<int, MR>{});

// dst[k*W + c] = c < w ? src[k*ld + c] : 0, for k < kc, c < W.
// Used for B (W = NR) and for transposed A (W = MR): the source rows are
// already k-major, so this is a (masked) copy.
template <typename T>
void pack_direct(const T* src, int64_t ld, int64_t kc, int w, int W, T* dst) {
  using V = Vec<T>;
  constexpr int L = V::L;
  if (w == W && W % L == 0) {
    for (int64_t k = 0; k < kc; ++k) {
      for (int c0 = 0; c0 < W; c0 += L) {
        V::storeu(dst + k * W + c0, V::loadu(src + k * ld + c0));
      }
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    for (int c0 = 0; c0 < W; c0 += L) {
      const int cnt = std::min(L, W - c0);
      const int valid = std::max(0, std::min(cnt, w - c0));
      V::mask_storeu(dst + k * W + c0, V::tail_mask(cnt),
                     V::maskz_loadu(V::tail_mask(valid), src + k * ld + c0));
    }
  }
}

// Square blocks transposed in registers by pack_transposed: 8x8 floats or
// 4x4 doubles, one ymm per row.
template <typename T>
struct Tile;

template <>
struct Tile<float> {
  using reg = __m256;
  static constexpr int S = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static reg maskz_loadu(__mmask8 m, const float* p) { return _mm256_maskz_loadu_ps(m, p); }
  static void storeu(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static void transpose(reg r[8]) { transpose8x8(r); }
};

template <>
struct Tile<double> {
  using reg = __m256d;
  static constexpr int S = 4;
  static reg zero() { return _mm256_setzero_pd(); }
  static reg loadu(const double* p) { return _mm256_loadu_pd(p); }
  static reg maskz_loadu(__mmask8 m, const double* p) { return _mm256_maskz_loadu_pd(m, p); }
  static void storeu(double* p, reg v) { _mm256_storeu_pd(p, v); }
  static void transpose(reg r[4]) {
    const reg t0 = _mm256_unpacklo_pd(r[0], r[1]);
    const reg t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const reg t2 = _mm256_unpacklo_pd(r[2], r[3]);
    const reg t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

// dst[k*W + c] = c < w ? src[c*ld + k] : 0, for k < kc, c < W (W a
// multiple of the tile size S). Used for non-transposed A whose rows alias (W = MR) and
// transposed B (W = NR): the source is c-major, so S x S blocks are
// transposed in registers (8x8 floats: 8 loads + 24 shuffles + 8 stores,
// ~0.2 cycles per element, versus ~1 for a scalar gather).
template <typename T>
void pack_transposed(const T* src, int64_t ld, int64_t kc, int w, int W, T* dst) {
  using X = Tile<T>;
  using reg = typename X::reg;
  constexpr int S = X::S;
  for (int c0 = 0; c0 < W; c0 += S) {
    const int rows = std::max(0, std::min(S, w - c0));
    const T* s = src + c0 * ld;
    T* d = dst + c0;
    int64_t k0 = 0;
    if (rows == S) {
      for (; k0 + S <= kc; k0 += S) {
        reg r[S];
#pragma GCC unroll 8
        for (int i = 0; i < S; ++i) {
          r[i] = X::loadu(s + i * ld + k0);
        }
        X::transpose(r);
#pragma GCC unroll 8
        for (int i = 0; i < S; ++i) {
          X::storeu(d + (k0 + i) * W, r[i]);
        }
      }
    }
    // Ragged rows (zero-filled) and the k tail, under masks.
    for (; k0 < kc; k0 += S) {
      const int kn = static_cast<int>(std::min<int64_t>(S, kc - k0));
      const __mmask8 km = static_cast<__mmask8>((1u << kn) - 1u);
      reg r[S];
#pragma GCC unroll 8
      for (int i = 0; i < S; ++i) {
        r[i] = i < rows ? X::maskz_loadu(km, s + i * ld + k0) : X::zero();
      }
      X::transpose(r);
      for (int i = 0; i < kn; ++i) {
        X::storeu(d + (k0 + i) * W, r[i]);
      }
    }
  }
}

// B is read in place instead of packed when it is not transposed, its rows
// are not a multiple of 4 KiB apart (rows that alias in L1/L2 sets would
// evict each other), and there are at most this many rows of C: each row
// panel re-reads the strided source (extra TLB and L2 traffic), while
// packing costs a copy per element up front: on conv shapes reading in
// place wins up to about this many rows and loses beyond
// (benchmarks/gemm_bench/bench.py).
constexpr int64_t kInPlaceMaxRows = 256;
constexpr int64_t kAliasBytes = 4096;

// One KC x NC block of B, as NR-wide panels: packed on demand, or (full
// panels of a non-transposed B, see kInPlaceMaxRows) used in place.
template <typename T>
struct BBlock {
  const T* B;
  int64_t ldb;
  bool transB;
  bool in_place;
  int64_t N;
  int64_t jc, nc, pc, kc;

  int64_t panels() const { return ceil_div(nc, kNR<T>); }
  int64_t col(int64_t p) const { return jc + p * kNR<T>; }
  int width(int64_t p) const {
    return static_cast<int>(std::min<int64_t>(kNR<T>, N - col(p)));
  }
  const T* source(int64_t p) const {
    return transB ? B + col(p) * ldb + pc : B + pc * ldb + col(p);
  }
  bool packed(int64_t p) const { return !(in_place && width(p) == kNR<T>); }
  Prefetch<T> prefetch(int64_t p) const {
    return prefetch_panel(source(p), ldb, kc, width(p), !transB);
  }
  void pack(int64_t p, T* bblock) const {
    if (!packed(p)) {
      return;
    }
    T* dst = bblock + p * kc * kNR<T>;
    if (transB) {
      pack_transposed(source(p), ldb, kc, width(p), kNR<T>, dst);
    } else {
      pack_direct(source(p), ldb, kc, width(p), kNR<T>, dst);
    }
  }
  const T* panel(int64_t p, const T* bblock) const {
    return packed(p) ? bblock + p * kc * kNR<T> : source(p);
  }
  int64_t panel_ld(int64_t p) const { return packed(p) ? kNR<T> : ldb; }
};

// Single-threaded blocked GEMM; requires M, N, K > 0 and alpha != 0.
template <typename T>
void blocked_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                  const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  using V = Vec<T>;
  constexpr int L = V::L;
  constexpr int NR = kNR<T>;
  constexpr int64_t kc_max = kAPanelBytes / (MR * static_cast<int64_t>(sizeof(T)));

  const int64_t KC = balanced_block(K, kc_max, 1);
  const int64_t nc_max =
      std::max<int64_t>(NR, kBBlockBytes / (KC * static_cast<int64_t>(sizeof(T))) / NR * NR);
  const int64_t NC = balanced_block(N, nc_max, NR);

  T* bblock = static_cast<T*>(tls_bblock.get(KC * NC * sizeof(T)));
  alignas(64) T apanel[kAPanelBytes / sizeof(T)];

  const auto a_source = [&](int64_t ir, int64_t pc) {
    return transA ? A + pc * lda + ir : A + ir * lda + pc;
  };
  const bool in_place = !transB && M <= kInPlaceMaxRows &&
      (ldb * static_cast<int64_t>(sizeof(T))) % kAliasBytes != 0;
  // A not transposed holds a micro-panel's rows as the kernel reads them
  // (one value per row and k): read in place unless its rows alias.
  const bool a_in_place = !transA && (lda * static_cast<int64_t>(sizeof(T))) % kAliasBytes != 0;
  const auto block_at = [&](int64_t jc, int64_t pc) {
    return BBlock<T>{B, ldb, transB, in_place, N, jc, std::min(NC, N - jc), pc,
                     std::min(KC, K - pc)};
  };

  // Software pipeline: the kernel call that runs just before a packing step
  // prefetches that step's source. While the first row panel (ir == 0) is
  // computed, B panels are packed on first use, each one's source fetched
  // during the previous panel's kernel; the last kernel call of every row
  // panel fetches the next A panel, or, after the last row panel, the first
  // B panel of the next block.
  for (int64_t jc = 0; jc < N; jc += NC) {
    for (int64_t pc = 0; pc < K; pc += KC) {
      const BBlock<T> blk = block_at(jc, pc);
      const int64_t kc = blk.kc;
      const int64_t npanels = blk.panels();
      blk.pack(0, bblock);
      // Later K blocks accumulate onto the partial result of earlier ones.
      const T beta_k = pc == 0 ? beta : T(1);
      for (int64_t ir = 0; ir < M; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, M - ir));
        if (transA) {
          pack_direct(a_source(ir, pc), lda, kc, mr, MR, apanel);
        } else if (!a_in_place) {
          pack_transposed(a_source(ir, pc), lda, kc, mr, MR, apanel);
        }
        const T* a_panel = a_in_place ? a_source(ir, pc) : apanel;
        const auto& row = a_in_place ? kKernels<T, true>[mr - 1] : kKernels<T, false>[mr - 1];
        for (int64_t p = 0; p < npanels; ++p) {
          if (ir == 0 && p > 0) {
            blk.pack(p, bblock);
          }
          Prefetch<T> pf;
          if (ir == 0 && p + 1 < npanels) {
            pf = blk.prefetch(p + 1);
          } else if (p + 1 == npanels) {
            if (ir + MR < M) {
              const int64_t next_mr = std::min<int64_t>(MR, M - ir - MR);
              pf = prefetch_panel(a_source(ir + MR, pc), lda, kc, next_mr, transA);
            } else if (pc + KC < K) {
              pf = block_at(jc, pc + KC).prefetch(0);
            } else if (jc + NC < N) {
              pf = block_at(jc + NC, 0).prefetch(0);
            }
          }
          const int64_t n0 = blk.col(p);
          const int w = blk.width(p);
          const int nv = static_cast<int>(ceil_div(w, L));
          row[nv - 1](kc, a_panel, lda, blk.panel(p, bblock), blk.panel_ld(p), C + ir * ldc + n0, ldc,
                      alpha, beta_k, V::tail_mask(w - (nv - 1) * L), pf);
        }
      }
    }
  }
}

TORCHCONV_TARGET_END

// Single-threaded GEMM of any shape (the contract's edge cases, then
// blocked_gemm).
template <typename T>
void serial_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) {
    return;
  }
  if (alpha == T(0) || K <= 0) {
    scale_c(M, N, beta, C, ldc);
  } else {
    blocked_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

#endif  // TORCHCONV_GEMM_X86

}  // namespace

namespace avx512 {

template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
#if TORCHCONV_GEMM_X86
  gemm_common::parallel_gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                              serial_gemm<T>);
#else
  TORCH_CHECK(false, "torchconv: the AVX-512 GEMM is not built for this CPU");
#endif
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

}  // namespace avx512
}  // namespace cpu
}  // namespace torchconv
