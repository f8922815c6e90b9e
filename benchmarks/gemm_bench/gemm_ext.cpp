// The benchmark's timing loop (bench.py): the CPU kernels' GEMM entry
// (csrc/cpu/gemm.h) against at::mm, `reps` products back to back in C++ so
// that no binding overhead is timed on either side.
#include <torch/extension.h>

#include <chrono>

#include "capability.h"
#include "gemm.h"

namespace {

// Seconds for `reps` products c = op(a) @ op(b) with impl "gemm" (the
// entry, on torch's threads) or "mm" (at::mm_out on transposed views).
// bench.py passes contiguous matrices whose sizes agree: a is k x m when
// trans_a, b is n x k when trans_b.
double time_gemm(const std::string& impl, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool trans_a,
                 bool trans_b, int64_t reps) {
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && c.is_contiguous(), "contiguous operands expected");
  TORCH_CHECK(impl == "gemm" || impl == "mm", "unknown impl ", impl);
  const at::Tensor op_a = trans_a ? a.t() : a, op_b = trans_b ? b.t() : b;
  const int64_t m = c.size(0), n = c.size(1), k = op_a.size(1);
  const auto start = std::chrono::steady_clock::now();
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "time_gemm", [&] {
    for (int64_t r = 0; r < reps; ++r) {
      if (impl == "mm") {
        at::mm_out(c, op_a, op_b);
      } else {
        torchconv::cpu::gemm<scalar_t>(trans_a, trans_b, m, n, k, 1, a.const_data_ptr<scalar_t>(), a.size(1),
                                       b.const_data_ptr<scalar_t>(), b.size(1), 0, c.data_ptr<scalar_t>(), n);
      }
    }
  });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("capability", [] { return std::string(torchconv::cpu::capability_name(torchconv::cpu::capability())); },
        "the capability level whose GEMM the entry runs (avx512 and up: this project's; else torch's BLAS)");
  m.def("time_gemm", &time_gemm, "seconds for `reps` products");
}
