// The memory format of the convolution entry points' results.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/strides.h>

#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// ------------------------------------------------------------- entry points

// The memory format torch gives a convolution's result for these operands on
// the CPU (torchconv/_memory_format.py conv_memory_format): channels_last if
// either is. Every entry point returns its result in it, with the strides of
// a fresh tensor of that memory format, so the Python side has nothing left
// to fix (the cpp backend's MEMORY_FORMAT_DTYPES).
inline bool channels_last(const at::Tensor& a, const at::Tensor& b) {
  return a.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
         b.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// `result` in the layout torch gives it, with exactly the strides of a fresh
// tensor of that layout (size-1 dimensions included: the next op reads its
// layout off them), copied only when its strides differ.
inline at::Tensor in_layout(const at::Tensor& result, bool to_channels_last) {
  const bool fresh = to_channels_last ? result.strides() == at::IntArrayRef(c10::get_channels_last_strides_2d(result.sizes()))
                                      : result.strides() == at::IntArrayRef(c10::contiguous_strides(result.sizes()));
  if (fresh) return result;
  const auto format = to_channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return at::empty(result.sizes(), result.options().memory_format(format)).copy_(result);
}

// A fresh channels_last tensor of `sizes` with the dtype and device of `like`.
inline at::Tensor empty_channels_last(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
