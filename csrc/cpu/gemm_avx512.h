// This project's AVX-512 GEMMs, behind the entry in gemm.h, which calls
// them at the capability levels that have them (capability.h); the kernels
// call gemm.h's gemm, never these. Same arguments and contract as gemm.h's.
// Each threads over blocks of C with at::parallel_for (gemm_common.h), and
// runs on the calling thread for small products, one thread, or inside a
// parallel region.
#pragma once

#include <cstdint>

namespace torchconv {
namespace cpu {
namespace avx512 {

// float32 and float64 (gemm_avx512.cpp), at capability avx512 and above.
template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// bfloat16 matrices, or float32 ones holding bfloat16 values, multiplied
// in bfloat16 with float32 sums into a float32 C (gemm_avx512_bf16.cpp), at
// capability avx512_bf16. T: float or at::BFloat16.
template <typename T>
void gemm_bf16(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace avx512
}  // namespace cpu
}  // namespace torchconv
