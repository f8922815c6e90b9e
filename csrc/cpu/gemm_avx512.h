// This project's AVX-512 GEMM (gemm_avx512.cpp), behind the entry in gemm.h:
// for gemm.cpp, which calls it where available() holds, and the GEMM
// benchmark (benchmarks/gemm_bench). The kernels call gemm.h's gemm, never
// this. Same arguments and contract as gemm.h's.
#pragma once

#include <cstdint>

namespace torchconv {
namespace cpu {
namespace avx512 {

// Whether this CPU has what the kernel uses: AVX-512 F, BW, DQ, VL and FMA.
bool available();

// Threads over blocks of C with at::parallel_for; runs on the calling thread
// for small products, one thread, or inside a parallel region. Only where
// available(); defined for float and double.
template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace avx512
}  // namespace cpu
}  // namespace torchconv
