// torchconv_cpp::conv2d on the CPU: checks, then the kernel choose_kernel
// picks (choice.h), its result in torch's memory format.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../../memory_format.h"
#include "choice.h"
#include "depthwise_nhwc.h"
#include "direct.h"
#include "direct_tiled.h"
#include "gemm_nchw.h"
#include "gemm_nhwc.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {
namespace {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    weight.size(0), out_h, out_w, window};
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  const at::MemoryFormat format = conv_memory_format(input, weight);
  const bool to_channels_last = format == at::MemoryFormat::ChannelsLast;
  const std::vector<int64_t> out_sizes{s.batch, s.windows_channels, out_h, out_w};
  const ConvKernel kernel = choose_kernel(Computation::Conv2d, s, to_channels_last, input.scalar_type());
  switch (kernel) {
    case ConvKernel::DepthwiseNHWC: {
      const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast), w = tap_major_weight(weight);
      at::Tensor out = empty_channels_last(out_sizes, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
        using acc = acc_t<scalar_t>;
        conv2d_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                                        out.data_ptr<scalar_t>());
      });
      return out;
    }
    case ConvKernel::Tiled:
      return tiled_convolution<false>(s, input, weight, b, out_sizes, to_channels_last);
    case ConvKernel::GemmNHWC: {
      const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
      at::Tensor out = empty_channels_last(out_sizes, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
        with_gemm_operand<scalar_t>([&](auto operand) {
          using operand_t = decltype(operand);
          const at::Tensor w = gemm_weight<operand_t>(weight, true);
          conv2d_nhwc_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<operand_t>(),
                                       data_or_null<acc_t<scalar_t>>(b), out.data_ptr<scalar_t>());
        });
      });
      return out;
    }
    case ConvKernel::TiledPhases:  // conv_transpose2d's only
    case ConvKernel::FlippedGemmNCHW:
    case ConvKernel::Direct:
    case ConvKernel::GemmNCHW:
      break;
  }
  // Direct and GemmNCHW read and write contiguous tensors.
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(out_sizes, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
    using acc = acc_t<scalar_t>;
    if (kernel == ConvKernel::Direct) {
      const at::Tensor w = computed_in_opmath(weight);
      conv2d_direct(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b), out.data_ptr<scalar_t>());
      return;
    }
    with_gemm_operand<scalar_t>([&](auto operand) {
      using operand_t = decltype(operand);
      const at::Tensor w = gemm_weight<operand_t>(weight, false);
      conv2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<operand_t>(), data_or_null<acc>(b),
                              out.data_ptr<scalar_t>());
    });
  });
  return in_memory_format(out, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) { m.impl("conv2d", &conv2d); }

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
