// Row-major GEMM for the conv kernels: C[M,N] = alpha * op(A) @ op(B) + beta * C.
//
// On CPUs with AVX-512 the product is this project's own GEMM (gemm.h): it
// runs 1.1-1.4x faster than MKL's sgemm here (benchmarks/gemm_bench). On
// other CPUs it is the BLAS that torch's CPU build carries (MKL's
// sgemm_/dgemm_, exported by libtorch_cpu; ATen's own cpublas wrappers are not
// exported to extensions). BLAS is column-major: a row-major C = A B is the
// column-major C^T = B^T A^T, so the operands swap places. beta == 0 never
// reads C. BLAS takes 32-bit sizes: each dimension is checked to fit.
#pragma once

#include <ATen/ATen.h>

#include <climits>

#include "gemm.h"

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

namespace torchconv {
namespace cpu {

inline int blas_int(int64_t v) {
  TORCH_CHECK(v >= 0 && v <= INT_MAX, "torchconv: a GEMM dimension of ", v, " does not fit BLAS's 32-bit sizes");
  return static_cast<int>(v);
}

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                      const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                      const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
                      const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
                      const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename scalar_t>
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, scalar_t alpha, const scalar_t* a,
                 int64_t lda, const scalar_t* b, int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (gemm_available()) {
    // Threads over blocks of C, or single-threaded inside a caller's parallel region.
    fast_gemm_parallel(m, n, k, alpha, a, lda, trans_a, b, ldb, trans_b, beta, c, ldc);
    return;
  }
  if (k == 0) {  // BLAS would scale C by beta; make beta == 0 write zeros without reading C.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == scalar_t(0) ? scalar_t(0) : beta * c[i * ldc + j];
    return;
  }
  const int M = blas_int(m), N = blas_int(n), K = blas_int(k);
  const int LDA = blas_int(lda), LDB = blas_int(ldb), LDC = blas_int(ldc);
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  blas_gemm(&tb, &ta, &N, &M, &K, &alpha, b, &LDB, a, &LDA, &beta, c, &LDC);
}

}  // namespace cpu
}  // namespace torchconv
