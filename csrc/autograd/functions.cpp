// Autograd of the torchconv_cpp:: ops: one torch::autograd::Function per op,
// registered on the ops' Autograd dispatch key (as torchvision registers the
// autograd of its C++ ops).
//
// These are the formulas of torchconv/_autograd.py, whose docstring derives
// them, written again for the compiled backends' real dtypes (no conjugates:
// the compiled kernels take float32, float64, float16 and bfloat16 only).
// Every backward calls the ops through the dispatcher (calls.h), so it is
// itself recorded when the graph is built for a higher order.
//
// What the Python Functions do and these do not: forward-mode AD (a C++
// Function has no jvp; a call with a tangent raises torch's "jvp is not
// implemented for the c++ API of custom Function yet") and the torch.func
// transforms. torchconv's public functions send such calls to the Python
// Functions (docs/architecture.md, "One call, top to bottom").
//
// Gradients get the memory formats torch's convolutions and poolings give
// them, as torchconv/_memory_format.py's rules say: a convolution's input
// and weight gradients take the forward output's memory format, a pooling's
// input gradient the input's.
#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "../calls.h"
#include "../memory_format.h"
#include "../window.h"

namespace torchconv {
namespace autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Ints = std::vector<int64_t>;

// ------------------------------------------------------------ memory formats
//
// The rules themselves (is_channels_last, conv_memory_format,
// in_memory_format) are ../memory_format.h's; here, which kernel torch runs
// and what that does to the weight gradient's strides.

// Whether torch runs this CPU convolution with oneDNN rather than its native
// kernels: torchconv/_torch_kernels.py's torch_cpu_convolves_with_onednn (ATen's
// ConvParams::use_mkldnn, heuristics included), for the compiled dtypes.
bool torch_cpu_convolves_with_onednn(const at::Tensor& input, const at::Tensor& weight, const Ints& stride,
                                     const Ints& dilation, int64_t groups, bool output_padding_big) {
#if AT_MKLDNN_ENABLED()
  if (!input.device().is_cpu() || !at::globalContext().userEnabledMkldnn() || output_padding_big) return false;
  const at::ScalarType dtype = input.scalar_type();
  if (dtype == at::kBFloat16 || dtype == at::kHalf) {
    // torch's own answer, as its ops give it (looked up once).
    static const bool bf16 = calls::find<bool()>("mkldnn::_is_mkldnn_bf16_supported").call();
    static const bool fp16 = calls::find<bool()>("mkldnn::_is_mkldnn_fp16_supported").call();
    return dtype == at::kBFloat16 ? bf16 : fp16;
  }
  if (dtype != at::kFloat) return false;
  const int64_t n = input.size(0), kh = weight.size(2), kw = weight.size(3);
  const bool strided_or_dilated = stride[0] != 1 || stride[1] != 1 || dilation[0] != 1 || dilation[1] != 1;
  const bool worth_it = strided_or_dilated || n >= 16 || kh != 1 || kw != 1 || at::get_num_threads() > 1;
  const bool native_faster = !(groups > 1 || (kh > 3 && kw > 3) || n > 1 || input.numel() > 20480);
  return worth_it && !native_faster;
#else
  return false;
#endif
}

// torchconv/_torch_kernels.py's torch_keeps_weight_layout: whether torch's kernel for
// this convolution gives the weight gradient the weight's own layout (the
// native CPU kernels of the undilated conv2d, slow_conv2d, and of
// conv_transpose2d do; the dilated native conv2d, oneDNN and the other
// devices do not). `slow`: a transposed convolution's output_padding >= stride.
bool torch_keeps_weight_layout(const at::Tensor& input, const at::Tensor& weight, const Ints& stride,
                               const Ints& dilation, int64_t groups, bool transposed, bool slow) {
  if (!input.device().is_cpu() || (!transposed && (dilation[0] != 1 || dilation[1] != 1))) return false;
  return !torch_cpu_convolves_with_onednn(input, weight, stride, dilation, groups, slow);
}

// A convolution's weight gradient as torch lays it out: the weight's own
// strides where torch's kernel keeps its layout (`native`, see
// torch_keeps_weight_layout) and the weight is already laid out in the
// gradients' memory format (a 1x1 weight is, in both formats, whatever its
// strides); else the format's fresh strides (torchconv/_memory_format.py,
// conv_grads_in_memory_format).
at::Tensor weight_grad_in_memory_format(const at::Tensor& grad_weight, const at::Tensor& weight,
                                        at::MemoryFormat format, bool native) {
  if (!grad_weight.defined()) return grad_weight;
  if (native && weight.is_contiguous(format)) {
    return grad_weight.strides() == weight.strides() ? grad_weight
                                                     : at::empty_like(weight, grad_weight.options()).copy_(grad_weight);
  }
  return in_memory_format(grad_weight, format);
}

// ------------------------------------------------------------ shared formulas

// conv_transpose2d(x, weight) with the output_padding that yields spatial
// `size`: the adjoint of conv2d, which drops the rows a stride skips.
at::Tensor conv_transpose2d_sized(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef size,
                                  const Ints& stride, const Ints& padding, const Ints& dilation, int64_t groups) {
  Ints output_padding(2);
  for (int i = 0; i < 2; ++i) {
    output_padding[i] = size[i] - conv_transpose_output_size(x.size(2 + i), weight.size(2 + i), stride[i],
                                                             padding[i], /*output_padding=*/0, dilation[i]);
  }
  return calls::conv_transpose2d(x, weight, std::nullopt, stride, padding, output_padding, groups, dilation);
}

// conv2d(x, weight) cut to spatial `size`: as the adjoint of
// conv_transpose2d, conv2d computes rows past it when output_padding >=
// stride (allowed below dilation); they are no part of the adjoint.
at::Tensor conv2d_sized(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef size, const Ints& stride,
                        const Ints& padding, const Ints& dilation, int64_t groups) {
  at::Tensor y = calls::conv2d(x, weight, std::nullopt, stride, padding, dilation, groups);
  if (y.size(2) != size[0] || y.size(3) != size[1]) y = y.slice(2, 0, size[0]).slice(3, 0, size[1]);
  return y;
}

at::Tensor bias_grad(const at::Tensor& grad_output) { return grad_output.sum({0, 2, 3}); }

// A Function's arguments other than tensors are saved as one list of ints,
// one entry of the context's map (each entry is a hash-map insert at every
// call that records a graph).
constexpr const char* kArgs = "args";

Ints saved_args(AutogradContext* ctx) { return ctx->saved_data[kArgs].toIntVector(); }

Ints pair_at(const Ints& args, size_t at) { return {args[at], args[at + 1]}; }

// What a convolution's backward needs besides its two tensor operands.
struct ConvArgs {
  Ints stride, padding, dilation;
  int64_t groups;
  bool has_bias;  // the context counts only the tensors passed: a None bias has no place among them
  bool slow;      // conv_transpose2d with output_padding >= stride (torch: contiguous-only)
};

// Saves the operands `a`, `b` (the tensors a bilinear convolution's
// gradients each need the other of) and the convolution's arguments.
void save_conv(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, at::IntArrayRef stride,
               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool has_bias = false,
               bool slow = false) {
  ctx->save_for_backward({a, b});
  ctx->saved_data[kArgs] = Ints{stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups,
                                has_bias, slow};
}

ConvArgs saved_conv(AutogradContext* ctx) {
  const Ints args = saved_args(ctx);
  return {pair_at(args, 0), pair_at(args, 2), pair_at(args, 4), args[6], args[7] != 0, args[8] != 0};
}

// ------------------------------------------------------------ convolutions

struct Conv2d : torch::autograd::Function<Conv2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    save_conv(ctx, input, weight, stride, padding, dilation, groups, bias.has_value() && bias->defined());
    return calls::conv2d(input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &grad_output = grads[0];
    const auto [stride, padding, dilation, groups, has_bias, slow] = saved_conv(ctx);
    at::Tensor grad_input, grad_weight, grad_bias;
    const at::MemoryFormat format = conv_memory_format(input, weight);
    if (ctx->needs_input_grad(0)) {
      grad_input = conv_transpose2d_sized(grad_output, with_format_strides(weight, format), input.sizes().slice(2),
                                          stride, padding, dilation, groups);
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = calls::conv2d_weight(input, grad_output, weight.sizes(), stride, padding, dilation, groups);
    }
    if (has_bias && ctx->needs_input_grad(2)) grad_bias = bias_grad(grad_output);
    const bool native = torch_keeps_weight_layout(input, weight, stride, dilation, groups, false, false);
    return {in_memory_format(grad_input, format), weight_grad_in_memory_format(grad_weight, weight, format, native),
            grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct ConvTranspose2d : torch::autograd::Function<ConvTranspose2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // ATen's is_output_padding_big: torch's fallback for it is contiguous-only.
    const bool slow = output_padding[0] >= stride[0] || output_padding[1] >= stride[1];
    save_conv(ctx, input, weight, stride, padding, dilation, groups, bias.has_value() && bias->defined(), slow);
    return calls::conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1];
    const auto [stride, padding, dilation, groups, has_bias, slow] = saved_conv(ctx);
    const at::MemoryFormat format = conv_memory_format(input, weight, slow);
    // Both gradients read grad_output as the plane their windows lie on,
    // which the channels_last kernels read dense: made dense once here, not
    // once by each (a grad_output expanded from a sum would be copied twice).
    const bool both = ctx->needs_input_grad(0) && ctx->needs_input_grad(1);
    const at::Tensor grad_output =
        both && format == at::MemoryFormat::ChannelsLast ? grads[0].contiguous(format) : grads[0];
    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = conv2d_sized(grad_output, with_format_strides(weight, format), input.sizes().slice(2), stride,
                                padding, dilation, groups);
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = calls::conv2d_weight(grad_output, input, weight.sizes(), stride, padding, dilation, groups);
    }
    if (has_bias && ctx->needs_input_grad(2)) grad_bias = bias_grad(grad_output);
    const bool native = torch_keeps_weight_layout(input, weight, stride, dilation, groups, true, slow);
    return {in_memory_format(grad_input, format), weight_grad_in_memory_format(grad_weight, weight, format, native),
            grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// G = conv2d_weight(x, g), bilinear: each gradient is a convolution with dL/dG.
struct Conv2dWeight : torch::autograd::Function<Conv2dWeight> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& grad_output,
                            at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    save_conv(ctx, input, grad_output, stride, padding, dilation, groups);
    return calls::conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &grad_output = saved[1], &grad_grad_weight = grads[0];
    const auto [stride, padding, dilation, groups, has_bias, slow] = saved_conv(ctx);
    at::Tensor grad_input, grad_grad_output;
    if (ctx->needs_input_grad(0)) {
      grad_input = conv_transpose2d_sized(grad_output, grad_grad_weight, input.sizes().slice(2), stride, padding,
                                          dilation, groups);
    }
    if (ctx->needs_input_grad(1)) {
      grad_grad_output = conv2d_sized(input, grad_grad_weight, grad_output.sizes().slice(2), stride, padding,
                                      dilation, groups);
    }
    return {grad_input, grad_grad_output, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ------------------------------------------------------------ pooling

// What a pooling's backward needs besides tensors: the window, the input's
// spatial size and memory format (its gradient's), and average pooling's
// divisor rule. Max pooling's window has a dilation, average pooling's not.
struct PoolArgs {
  Ints kernel_size, stride, padding, dilation, input_size;
  bool channels_last, ceil_mode, count_include_pad;
  std::optional<int64_t> divisor_override;
};

void save_pool(AutogradContext* ctx, at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
               at::IntArrayRef dilation, const at::Tensor& input, bool ceil_mode, bool count_include_pad = false,
               std::optional<int64_t> divisor_override = std::nullopt) {
  ctx->saved_data[kArgs] = Ints{kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                                dilation[0], dilation[1], input.size(2), input.size(3), is_channels_last(input),
                                ceil_mode, count_include_pad, divisor_override.has_value(),
                                divisor_override.value_or(0)};
}

PoolArgs saved_pool(AutogradContext* ctx) {
  const Ints a = saved_args(ctx);
  return {pair_at(a, 0), pair_at(a, 2), pair_at(a, 4), pair_at(a, 6), pair_at(a, 8), a[10] != 0, a[11] != 0,
          a[12] != 0, a[13] != 0 ? std::optional<int64_t>(a[14]) : std::nullopt};
}

at::Tensor in_input_memory_format(const at::Tensor& grad_input, const PoolArgs& p) {
  return in_memory_format(grad_input, p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

// values[n, c].flatten()[indices[n, c]]: the adjoint of max pooling's
// scatter. An index past the plane marks a window that saw no input: it
// gathers 0.
at::Tensor gather_at(const at::Tensor& values, const at::Tensor& indices) {
  const int64_t plane = values.size(2) * values.size(3);
  const at::Tensor flat = indices.reshape({indices.size(0), indices.size(1), indices.size(2) * indices.size(3)});
  const at::Tensor outside = flat >= plane;
  const at::Tensor gathered =
      values.reshape({values.size(0), values.size(1), plane}).gather(2, flat.clamp_max(std::max<int64_t>(plane - 1, 0)));
  return gathered.masked_fill(outside, 0).reshape(indices.sizes());
}

// gx = scatter(g, idx), linear in g; its backward gathers at idx (gather_at,
// whose own backward, through torch's gather, is this scatter again).
struct MaxPool2dBackward : torch::autograd::Function<MaxPool2dBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& indices,
                            at::IntArrayRef input_size, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({indices});
    return calls::max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor indices = ctx->get_saved_variables()[0];
    return {gather_at(grads[0], indices), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// (y, idx) = max_pool2d(x); backward: scatter dL/dy to idx.
struct MaxPool2d : torch::autograd::Function<MaxPool2d> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [values, indices] = calls::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
    ctx->mark_non_differentiable({indices});
    ctx->save_for_backward({indices});
    save_pool(ctx, kernel_size, stride, padding, dilation, input, ceil_mode);
    return {values, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor indices = ctx->get_saved_variables()[0];
    const PoolArgs p = saved_pool(ctx);
    const at::Tensor grad_input = calls::max_pool2d_backward(grads[0], indices, p.input_size, p.kernel_size,
                                                             p.stride, p.padding, p.dilation);
    return {in_input_memory_format(grad_input, p), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// gx = avg_pool2d_backward(g): linear in g; its adjoint is avg_pool2d.
struct AvgPool2dBackward : torch::autograd::Function<AvgPool2dBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, at::IntArrayRef input_size,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    save_pool(ctx, kernel_size, stride, padding, {1, 1}, grad_output, ceil_mode, count_include_pad, divisor);
    return calls::avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                                      count_include_pad, divisor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const PoolArgs p = saved_pool(ctx);
    const at::Tensor grad_grad_output = calls::avg_pool2d(grads[0], p.kernel_size, p.stride, p.padding, p.ceil_mode,
                                                          p.count_include_pad, p.divisor_override);
    return {grad_grad_output, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// y = avg_pool2d(x): linear; backward spreads dL/dy over the windows.
struct AvgPool2d : torch::autograd::Function<AvgPool2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    save_pool(ctx, kernel_size, stride, padding, {1, 1}, input, ceil_mode, count_include_pad, divisor);
    return calls::avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const PoolArgs p = saved_pool(ctx);
    const at::Tensor grad_input = calls::avg_pool2d_backward(grads[0], p.input_size, p.kernel_size, p.stride,
                                                             p.padding, p.ceil_mode, p.count_include_pad,
                                                             p.divisor_override);
    return {in_input_memory_format(grad_input, p), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// ------------------------------------------------------------ registration

// Whether a call with these tensors records anything: grad mode on and one
// requiring grad, or one carrying a forward-mode tangent (which the Function
// then refuses, in torch's words, rather than dropping it). Otherwise the op
// runs its kernel directly, without building a graph node.
bool records(std::initializer_list<const at::Tensor*> tensors) {
  const bool grad_mode = at::GradMode::is_enabled();
  for (const at::Tensor* t : tensors) {
    if (!t->defined()) continue;
    if ((grad_mode && t->requires_grad()) || t->_fw_grad(/*level=*/0).defined()) return true;
  }
  return false;
}

// An op's Autograd kernel: `Function` records the call when it records
// anything (see records); otherwise `call` runs the op below autograd,
// without a graph node.
template <typename Function, typename Call, typename... Args>
auto recorded_or_direct(std::initializer_list<const at::Tensor*> tensors, const Call& call, const Args&... args) {
  if (!records(tensors)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call(args...);
  }
  return Function::apply(args...);
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const at::Tensor none;
  return recorded_or_direct<Conv2d>({&input, &weight, bias.has_value() ? &*bias : &none}, calls::conv2d, input, weight,
                                    bias, stride, padding, dilation, groups);
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  const at::Tensor none;
  return recorded_or_direct<ConvTranspose2d>({&input, &weight, bias.has_value() ? &*bias : &none},
                                             calls::conv_transpose2d, input, weight, bias, stride, padding,
                                             output_padding, groups, dilation);
}

at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return recorded_or_direct<Conv2dWeight>({&input, &grad_output}, calls::conv2d_weight, input, grad_output,
                                          weight_size, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  if (!records({&input})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return calls::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
  const variable_list out = MaxPool2d::apply(input, kernel_size, stride, padding, dilation, ceil_mode);
  return {out[0], out[1]};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation) {
  return recorded_or_direct<MaxPool2dBackward>({&grad_output}, calls::max_pool2d_backward, grad_output, indices,
                                               input_size, kernel_size, stride, padding, dilation);
}

at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                      std::optional<int64_t> divisor) {
  return recorded_or_direct<AvgPool2d>({&input}, calls::avg_pool2d, input, kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, divisor);
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                               bool count_include_pad, std::optional<int64_t> divisor) {
  return recorded_or_direct<AvgPool2dBackward>({&grad_output}, calls::avg_pool2d_backward, grad_output, input_size,
                                               kernel_size, stride, padding, ceil_mode, count_include_pad, divisor);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, Autograd, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv_transpose2d", &conv_transpose2d);
  m.impl("conv2d_weight", &conv2d_weight);
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("avg_pool2d", &avg_pool2d);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward);
}

}  // namespace autograd
}  // namespace torchconv
