// Argument checks of the compiled ops, shared by the CPU (cpu/) and CUDA
// (cuda/) kernels. The Python layer validates with torch's exact messages
// before calling them; these checks make the ops safe when called directly
// (torch.ops.torchconv_cpp.*) with any arguments: every failure raises a
// RuntimeError that says what was expected, none crashes. The dispatcher
// sends an op to its CUDA kernel when any argument is on a GPU, so every
// tensor is checked to be on the input's device.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <utility>

#include "window.h"

namespace torchconv {

inline void check_pair(const char* op, const char* name, at::IntArrayRef values, int64_t minimum) {
  TORCH_CHECK(values.size() == 2, "torchconv_cpp::", op, ": expected ", name, " to have 2 values, but got ", values);
  TORCH_CHECK(values[0] >= minimum && values[1] >= minimum, "torchconv_cpp::", op, ": expected ", name,
              " values >= ", minimum, ", but got ", values);
}

// A file's kernels run on one device type: the CPU kernels must never see
// GPU memory, nor the CUDA kernels host memory, even when a redispatch to
// another dispatch key hands them such a tensor. (The other tensors are
// checked to be on this one's device.)
inline void check_kernel_device(const char* op, const at::Tensor& t, at::DeviceType kernel_device) {
  TORCH_CHECK(!t.defined() || t.device().type() == kernel_device, "torchconv_cpp::", op, ": this is the ",
              c10::DeviceTypeName(kernel_device), " kernel, but got a tensor on ", t.device());
}

inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.defined(), "torchconv_cpp::", op, ": ", name, " is undefined");
  TORCH_CHECK(t.device() == input.device(), "torchconv_cpp::", op, ": expected ", name, " on ", input.device(),
              " (the input's device), but got ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, "torchconv_cpp::", op, ": expected a strided ", name);
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "torchconv_cpp::", op, ": expected ", name, " of dtype ",
              input.scalar_type(), " (the input's), but got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 4 || std::string(name) == "bias", "torchconv_cpp::", op, ": expected a 4-d ", name,
              ", but got size ", t.sizes());
}

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.defined() && input.dim() == 4, "torchconv_cpp::", op, ": expected a 4-d input (N, C, H, W), but got ",
              input.defined() ? input.sizes() : at::IntArrayRef{});
  TORCH_CHECK(input.layout() == at::kStrided, "torchconv_cpp::", op, ": expected a strided input");
  TORCH_CHECK(input.is_cuda() || input.device().is_cpu(), "torchconv_cpp::", op,
              ": expected a CPU or CUDA input, but got ", input.device());
  // The CPU and CUDA kernels (and the CUDA ones compiled for the CPU in the
  // tests' emulation) all take the four floating dtypes; the half ones
  // accumulate in float32.
  const at::ScalarType dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "torchconv_cpp::", op, ": expected a float32, float64, float16 or bfloat16 input, but got ", dtype);
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

// ------------------------------------------------ checks of each op's entry

// conv2d: the (out_h, out_w) of a valid call, else a RuntimeError.
inline std::pair<int64_t, int64_t> check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_conv_arguments("conv2d", input, weight, bias, stride, padding, dilation, groups);
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, "torchconv_cpp::conv2d: expected input with ",
              weight.size(1) * groups, " channels (weight.size(1) * groups), but got ", input.size(1));
  TORCH_CHECK(!bias.has_value() || bias->numel() == weight.size(0),
              "torchconv_cpp::conv2d: expected bias with ", weight.size(0), " elements, but got ",
              bias.has_value() ? bias->numel() : 0);
  const int64_t out_h = conv_output_size(input.size(2), weight.size(2), stride[0], padding[0], dilation[0]);
  const int64_t out_w = conv_output_size(input.size(3), weight.size(3), stride[1], padding[1], dilation[1]);
  TORCH_CHECK(out_h > 0 && out_w > 0,
              "torchconv_cpp::conv2d: the kernel (dilated) is larger than the padded input: output would be ",
              out_h, "x", out_w);
  return {out_h, out_w};
}

// conv_transpose2d: the (out_h, out_w) of a valid call, else a RuntimeError.
inline std::pair<int64_t, int64_t> check_conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                                                          const c10::optional<at::Tensor>& bias,
                                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                                          at::IntArrayRef output_padding, int64_t groups,
                                                          at::IntArrayRef dilation) {
  check_conv_arguments("conv_transpose2d", input, weight, bias, stride, padding, dilation, groups);
  check_pair("conv_transpose2d", "output_padding", output_padding, 0);
  TORCH_CHECK(input.size(1) == weight.size(0), "torchconv_cpp::conv_transpose2d: expected input with ",
              weight.size(0), " channels (weight.size(0)), but got ", input.size(1));
  TORCH_CHECK(!bias.has_value() || bias->numel() == weight.size(1) * groups,
              "torchconv_cpp::conv_transpose2d: expected bias with ", weight.size(1) * groups,
              " elements, but got ", bias.has_value() ? bias->numel() : 0);
  const int64_t out_h =
      conv_transpose_output_size(input.size(2), weight.size(2), stride[0], padding[0], output_padding[0], dilation[0]);
  const int64_t out_w =
      conv_transpose_output_size(input.size(3), weight.size(3), stride[1], padding[1], output_padding[1], dilation[1]);
  TORCH_CHECK(out_h > 0 && out_w > 0, "torchconv_cpp::conv_transpose2d: output size is too small: ", out_h, "x",
              out_w);
  return {out_h, out_w};
}

// conv2d_weight: raises unless input, grad_output and weight_size agree.
// grad_output's (H, W) is not checked against conv2d's output size: as
// conv_transpose2d's weight gradient (input and grad_output swapped) it can
// be smaller when output_padding >= stride (allowed with dilation).
inline void check_conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  TORCH_CHECK(weight_size.size() == 4 &&
                  std::all_of(weight_size.begin(), weight_size.end(), [](int64_t v) { return v >= 0; }),
              "torchconv_cpp::conv2d_weight: weight_size must be 4 non-negative sizes, but got ", weight_size);
  const at::Tensor weight_like = at::empty(weight_size, input.options().device(at::kMeta));
  check_conv_arguments("conv2d_weight", input, weight_like, c10::nullopt, stride, padding, dilation, groups);
  check_tensor("conv2d_weight", "grad_output", grad_output, input);
  TORCH_CHECK(input.size(1) == weight_size[1] * groups && grad_output.size(1) == weight_size[0] &&
                  grad_output.size(0) == input.size(0),
              "torchconv_cpp::conv2d_weight: input ", input.sizes(), ", grad_output ", grad_output.sizes(),
              " and weight_size ", weight_size, " do not agree (groups=", groups, ")");
  // Never larger: the kernels read the input only where conv2d's windows lie.
  const int64_t out_h = conv_output_size(input.size(2), weight_size[2], stride[0], padding[0], dilation[0]);
  const int64_t out_w = conv_output_size(input.size(3), weight_size[3], stride[1], padding[1], dilation[1]);
  TORCH_CHECK(grad_output.size(2) <= out_h && grad_output.size(3) <= out_w, "torchconv_cpp::conv2d_weight: grad_output ",
              grad_output.sizes(), " is larger than conv2d's output (", out_h, "x", out_w, ") for input ",
              input.sizes(), " and weight_size ", weight_size);
}

// The window of a kernel_h x kernel_w kernel with these (checked) pairs.
inline Window make_window(int64_t kernel_h, int64_t kernel_w, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation) {
  return Window{kernel_h, kernel_w, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

// A pooling's window (avg_pool2d passes dilation 1).
inline Window check_pool(const char* op, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation) {
  check_pair(op, "kernel_size", kernel, 1);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK(2 * padding[0] <= (kernel[0] - 1) * dilation[0] + 1 && 2 * padding[1] <= (kernel[1] - 1) * dilation[1] + 1,
              "torchconv_cpp::", op, ": padding ", padding, " must be at most half of the effective kernel size");
  return make_window(kernel[0], kernel[1], stride, padding, dilation);
}

inline void check_plane_input(const char* op, const at::Tensor& input) {
  check_input(op, input);
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, "torchconv_cpp::", op,
              ": expected a non-empty plane, but got input of size ", input.sizes());
}

// A pooling's output (out_h, out_w) for a valid call, else a RuntimeError.
inline std::pair<int64_t, int64_t> check_pool_output(const char* op, const at::Tensor& input, const Window& p,
                                                     bool ceil_mode) {
  const int64_t out_h = pool_output_size(input.size(2), p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, ceil_mode);
  const int64_t out_w = pool_output_size(input.size(3), p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, ceil_mode);
  TORCH_CHECK(out_h > 0 && out_w > 0, "torchconv_cpp::", op, ": output size is too small: ", out_h, "x", out_w);
  return {out_h, out_w};
}

inline void check_divisor(const char* op, c10::optional<int64_t> divisor_override) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, "torchconv_cpp::", op,
              ": divisor must be not zero");
}

// max_pool2d_backward's indices: int64, on grad_output's device, its size.
inline void check_pool_indices(const at::Tensor& grad_output, const at::Tensor& indices) {
  TORCH_CHECK(indices.defined() && indices.scalar_type() == at::kLong && indices.sizes() == grad_output.sizes() &&
                  indices.device() == grad_output.device(),
              "torchconv_cpp::max_pool2d_backward: expected int64 indices of size ", grad_output.sizes(), " on ",
              grad_output.device(), ", but got ", indices.defined() ? indices.toString() : "undefined", " of size ",
              indices.defined() ? indices.sizes() : at::IntArrayRef{});
}

// A pool's window and output size.
struct PoolShape {
  Window window;
  int64_t out_h, out_w;
};

// max_pool2d: the window and output size of a valid call, else a RuntimeError.
inline PoolShape check_max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_plane_input("max_pool2d", input);
  const Window window = check_pool("max_pool2d", kernel_size, stride, padding, dilation);
  const std::pair<int64_t, int64_t> out_size = check_pool_output("max_pool2d", input, window, ceil_mode);
  return {window, out_size.first, out_size.second};
}

// max_pool2d_backward: the window of a valid call, else a RuntimeError.
inline Window check_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                                        at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_input("max_pool2d_backward", grad_output);
  check_pair("max_pool2d_backward", "input_size", input_size, 1);
  const Window window = check_pool("max_pool2d_backward", kernel_size, stride, padding, dilation);
  check_pool_indices(grad_output, indices);
  return window;
}

// avg_pool2d: the window and output size of a valid call, else a RuntimeError.
inline PoolShape check_avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, bool ceil_mode, c10::optional<int64_t> divisor_override) {
  check_plane_input("avg_pool2d", input);
  const Window window = check_pool("avg_pool2d", kernel_size, stride, padding, {1, 1});
  check_divisor("avg_pool2d", divisor_override);
  const std::pair<int64_t, int64_t> out_size = check_pool_output("avg_pool2d", input, window, ceil_mode);
  return {window, out_size.first, out_size.second};
}

// avg_pool2d_backward: the window of a valid call, else a RuntimeError.
// (Its ceil_mode is not checked: grad_output's size says how many windows
// there are.)
inline Window check_avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        c10::optional<int64_t> divisor_override) {
  check_input("avg_pool2d_backward", grad_output);
  check_pair("avg_pool2d_backward", "input_size", input_size, 1);
  const Window window = check_pool("avg_pool2d_backward", kernel_size, stride, padding, {1, 1});
  check_divisor("avg_pool2d_backward", divisor_override);
  return window;
}

}  // namespace torchconv
