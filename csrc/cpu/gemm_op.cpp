// torchconv_cpp::gemm: the CPU kernels' GEMM (gemm.h) on tensors, so that
// its tests (tests/test_gemm.py) run in the test suite against the
// extension itself, with no build of their own. Not part of torchconv's
// API: the Python layer never calls it.
//
// gemm(a, b, c, transpose_a, transpose_b, alpha, beta) writes
// c = alpha * op(a) @ op(b) + beta * c in place, a and b being the stored
// operands (a is k x m when transpose_a, b is n x k when transpose_b). Each
// matrix has unit column stride and any row stride at least its width: the
// row stride is the leading dimension, so a view of the first columns of a
// wider matrix tests lda, ldb and ldc larger than the width.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>

#include "gemm.h"

namespace torchconv {
namespace cpu {
namespace {

void check_matrix(const char* name, const at::Tensor& t, const at::Tensor& c) {
  TORCH_CHECK(t.dim() == 2, "torchconv_cpp::gemm: expected a 2-d ", name, ", but got size ", t.sizes());
  TORCH_CHECK(t.device().is_cpu() && t.layout() == at::kStrided, "torchconv_cpp::gemm: expected a strided CPU ",
              name);
  TORCH_CHECK(t.scalar_type() == c.scalar_type(), "torchconv_cpp::gemm: expected ", name, " of dtype ",
              c.scalar_type(), " (c's), but got ", t.scalar_type());
  TORCH_CHECK((t.size(1) <= 1 || t.stride(1) == 1) && (t.size(0) <= 1 || t.stride(0) >= t.size(1)),
              "torchconv_cpp::gemm: expected ", name, " with unit column stride and rows at least its width apart, ",
              "but got strides ", t.strides(), " for size ", t.sizes());
}

// The leading dimension: the row stride (with one row torch may report any
// stride, and BLAS wants at least the width, and at least 1).
int64_t leading_dimension(const at::Tensor& t) { return std::max<int64_t>({t.stride(0), t.size(1), 1}); }

void gemm_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool transpose_a, bool transpose_b,
             double alpha, double beta) {
  TORCH_CHECK(c.scalar_type() == at::kFloat || c.scalar_type() == at::kDouble,
              "torchconv_cpp::gemm: expected float32 or float64, but got ", c.scalar_type());
  check_matrix("a", a, c);
  check_matrix("b", b, c);
  check_matrix("c", c, c);
  const int64_t m = c.size(0), n = c.size(1), k = transpose_a ? a.size(0) : a.size(1);
  TORCH_CHECK((transpose_a ? a.size(1) : a.size(0)) == m && (transpose_b ? b.size(1) : b.size(0)) == k &&
                  (transpose_b ? b.size(0) : b.size(1)) == n,
              "torchconv_cpp::gemm: op(a) ", a.sizes(), " (transpose_a=", transpose_a, ") times op(b) ", b.sizes(),
              " (transpose_b=", transpose_b, ") does not give c's size ", c.sizes());
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "torchconv_cpp::gemm", [&] {
    gemm<scalar_t>(transpose_a, transpose_b, m, n, k, static_cast<scalar_t>(alpha), a.const_data_ptr<scalar_t>(),
                   leading_dimension(a), b.const_data_ptr<scalar_t>(), leading_dimension(b),
                   static_cast<scalar_t>(beta), c.data_ptr<scalar_t>(), leading_dimension(c));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) { m.impl("gemm", &gemm_op); }

}  // namespace cpu
}  // namespace torchconv
