// Typed calls of the torchconv_cpp:: ops (schemas.h) through the dispatcher.
//
// A call goes through every dispatch key the op has: Autograd
// (autograd/functions.cpp records the backward when an input requires grad),
// then the kernel of the tensors' device (cpu/, cuda/). The backward formulas
// call the ops this way, so that gradients of gradients are recorded too.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace torchconv {
namespace calls {

// The op's typed handle. Each call below keeps its own in a function-local
// static: looked up at the first call, when the library has long been
// registered (it is, as soon as the extension loads).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

inline at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto handle = find<decltype(conv2d)>("torchconv_cpp::conv2d");
  return handle.call(input, weight, bias, stride, padding, dilation, groups);
}

inline at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation) {
  static const auto handle = find<decltype(conv_transpose2d)>("torchconv_cpp::conv_transpose2d");
  return handle.call(input, weight, bias, stride, padding, output_padding, groups, dilation);
}

inline at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  static const auto handle = find<decltype(conv2d_weight)>("torchconv_cpp::conv2d_weight");
  return handle.call(input, grad_output, weight_size, stride, padding, dilation, groups);
}

inline std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                                     at::IntArrayRef dilation, bool ceil_mode) {
  static const auto handle = find<decltype(max_pool2d)>("torchconv_cpp::max_pool2d");
  return handle.call(input, kernel_size, stride, padding, dilation, ceil_mode);
}

inline at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  static const auto handle = find<decltype(max_pool2d_backward)>("torchconv_cpp::max_pool2d_backward");
  return handle.call(grad_output, indices, input_size, kernel_size, stride, padding, dilation);
}

inline at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                             std::optional<int64_t> divisor_override) {
  static const auto handle = find<decltype(avg_pool2d)>("torchconv_cpp::avg_pool2d");
  return handle.call(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override);
}

inline at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                      bool ceil_mode, bool count_include_pad,
                                      std::optional<int64_t> divisor_override) {
  static const auto handle = find<decltype(avg_pool2d_backward)>("torchconv_cpp::avg_pool2d_backward");
  return handle.call(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override);
}

}  // namespace calls
}  // namespace torchconv
