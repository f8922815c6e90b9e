// What this project's AVX-512 GEMMs (gemm_avx512.cpp, gemm_avx512_bf16.cpp)
// share: the balanced block sizes, the per-thread buffer of a packed block,
// and the thread split (C cut into chunks, each an independent
// single-threaded GEMM, claimed by torch's threads), generic over the
// single-threaded GEMM, called as
//   serial_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "../window.h"  // ceil_div

namespace torchconv {
namespace cpu {
namespace gemm_common {

// Splits `total` into the fewest blocks of at most `max_block` (a multiple
// of `align`), equalised so that no block is a sliver; returns the block
// size rounded up to `align`.
inline int64_t balanced_block(int64_t total, int64_t max_block, int64_t align) {
  const int64_t nblocks = ceil_div(total, max_block);
  return ceil_div(ceil_div(total, nblocks), align) * align;
}

// Per-thread packing buffer for a packed block, 64-byte aligned. Grows
// monotonically; held by a thread_local, it lives as long as the thread
// (pool threads are long-lived, so it is reused).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(ptr_);
      ptr_ = nullptr;
      size_ = 0;
      const size_t rounded = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, rounded);
      if (ptr_ == nullptr) {
        throw std::bad_alloc();
      }
      size_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// Below this many multiply-adds the fork/join of at::parallel_for costs
// more than a second thread saves: the crossover of the GEMM's time split
// and unsplit (benchmarks/gemm_bench/bench.py times both, one thread and
// two).
constexpr int64_t kMinParallelMacs = int64_t(1) << 20;
// Up to this many chunks per thread: threads claim chunks dynamically, so
// when the machine is shared and one thread is descheduled the others take
// over its share instead of leaving it on the critical path.
constexpr int64_t kMaxChunksPerThread = 4;
// Candidate grids within this factor of the best estimated makespan are
// considered equal, and the one with the most chunks wins.
constexpr double kMakespanSlack = 1.03;
// Packing cost per element relative to one FMA-vector cycle (16 lanes):
// a copy plus, for transposing packs, in-register shuffles.
constexpr double kPackCyclesPerElement = 0.5;

// A and B hold `Operand`s: T, or bfloat16 for a float32 C.
// Splits C into a tm x tn grid of chunks, M in units of 8 rows (MR) and N
// in units of 16 columns (the kernels cover any multiple of 16 columns
// without padding, so chunks need not be NR-aligned). Each chunk is an
// independent serial GEMM that packs its own A rows and B columns. The grid
// minimises an estimate of the makespan in quiet conditions: rounds of
// chunks times the chunk cost (padded FMA work + its packing), preferring
// more chunks (up to kMaxChunksPerThread per thread) when that costs less
// than kMakespanSlack.
template <typename T, typename Operand, typename Serial>
void parallel_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const Operand* A, int64_t lda,
                   const Operand* B, int64_t ldb, T beta, T* C, int64_t ldc, const Serial& serial_gemm) {
  const int64_t nthreads = at::get_num_threads();
  if (nthreads <= 1 || at::in_parallel_region() || M <= 0 || N <= 0 || K <= 0 ||
      M * N * K < kMinParallelMacs) {
    serial_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  constexpr int64_t kRowUnit = 8;
  constexpr int64_t kColUnit = 16;
  const int64_t mu = ceil_div(M, kRowUnit);
  const int64_t nu = ceil_div(N, kColUnit);
  const int64_t max_chunks =
      std::min(nthreads * kMaxChunksPerThread, std::max<int64_t>(1, M * N * K / kMinParallelMacs));

  struct Grid {
    int64_t mstep, nstep, chunks;
    double makespan;
  };
  std::vector<Grid> grids;
  for (int64_t tm = 1; tm <= std::min(mu, max_chunks); ++tm) {
    for (int64_t tn = 1; tm * tn <= max_chunks && tn <= nu; ++tn) {
      const int64_t mstep = ceil_div(mu, tm) * kRowUnit;
      const int64_t nstep = ceil_div(nu, tn) * kColUnit;
      const int64_t chunks = ceil_div(M, mstep) * ceil_div(N, nstep);
      const double work = static_cast<double>(mstep) * nstep * K / kColUnit;
      const double pack = kPackCyclesPerElement * K * (mstep + nstep);
      const double makespan = static_cast<double>(ceil_div(chunks, nthreads)) * (work + pack);
      grids.push_back({mstep, nstep, chunks, makespan});
    }
  }
  double best_makespan = grids.front().makespan;
  for (const Grid& g : grids) {
    best_makespan = std::min(best_makespan, g.makespan);
  }
  Grid grid = grids.front();
  grid.chunks = 0;
  for (const Grid& g : grids) {
    if (g.makespan <= best_makespan * kMakespanSlack && g.chunks > grid.chunks) {
      grid = g;
    }
  }

  const int64_t tn = ceil_div(N, grid.nstep);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(nthreads, grid.chunks), 1, [&](int64_t, int64_t) {
    for (int64_t t = next++; t < grid.chunks; t = next++) {
      const int64_t m0 = (t / tn) * grid.mstep;
      const int64_t n0 = (t % tn) * grid.nstep;
      const int64_t mb = std::min(grid.mstep, M - m0);
      const int64_t nb = std::min(grid.nstep, N - n0);
      const Operand* a = transA ? A + m0 : A + m0 * lda;
      const Operand* b = transB ? B + n0 * ldb : B + n0;
      serial_gemm(transA, transB, mb, nb, K, alpha, a, lda, b, ldb, beta, C + m0 * ldc + n0, ldc);
    }
  });
}

}  // namespace gemm_common
}  // namespace cpu
}  // namespace torchconv
