// Argument checks of the compiled ops. The Python layer validates with torch's
// exact messages before calling them; these checks make the ops safe when
// called directly (torch.ops.torchconv_cpp.*) with any arguments: every
// failure raises a RuntimeError that says what was expected, none crashes.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

namespace torchconv {
namespace cpu {

inline int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  return (size + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

inline void check_pair(const char* op, const char* name, at::IntArrayRef values, int64_t minimum) {
  TORCH_CHECK(values.size() == 2, "torchconv_cpp::", op, ": expected ", name, " to have 2 values, but got ", values);
  TORCH_CHECK(values[0] >= minimum && values[1] >= minimum, "torchconv_cpp::", op, ": expected ", name,
              " values >= ", minimum, ", but got ", values);
}

inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.defined(), "torchconv_cpp::", op, ": ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "torchconv_cpp::", op, ": expected ", name, " on the CPU, but got ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, "torchconv_cpp::", op, ": expected a strided ", name);
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "torchconv_cpp::", op, ": expected ", name, " of dtype ",
              input.scalar_type(), " (the input's), but got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 4 || std::string(name) == "bias", "torchconv_cpp::", op, ": expected a 4-d ", name,
              ", but got size ", t.sizes());
}

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.defined() && input.dim() == 4, "torchconv_cpp::", op, ": expected a 4-d input (N, C, H, W), but got ",
              input.defined() ? input.sizes() : at::IntArrayRef{});
  TORCH_CHECK(input.device().is_cpu(), "torchconv_cpp::", op, ": expected a CPU input, but got ", input.device());
  TORCH_CHECK(input.layout() == at::kStrided, "torchconv_cpp::", op, ": expected a strided input");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, "torchconv_cpp::", op,
              ": expected a float32 or float64 input, but got ", input.scalar_type());
}

inline void check_conv_arguments(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_input(op, input);
  TORCH_CHECK(weight.defined() && weight.dim() == 4, "torchconv_cpp::", op, ": expected a 4-d weight, but got ",
              weight.defined() ? weight.sizes() : at::IntArrayRef{});
  if (!weight.is_meta()) check_tensor(op, "weight", weight, input);
  if (bias.has_value()) {
    check_tensor(op, "bias", *bias, input);
    TORCH_CHECK(bias->dim() == 1, "torchconv_cpp::", op, ": expected a 1-d bias, but got ", bias->sizes());
  }
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK(groups > 0, "torchconv_cpp::", op, ": expected groups > 0, but got ", groups);
  TORCH_CHECK(weight.size(0) % groups == 0 && input.size(1) % groups == 0, "torchconv_cpp::", op,
              ": groups=", groups, " must divide weight.size(0)=", weight.size(0), " and the input channels ",
              input.size(1));
}

}  // namespace cpu
}  // namespace torchconv
