// The GEMM of the CPU convolution kernels (im2col/col2im around one GEMM per
// block: docs/architecture.md), row-major with BLAS-style arguments:
//
//   C[m, n] = alpha * op(A)[m, k] . op(B)[k, n] + beta * C
//
//   op(A) = A    (A stored m x k, element (i, p) at a[i * lda + p])  unless transpose_a
//   op(A) = A^T  (A stored k x m, element (i, p) at a[p * lda + i])  if transpose_a
//   op(B) = B    (B stored k x n, element (p, j) at b[p * ldb + j])  unless transpose_b
//   op(B) = B^T  (B stored n x k, element (p, j) at b[j * ldb + p])  if transpose_b
//   C stored m x n, element (i, j) at c[i * ldc + j].
//
// BLAS's conventions: beta == 0 never reads C (it may hold NaN); alpha == 0
// or k == 0 never reads A or B; m == 0 or n == 0 does nothing.
//
// scalar_t is the dtype the operands' values come from; they are stored,
// and C computed, in acc_t<scalar_t> (precision.h): float32 for the half
// dtypes, whose values the kernels widen exactly. Which GEMM runs is the
// capability level's choice (capability.h): torch's BLAS at default and
// avx2; this project's AVX-512 GEMM at avx512 (gemm_avx512.cpp); at
// avx512_bf16 bfloat16 operands are multiplied as bfloat16 with float32
// sums (gemm_avx512_bf16.cpp), which is exact for them, as they are
// bfloat16 values. Called inside a parallel region (the kernels' own tasks)
// it runs on the calling thread; otherwise it may use torch's threads.
// Tested through the torchconv_cpp::gemm op (gemm_op.cpp, tests/test_gemm.py).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#include "precision.h"

namespace torchconv {
namespace cpu {

// Defined for float, double, at::Half and at::BFloat16 (gemm.cpp).
template <typename scalar_t>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, acc_t<scalar_t> alpha,
          const acc_t<scalar_t>* a, int64_t lda, const acc_t<scalar_t>* b, int64_t ldb, acc_t<scalar_t> beta,
          acc_t<scalar_t>* c, int64_t ldc);

// Whether the GEMM of the capability level in use multiplies bfloat16
// operands as they are (avx512_bf16): bfloat16 convolutions then keep
// their GEMM operands (columns, weights, copies of the input) in bfloat16,
// half the bytes of float32 ones, and call the overload below.
bool gemm_reads_bfloat16();

// The same with bfloat16 operands and a float32 C, at the levels where
// gemm_reads_bfloat16() (elsewhere it raises).
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const at::BFloat16* a,
          int64_t lda, const at::BFloat16* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace cpu
}  // namespace torchconv
