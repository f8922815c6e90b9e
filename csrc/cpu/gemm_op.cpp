// torchconv_cpp::gemm: the CPU kernels' GEMM (gemm.h) on tensors, so that
// its tests (tests/test_gemm.py) run in the test suite against the
// extension itself, with no build of their own. Not part of torchconv's
// API: the Python layer never calls it.
//
// gemm(a, b, c, transpose_a, transpose_b, alpha, beta) writes
// c = alpha * op(a) @ op(b) + beta * c in place, at the capability level in
// use (torchconv_cpp::set_capability). c is float32 or float64; a and b
// are of c's dtype, or both bfloat16 or both float16 with a float32 c: the
// GEMM of that dtype's convolutions (bfloat16 operands read as they are
// where the level multiplies bfloat16, gemm_reads_bfloat16; otherwise the
// values widened to float32). a and
// b are the stored operands (a is k x m when transpose_a, b is n x k when
// transpose_b). Each matrix has unit column stride and any row stride at
// least its width: the row stride is the leading dimension, so a view of
// the first columns of a wider matrix tests lda, ldb and ldc larger than
// the width.
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
  const bool half_operands = a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf;
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && (a.scalar_type() == c.scalar_type() ||
                                                     (half_operands && c.scalar_type() == at::kFloat)),
              "torchconv_cpp::gemm: expected a and b of c's dtype, or both half with a float32 c, but got ",
              a.scalar_type(), ", ", b.scalar_type(), " and ", c.scalar_type());
  check_matrix("a", a, c);
  check_matrix("b", b, c);
  check_matrix("c", c, c);
  const int64_t m = c.size(0), n = c.size(1), k = transpose_a ? a.size(0) : a.size(1);
  TORCH_CHECK((transpose_a ? a.size(1) : a.size(0)) == m && (transpose_b ? b.size(1) : b.size(0)) == k &&
                  (transpose_b ? b.size(0) : b.size(1)) == n,
              "torchconv_cpp::gemm: op(a) ", a.sizes(), " (transpose_a=", transpose_a, ") times op(b) ", b.sizes(),
              " (transpose_b=", transpose_b, ") does not give c's size ", c.sizes());
  if (a.scalar_type() == at::kBFloat16 && gemm_reads_bfloat16()) {
    gemm(transpose_a, transpose_b, m, n, k, static_cast<float>(alpha), a.const_data_ptr<at::BFloat16>(),
         leading_dimension(a), b.const_data_ptr<at::BFloat16>(), leading_dimension(b), static_cast<float>(beta),
         c.data_ptr<float>(), leading_dimension(c));
    return;
  }
  // Half operands widened exactly, with their strides (so their leading dimensions).
  const auto widened = [&](const at::Tensor& t) {
    if (!half_operands) return t;
    return at::empty_strided(t.sizes(), t.strides(), t.options().dtype(at::kFloat)).copy_(t);
  };
  const at::Tensor a_values = widened(a), b_values = widened(b);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "torchconv_cpp::gemm", [&] {
    using acc = acc_t<scalar_t>;
    gemm<scalar_t>(transpose_a, transpose_b, m, n, k, static_cast<acc>(alpha), a_values.const_data_ptr<acc>(),
                   leading_dimension(a), b_values.const_data_ptr<acc>(), leading_dimension(b),
                   static_cast<acc>(beta), c.data_ptr<acc>(), leading_dimension(c));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) { m.impl("gemm", &gemm_op); }

}  // namespace cpu
}  // namespace torchconv
