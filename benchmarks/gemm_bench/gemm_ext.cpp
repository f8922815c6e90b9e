// Python bindings for the torchconv GEMM, used by bench.py only.
#include <torch/extension.h>

#include <chrono>

#include "gemm.h"

namespace {

// `a` and `b` are the stored operands (a is K x M when trans_a, b is N x K
// when trans_b); all three must have unit column stride, any row stride.
void check_operands(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                    bool trans_a, bool trans_b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "2-D operands expected");
  TORCH_CHECK(a.scalar_type() == c.scalar_type() && b.scalar_type() == c.scalar_type(),
              "dtype mismatch");
  TORCH_CHECK(c.scalar_type() == at::kFloat || c.scalar_type() == at::kDouble,
              "float32/float64 only");
  for (const auto* t : {&a, &b, &c}) {
    TORCH_CHECK(t->size(1) <= 1 || t->stride(1) == 1, "unit column stride expected");
  }
  const int64_t M = c.size(0), N = c.size(1);
  const int64_t K = trans_a ? a.size(0) : a.size(1);
  TORCH_CHECK((trans_a ? a.size(1) : a.size(0)) == M, "A rows != C rows");
  TORCH_CHECK((trans_b ? b.size(1) : b.size(0)) == K, "A cols != B rows");
  TORCH_CHECK((trans_b ? b.size(0) : b.size(1)) == N, "B cols != C cols");
}

// Leading dimension as the BLAS contract sees it (any value >= 1 is legal
// for a matrix with at most one row, and PyTorch may report stride 1 there).
int64_t ld(const at::Tensor& t) {
  return std::max<int64_t>(t.stride(0), std::max<int64_t>(t.size(1), 1));
}

void portable(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              bool ta, const float* B, int64_t ldb, bool tb, float beta, float* C, int64_t ldc) {
  torchconv::cpu::detail::sgemm_portable(M, N, K, alpha, A, lda, ta, B, ldb, tb, beta, C, ldc);
}
void portable(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
              bool ta, const double* B, int64_t ldb, bool tb, double beta, double* C,
              int64_t ldc) {
  torchconv::cpu::detail::dgemm_portable(M, N, K, alpha, A, lda, ta, B, ldb, tb, beta, C, ldc);
}

// impl: "ours" (single-threaded sgemm/dgemm), "ours_parallel", "portable".
void gemm(const std::string& impl, const at::Tensor& a, const at::Tensor& b, at::Tensor& c,
          bool trans_a, bool trans_b, double alpha, double beta) {
  check_operands(a, b, c, trans_a, trans_b);
  const int64_t M = c.size(0), N = c.size(1);
  const int64_t K = trans_a ? a.size(0) : a.size(1);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "gemm", [&] {
    using T = scalar_t;
    const T* A = a.data_ptr<T>();
    const T* B = b.data_ptr<T>();
    T* C = c.data_ptr<T>();
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    if (impl == "ours") {
      torchconv::cpu::fast_gemm(M, N, K, al, A, ld(a), trans_a, B, ld(b), trans_b, be, C, ld(c));
    } else if (impl == "ours_parallel") {
      torchconv::cpu::fast_gemm_parallel(M, N, K, al, A, ld(a), trans_a, B, ld(b), trans_b, be, C,
                                    ld(c));
    } else if (impl == "portable") {
      portable(M, N, K, al, A, ld(a), trans_a, B, ld(b), trans_b, be, C, ld(c));
    } else {
      TORCH_CHECK(false, "unknown impl ", impl);
    }
  });
}

// Runs `reps` back-to-back C = op(A) @ op(B) products with `impl` ("ours",
// "ours_parallel" or "mm" = at::mm_out on transposed views) and returns the
// elapsed seconds; the loop is in C++ so binding overhead is excluded for
// both contenders.
double time_gemm(const std::string& impl, const at::Tensor& a, const at::Tensor& b,
                 at::Tensor& c, bool trans_a, bool trans_b, int64_t reps) {
  check_operands(a, b, c, trans_a, trans_b);
  const at::Tensor opa = trans_a ? a.t() : a;
  const at::Tensor opb = trans_b ? b.t() : b;
  const auto t0 = std::chrono::steady_clock::now();
  if (impl == "mm") {
    for (int64_t r = 0; r < reps; ++r) {
      at::mm_out(c, opa, opb);
    }
  } else {
    for (int64_t r = 0; r < reps; ++r) {
      gemm(impl, a, b, c, trans_a, trans_b, 1.0, 0.0);
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemm_available", &torchconv::cpu::gemm_available);
  m.def("gemm", &gemm, "C = alpha * op(A) @ op(B) + beta * C (in place)");
  m.def("time_gemm", &time_gemm, "seconds for `reps` products");
}
