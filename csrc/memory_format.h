// The memory formats torch gives the ops' results, in one place for the CPU
// kernels (cpu/conv/), the C++ autograd (autograd/functions.cpp) and the
// CUDA kernels (cuda/), which also compile as plain C++ for the tests'
// emulation (cuda/emulation.h): ATen only, nothing of a device's own.
// torchconv/_memory_format.py holds the same rules for the Python side.
//
// Every CPU convolution entry point returns its result in the memory format
// torch gives it, with the strides of a fresh tensor of that format, so the
// Python side has nothing left to fix (the cpp backend's
// MEMORY_FORMAT_DTYPES).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/strides.h>

namespace torchconv {

// Whether torch takes a 4-d tensor for channels_last (its
// suggest_memory_format, which is channels_last or contiguous for 4-d).
inline bool is_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// The memory format torch gives a convolution's result (and gradients) for
// operands a and b (torchconv/_memory_format.py conv_memory_format), under
// the rule of `device`'s kernels: channels_last if either operand is, except
// with CUDA's rule (cuDNN's, as torch applies it) for float64, and for a
// transposed convolution whose output_padding reaches its stride
// (`slow_transposed`: torch runs it on a contiguous-only fallback kernel).
inline at::MemoryFormat conv_memory_format(c10::DeviceType device, const at::Tensor& a, const at::Tensor& b,
                                           bool slow_transposed = false) {
  if (device == at::kCUDA && (a.scalar_type() == at::kDouble || b.scalar_type() == at::kDouble || slow_transposed)) {
    return at::MemoryFormat::Contiguous;
  }
  return is_channels_last(a) || is_channels_last(b) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The same under the rule of the device the operands are on.
inline at::MemoryFormat conv_memory_format(const at::Tensor& a, const at::Tensor& b, bool slow_transposed = false) {
  return conv_memory_format(a.device().type(), a, b, slow_transposed);
}

// `t` with exactly the strides of a fresh tensor in `format` (size-1
// dimensions included: the next op reads its memory format off them),
// copied only when its strides differ; undefined stays undefined.
inline at::Tensor in_memory_format(const at::Tensor& t, at::MemoryFormat format) {
  if (!t.defined()) return t;
  const bool fresh = format == at::MemoryFormat::ChannelsLast
                         ? t.strides() == at::IntArrayRef(c10::get_channels_last_strides_2d(t.sizes()))
                         : t.strides() == at::IntArrayRef(c10::contiguous_strides(t.sizes()));
  return fresh ? t : t.clone(format);
}

// `t` viewed with the strides of a fresh tensor in `format` when its
// elements already lie in that order (only the strides of size-1
// dimensions differ, as a 1x1 weight's do): a view the kernels read
// `format` off (is_channels_last). A backward's incoming gradient may
// suggest no format (the gradient of a sum is expanded, every stride 0), so
// its kernels learn the format of the gradients torch gives from the weight.
inline at::Tensor with_format_strides(const at::Tensor& t, at::MemoryFormat format) {
  if (format != at::MemoryFormat::ChannelsLast || t.dim() != 4 || !t.is_contiguous(format)) return t;
  const std::vector<int64_t> strides = c10::get_channels_last_strides_2d(t.sizes());
  return t.strides() == at::IntArrayRef(strides) ? t : t.as_strided(t.sizes(), strides, t.storage_offset());
}

// A fresh channels_last tensor of `sizes` with the dtype and device of `like`.
inline at::Tensor empty_channels_last(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

}  // namespace torchconv
