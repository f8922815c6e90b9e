// The GEMM entry of the CPU kernels (contract in gemm.h): the GEMM of the
// capability level in use (capability.h): this project's AVX-512 GEMMs
// (gemm_avx512.h), or the BLAS that torch's CPU build carries (MKL's
// sgemm_/dgemm_, exported by libtorch_cpu; ATen's own cpublas wrappers are
// not exported to extensions).
#include "gemm.h"

#include <c10/util/Exception.h>

#include <climits>
#include <type_traits>

#include "capability.h"
#include "gemm_avx512.h"

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
namespace {

// BLAS takes 32-bit sizes: each dimension is checked to fit.
int blas_int(int64_t v) {
  TORCH_CHECK(v >= 0 && v <= INT_MAX, "torchconv: a GEMM dimension of ", v, " does not fit BLAS's 32-bit sizes");
  return static_cast<int>(v);
}

void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
               const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
               const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
               const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
               const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// BLAS is column-major: a row-major C = op(A) op(B) is the column-major
// C^T = op(B)^T op(A)^T, so the operands swap places.
template <typename scalar_t>
void row_major_blas_gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, scalar_t alpha,
                         const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, scalar_t beta, scalar_t* c,
                         int64_t ldc) {
  if (k == 0) {  // BLAS would scale C by beta; make beta == 0 write zeros without reading C.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == scalar_t(0) ? scalar_t(0) : beta * c[i * ldc + j];
    return;
  }
  const int M = blas_int(m), N = blas_int(n), K = blas_int(k);
  const int LDA = blas_int(lda), LDB = blas_int(ldb), LDC = blas_int(ldc);
  const char ta = transpose_a ? 'T' : 'N', tb = transpose_b ? 'T' : 'N';
  blas_gemm(&tb, &ta, &N, &M, &K, &alpha, b, &LDB, a, &LDA, &beta, c, &LDC);
}

}  // namespace

template <typename scalar_t>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, acc_t<scalar_t> alpha,
          const acc_t<scalar_t>* a, int64_t lda, const acc_t<scalar_t>* b, int64_t ldb, acc_t<scalar_t> beta,
          acc_t<scalar_t>* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const Capability level = capability();
  if constexpr (std::is_same<scalar_t, at::BFloat16>::value) {
    if (level >= Capability::AVX512_BF16) {
      avx512::gemm_bf16(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    }
  }
  if (level >= Capability::AVX512) {
    avx512::gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    row_major_blas_gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

bool gemm_reads_bfloat16() { return capability() >= Capability::AVX512_BF16; }

void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const at::BFloat16* a,
          int64_t lda, const at::BFloat16* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  TORCH_CHECK(gemm_reads_bfloat16(), "torchconv: bfloat16 GEMM operands need capability avx512_bf16, but the level is ",
              capability_name(capability()));
  if (m == 0 || n == 0) return;
  avx512::gemm_bf16(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#define TORCHCONV_GEMM_INSTANCE(scalar_t)                                                                   \
  template void gemm<scalar_t>(bool, bool, int64_t, int64_t, int64_t, acc_t<scalar_t>, const acc_t<scalar_t>*, \
                               int64_t, const acc_t<scalar_t>*, int64_t, acc_t<scalar_t>, acc_t<scalar_t>*,    \
                               int64_t);
TORCHCONV_GEMM_INSTANCE(float)
TORCHCONV_GEMM_INSTANCE(double)
TORCHCONV_GEMM_INSTANCE(at::Half)
TORCHCONV_GEMM_INSTANCE(at::BFloat16)
#undef TORCHCONV_GEMM_INSTANCE

}  // namespace cpu
}  // namespace torchconv
