// torchconv_cpp::conv_transpose2d on the CPU: checks, then the kernel
// choose_kernel picks (choice.h), its result in torch's memory format.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../../memory_format.h"
#include "choice.h"
#include "depthwise_nhwc.h"
#include "direct.h"
#include "direct_tiled.h"
#include "direct_tiled_phases.h"
#include "gemm_nchw.h"
#include "gemm_nhwc.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {
namespace {

// conv2d whose output is conv_transpose2d's of shape s (runs_as_flipped_conv2d):
// the same input as its plane side, padded by dilation * (kernel - 1) - pad.
ConvShape flipped_conv2d(const ConvShape& s) {
  const Window& w = s.window;
  const Window window{w.kernel_h, w.kernel_w, 1, 1, w.dilation_h * (w.kernel_h - 1) - w.pad_h,
                      w.dilation_w * (w.kernel_w - 1) - w.pad_w, w.dilation_h, w.dilation_w};
  return ConvShape{s.batch,          s.groups,  s.windows_channels, s.windows_h, s.windows_w,
                   s.plane_channels, s.plane_h, s.plane_w,          window};
}

// Its weight: conv_transpose2d's (in, out / groups, kh, kw) with its two
// channel axes swapped per group and its taps flipped, (out, in / groups, kh, kw).
at::Tensor flipped_weight(const at::Tensor& weight, int64_t groups) {
  const int64_t in_group = weight.size(0) / groups, out_group = weight.size(1), kh = weight.size(2), kw = weight.size(3);
  return weight.view({groups, in_group, out_group, kh, kw})
      .transpose(1, 2)
      .flip({3, 4})
      .reshape({groups * out_group, in_group, kh, kw});
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  check_kernel_device("conv_transpose2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size =
      check_conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  const int64_t out_channels = weight.size(1) * groups;
  const ConvShape s{input.size(0), groups, out_channels, out_h, out_w,
                    input.size(1), input.size(2), input.size(3), window};
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  const at::MemoryFormat format = conv_memory_format(input, weight);
  const bool to_channels_last = format == at::MemoryFormat::ChannelsLast;
  const std::vector<int64_t> out_sizes{s.batch, out_channels, out_h, out_w};
  const ConvKernel kernel = choose_kernel(Computation::ConvTranspose2d, s, to_channels_last, input.scalar_type());
  switch (kernel) {
    case ConvKernel::DepthwiseNHWC: {
      const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast), w = tap_major_weight(weight);
      at::Tensor out = empty_channels_last(out_sizes, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
        using acc = acc_t<scalar_t>;
        conv_transpose2d_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(),
                                                  data_or_null<acc>(b), out.data_ptr<scalar_t>());
      });
      return out;
    }
    case ConvKernel::Tiled:
      return tiled_convolution<true>(s, input, weight, b, out_sizes, to_channels_last);
    case ConvKernel::TiledPhases:
      return tiled_phases_conv_transpose2d(s, input, weight, b, out_sizes, to_channels_last);
    case ConvKernel::GemmNHWC: {
      at::Tensor out = empty_channels_last(out_sizes, input);
      TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
        with_gemm_operand<scalar_t>([&](auto operand) {
          using operand_t = decltype(operand);
          const at::Tensor w = gemm_weight<operand_t>(weight, true);
          conv_transpose2d_nhwc_kernel<scalar_t>(s, WindowsOperand<scalar_t, operand_t>(input, true),
                                                 w.data_ptr<operand_t>(), data_or_null<acc_t<scalar_t>>(b), out);
        });
      });
      return out;
    }
    case ConvKernel::Direct:
    case ConvKernel::FlippedGemmNCHW:
    case ConvKernel::GemmNCHW:
      break;
  }
  // Direct, FlippedGemmNCHW and GemmNCHW read and write contiguous tensors.
  at::Tensor out = at::empty(out_sizes, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
    using acc = acc_t<scalar_t>;
    if (kernel == ConvKernel::Direct) {
      const at::Tensor x = input.contiguous(), w = computed_in_opmath(weight);
      conv_transpose2d_direct(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                              out.data_ptr<scalar_t>());
      return;
    }
    with_gemm_operand<scalar_t>([&](auto operand) {
      using operand_t = decltype(operand);
      if (kernel == ConvKernel::FlippedGemmNCHW) {
        const at::Tensor x = input.contiguous(), w = gemm_weight<operand_t>(flipped_weight(weight, groups), false);
        conv2d_kernel<scalar_t>(flipped_conv2d(s), x.data_ptr<scalar_t>(), w.data_ptr<operand_t>(),
                                data_or_null<acc>(b), out.data_ptr<scalar_t>());
        return;
      }
      const at::Tensor w = gemm_weight<operand_t>(weight, false);
      conv_transpose2d_kernel<scalar_t>(s, WindowsOperand<scalar_t, operand_t>(input, false), w.data_ptr<operand_t>(),
                                        data_or_null<acc>(b), out);
    });
  });
  return in_memory_format(out, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) { m.impl("conv_transpose2d", &conv_transpose2d); }

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
