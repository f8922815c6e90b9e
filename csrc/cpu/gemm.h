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
// On CPUs with AVX-512 it is this project's own GEMM (gemm_avx512.cpp: 1.1-
// 1.4x MKL's sgemm on the convolutions' shapes, benchmarks/gemm_bench);
// elsewhere the BLAS that torch's CPU build carries. Called inside a
// parallel region (the kernels' own tasks) it runs on the calling thread;
// otherwise it may use torch's threads. float32 and float64; the half
// dtypes run the float32 one (precision.h). Tested through the
// torchconv_cpp::gemm op (gemm_op.cpp, tests/test_gemm.py).
#pragma once

#include <cstdint>

namespace torchconv {
namespace cpu {

// Defined for float and double (gemm.cpp).
template <typename scalar_t>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, scalar_t alpha, const scalar_t* a,
          int64_t lda, const scalar_t* b, int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc);

}  // namespace cpu
}  // namespace torchconv
