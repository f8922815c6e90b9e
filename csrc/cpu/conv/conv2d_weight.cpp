// torchconv_cpp::conv2d_weight on the CPU (the weight gradient of conv2d
// and of conv_transpose2d): checks, then the kernel choose_kernel picks
// (choice.h), its result in torch's memory format.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../../memory_format.h"
#include "choice.h"
#include "depthwise_nhwc.h"
#include "direct.h"
#include "direct_tiled_weight.h"
#include "gemm_nchw.h"
#include "gemm_nhwc.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {
namespace {

at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d_weight", input, at::kCPU);
  check_conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups);
  const Window window = make_window(weight_size[2], weight_size[3], stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    grad_output.size(1), grad_output.size(2), grad_output.size(3), window};
  const at::MemoryFormat format = conv_memory_format(input, grad_output);
  const bool to_channels_last = format == at::MemoryFormat::ChannelsLast;
  const ConvKernel kernel = choose_kernel(Computation::Conv2dWeight, s, to_channels_last, input.scalar_type());
  switch (kernel) {
    case ConvKernel::DepthwiseNHWC: {
      const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor dy = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
      at::Tensor grad_weight = empty_channels_last(weight_size, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
        conv2d_weight_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                               grad_weight.data_ptr<scalar_t>());
      });
      return grad_weight;
    }
    case ConvKernel::GemmNHWC: {
      const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
      at::Tensor grad_weight = empty_channels_last(weight_size, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
        with_gemm_operand<scalar_t>([&](auto operand) {
          using operand_t = decltype(operand);
          conv2d_weight_nhwc_kernel<scalar_t>(s, x.data_ptr<scalar_t>(),
                                              WindowsOperand<scalar_t, operand_t>(grad_output, true),
                                              grad_weight.data_ptr<scalar_t>());
        });
      });
      return grad_weight;
    }
    case ConvKernel::Tiled: {
      at::Tensor grad_weight = at::empty(weight_size, input.options());
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
        tiled_conv2d_weight<scalar_t>(s, input, grad_output, grad_weight.data_ptr<scalar_t>());
      });
      return in_memory_format(grad_weight, format);
    }
    case ConvKernel::TiledPhases:  // conv_transpose2d's only
    case ConvKernel::FlippedGemmNCHW:
    case ConvKernel::Direct:
    case ConvKernel::GemmNCHW:
      break;
  }
  // Direct and GemmNCHW read and write contiguous tensors.
  const bool direct = kernel == ConvKernel::Direct;
  const at::Tensor x = input.contiguous();
  at::Tensor grad_weight = at::empty(weight_size, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
    if (direct) {
      const at::Tensor dy = grad_output.contiguous();
      conv2d_weight_direct(s, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), grad_weight.data_ptr<scalar_t>());
    } else {
      with_gemm_operand<scalar_t>([&](auto operand) {
        using operand_t = decltype(operand);
        conv2d_weight_kernel<scalar_t>(s, x.data_ptr<scalar_t>(),
                                       WindowsOperand<scalar_t, operand_t>(grad_output, false),
                                       grad_weight.data_ptr<scalar_t>());
      });
    }
  });
  return in_memory_format(grad_weight, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) { m.impl("conv2d_weight", &conv2d_weight); }

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
