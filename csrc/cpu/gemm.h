// Hand-written GEMM for the CPU convolution kernels (im2col + GEMM).
//
// Row-major semantics, BLAS-style arguments:
//
//   C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C
//
//   op(A) = A    (A stored M x K, element (i,k) at A[i*lda + k])  if !transA
//   op(A) = A^T  (A stored K x M, element (i,k) at A[k*lda + i])  if  transA
//   op(B) = B    (B stored K x N, element (k,j) at B[k*ldb + j])  if !transB
//   op(B) = B^T  (B stored N x K, element (k,j) at B[j*ldb + k])  if  transB
//   C stored M x N, element (i,j) at C[i*ldc + j].
//
// BLAS conventions: beta == 0 never reads C (it may hold NaN garbage);
// alpha == 0 or K == 0 never reads A or B; M == 0 or N == 0 is a no-op.
//
// The fast path is an AVX-512 (F/BW/DQ/VL + FMA) GotoBLAS/BLIS-style
// implementation. It is compiled with function-level target attributes, so
// gemm.cpp needs no special compiler flags, and it is selected at run time:
// on CPUs without AVX-512 the same entry points fall back to a portable
// (slow, but correct) loop nest. Callers that have a better alternative on
// such CPUs (e.g. at::mm) should test gemm_available() first.
//
// Threading: sgemm/dgemm run entirely on the calling thread (the convolution
// kernels call them inside their own at::parallel_for over the batch).
// sgemm_parallel/dgemm_parallel split C into per-thread blocks with
// at::parallel_for; called from inside a parallel region they run serially.
// Packing scratch is thread-local (~1-2 MiB per thread that ever calls in).
#pragma once

#include <cstdint>

namespace torchconv {
namespace cpu {

// True when the AVX-512 fast path is used on this CPU.
bool gemm_available();

void sgemm(int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, bool transA,
           const float* B, int64_t ldb, bool transB,
           float beta, float* C, int64_t ldc);

void dgemm(int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t lda, bool transA,
           const double* B, int64_t ldb, bool transB,
           double beta, double* C, int64_t ldc);

void sgemm_parallel(int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, bool transA,
                    const float* B, int64_t ldb, bool transB,
                    float beta, float* C, int64_t ldc);

void dgemm_parallel(int64_t M, int64_t N, int64_t K, double alpha,
                    const double* A, int64_t lda, bool transA,
                    const double* B, int64_t ldb, bool transB,
                    double beta, double* C, int64_t ldc);

// Overloads for code templated on scalar_t (AT_DISPATCH_FLOATING_TYPES).
// (Named apart from blas.h's gemm<scalar_t>, which has another argument order.)
inline void fast_gemm(int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, bool transA,
                 const float* B, int64_t ldb, bool transB,
                 float beta, float* C, int64_t ldc) {
  sgemm(M, N, K, alpha, A, lda, transA, B, ldb, transB, beta, C, ldc);
}
inline void fast_gemm(int64_t M, int64_t N, int64_t K, double alpha,
                 const double* A, int64_t lda, bool transA,
                 const double* B, int64_t ldb, bool transB,
                 double beta, double* C, int64_t ldc) {
  dgemm(M, N, K, alpha, A, lda, transA, B, ldb, transB, beta, C, ldc);
}
inline void fast_gemm_parallel(int64_t M, int64_t N, int64_t K, float alpha,
                          const float* A, int64_t lda, bool transA,
                          const float* B, int64_t ldb, bool transB,
                          float beta, float* C, int64_t ldc) {
  sgemm_parallel(M, N, K, alpha, A, lda, transA, B, ldb, transB, beta, C, ldc);
}
inline void fast_gemm_parallel(int64_t M, int64_t N, int64_t K, double alpha,
                          const double* A, int64_t lda, bool transA,
                          const double* B, int64_t ldb, bool transB,
                          double beta, double* C, int64_t ldc) {
  dgemm_parallel(M, N, K, alpha, A, lda, transA, B, ldb, transB, beta, C, ldc);
}

namespace detail {
// The portable fallback, exposed so tests can check it on AVX-512 machines.
void sgemm_portable(int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, bool transA,
                    const float* B, int64_t ldb, bool transB,
                    float beta, float* C, int64_t ldc);
void dgemm_portable(int64_t M, int64_t N, int64_t K, double alpha,
                    const double* A, int64_t lda, bool transA,
                    const double* B, int64_t ldb, bool transB,
                    double beta, double* C, int64_t ldc);
}  // namespace detail

}  // namespace cpu
}  // namespace torchconv
