// CUDA kernels of conv2d, conv_transpose2d and the weight gradient of both.
//
// The same three computations as the CPU kernels (cpu/conv/), written
// pixel-major so that one GEMM covers a whole chunk of samples:
//
//   conv2d            Y  [rows, O]    = im2col(x) [rows, K] . W_cl^T   (per group)
//   conv_transpose2d  y  = col2im(X [rows, Cin] . W_cl)                (per group)
//   conv2d_weight     dW_cl [O, K]    = dY^T [O, rows] . im2col(x)      (per group)
//
// where rows are the window positions (n, y, x) of the chunk's samples, K runs
// over (tap, channel) as columns.cuh lays it out, and W_cl is the weight in
// channels_last order ([O, kH, kW, C/G], a copy of the small weight). The
// GEMMs are ATen's (at::mm / at::bmm, i.e. cuBLAS, on the current stream,
// honouring torch's TF32 setting); im2col and col2im are this project's.
// Activations are read and written channels_last; a contiguous result is
// one layout copy at the end.
//
// Grouped convolutions with one plane channel per group (depthwise) skip
// the GEMM: direct kernels in depthwise.cuh. The plane side is the one the
// windows lie on (im2col reads it, col2im writes it), the windows side the
// one with a value per window position (cpu/conv/shape.h).
//
// Determinism: no atomics anywhere. col2im is a gather in fixed tap order,
// the weight gradient sums the chunks in order (in float32 for float16 and
// bfloat16), and cuBLAS gives bit-identical results run to run on one GPU.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "checks.h"
#include "columns.cuh"
#include "depthwise.cuh"
#include "memory_format.h"
#include "ops.h"

namespace torchconv {
namespace cuda {
namespace {

// Upper bound on one chunk's column matrix: enough rows for large GEMMs,
// bounded memory whatever the batch size. (The emulation test sets a tiny
// one, so that its small cases run in many chunks.)
#ifdef TORCHCONV_COLUMN_BYTES
constexpr int64_t kColumnBytes = TORCHCONV_COLUMN_BYTES;
#else
constexpr int64_t kColumnBytes = int64_t(256) << 20;
#endif

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

// Results take the memory format torch gives them on CUDA (cuDNN's rule:
// conv_memory_format(at::kCUDA, ...), memory_format.h), also where these
// kernels run emulated on CPU tensors. The Python layer gives every result
// torch's exact memory format (torchconv/_memory_format.py); choosing the
// same one here saves it a copy.

// The (N * H * W, C) matrix of a channels_last tensor's memory (a view).
at::Tensor pixel_rows(const at::Tensor& channels_last) {
  return channels_last.permute({0, 2, 3, 1}).reshape(
      {channels_last.size(0) * channels_last.size(2) * channels_last.size(3), channels_last.size(1)});
}

// How many samples one chunk holds: its columns fit kColumnBytes (at least
// one sample) and its row count fits cuBLAS's 32-bit sizes.
int64_t chunk_samples(int64_t batch, int64_t rows_per_sample, int64_t width, int64_t element_size) {
  const int64_t sample_bytes = std::max<int64_t>(1, rows_per_sample * width * element_size);
  int64_t chunk = std::max<int64_t>(1, kColumnBytes / sample_bytes);
  chunk = std::min(chunk, std::max<int64_t>(1, std::numeric_limits<int>::max() / std::max<int64_t>(1, rows_per_sample)));
  return std::min(chunk, std::max<int64_t>(batch, 1));
}

// out[:, g] = a[:, g] . b[g] for every group g, where out is [R, G * n], a is
// [R, G * k] (each group a block of columns) and b is [G, k, n]. One GEMM:
// plain for one group, strided-batched over the groups otherwise.
void grouped_mm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  const int64_t groups = b.size(0), rows = a.size(0);
  if (groups == 1) {
    at::mm_out(out, a, b.select(0, 0));
    return;
  }
  at::Tensor out_groups = out.view({rows, groups, b.size(2)}).transpose(0, 1);
  at::bmm_out(out_groups, a.view({rows, groups, b.size(1)}).transpose(0, 1), b);
}

bool is_pointwise(const Window& w) {
  return w.kernel_h == 1 && w.kernel_w == 1 && w.stride_h == 1 && w.stride_w == 1 && w.pad_h == 0 && w.pad_w == 0;
}

// Whether the planes' own pixel rows are their column matrix: a pointwise
// window over windows of the planes' size. (conv_transpose2d's weight
// gradient can have a 1x1 window and larger planes: output_padding.)
bool planes_are_columns(const at::Tensor& planes, const ColumnShape& s) {
  return is_pointwise(s.window) && planes.size(2) == s.windows_h && planes.size(3) == s.windows_w;
}

// The columns of samples [first, first + count) of channels_last planes:
// the planes' own pixel rows when they are their columns (no copy),
// otherwise im2col written into `workspace` (at least rows x width elements).
at::Tensor plane_columns(const at::Tensor& planes, const ColumnShape& s, at::Tensor& workspace) {
  const int64_t windows = s.windows_h * s.windows_w;
  if (planes_are_columns(planes, s)) {
    return pixel_rows(planes).narrow(0, s.first_sample * windows, s.rows());
  }
  at::Tensor columns = workspace.narrow(0, 0, s.rows());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, planes.scalar_type(), "torchconv_cpp::im2col", [&] {
    const int64_t count = s.rows() * s.width();
    launch_indexed(im2col_kernel<scalar_t, int32_t>, im2col_kernel<scalar_t, int64_t>, fits_int32({count}), count,
                   planes.const_data_ptr<scalar_t>(), layout_of(planes), s, columns.data_ptr<scalar_t>());
  });
  return columns;
}

// Grouped convolutions with one plane channel per group run the direct
// kernels of depthwise.cuh instead of a GEMM per group.
bool is_depthwise(int64_t groups, int64_t plane_channels_per_group) {
  return groups > 1 && plane_channels_per_group == 1;
}

template <typename scalar_t>
const scalar_t* bias_pointer(const at::Tensor& bias) {
  return bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
}

at::Tensor column_workspace(const at::Tensor& planes, const ColumnShape& chunk) {
  if (planes_are_columns(planes, chunk)) return at::Tensor();
  return at::empty({chunk.rows(), chunk.width()}, planes.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace

// ----------------------------------------------------------------- conv2d

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d", input, kKernelDevice);
  const std::pair<int64_t, int64_t> out_size = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const DeviceGuard guard(input.device());
  const int64_t batch = input.size(0), out_channels = weight.size(0);
  const int64_t out_h = out_size.first, out_w = out_size.second, windows = out_h * out_w;
  const at::MemoryFormat format = conv_memory_format(at::kCUDA, input, weight);
  at::Tensor out = at::empty({batch, out_channels, out_h, out_w}, input.options().memory_format(format));
  if (out.numel() == 0) return out;
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  if (is_depthwise(groups, weight.size(1))) {
    const at::Tensor taps = weight.contiguous(), bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::conv2d", [&] {
      launch_indexed(depthwise_conv2d_kernel<scalar_t, int32_t>, depthwise_conv2d_kernel<scalar_t, int64_t>,
                     fits_int32({out.numel(), input.numel()}), out.numel(), input.const_data_ptr<scalar_t>(),
                     layout_of(input), taps.const_data_ptr<scalar_t>(), bias_pointer<scalar_t>(bias_values), window,
                     layout_of(out), format == kChannelsLast, out.data_ptr<scalar_t>());
    });
    return out;
  }

  const at::Tensor planes = input.contiguous(kChannelsLast);
  // [G, K/G, O/G]: group g's W_cl block, transposed for the GEMM's right side.
  const int64_t group_width = weight.size(1) * weight.size(2) * weight.size(3);
  const at::Tensor weight_columns =
      weight.permute({0, 2, 3, 1}).contiguous().view({groups, out_channels / groups, group_width}).transpose(1, 2);
  ColumnShape s{0, 0, out_h, out_w, groups, weight.size(1), window};
  const int64_t chunk = chunk_samples(batch, windows, s.width(), input.element_size());
  s.samples = chunk;
  at::Tensor workspace = column_workspace(planes, s);
  const at::Tensor out_rows = format == kChannelsLast ? pixel_rows(out) : at::Tensor();
  for (int64_t first = 0; first < batch; first += chunk) {
    s.first_sample = first;
    s.samples = std::min(chunk, batch - first);
    const at::Tensor columns = plane_columns(planes, s, workspace);
    at::Tensor rows = format == kChannelsLast ? out_rows.narrow(0, first * windows, s.rows())
                                              : at::empty({s.rows(), out_channels}, input.options());
    grouped_mm(rows, columns, weight_columns);
    if (bias.has_value()) rows.add_(*bias);
    if (format != kChannelsLast) {
      out.narrow(0, first, s.samples).copy_(rows.view({s.samples, out_h, out_w, out_channels}).permute({0, 3, 1, 2}));
    }
  }
  return out;
}

// ------------------------------------------------------- conv_transpose2d

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  check_kernel_device("conv_transpose2d", input, kKernelDevice);
  const std::pair<int64_t, int64_t> out_size =
      check_conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const DeviceGuard guard(input.device());
  const int64_t batch = input.size(0), in_channels = input.size(1);
  const int64_t group_out_channels = weight.size(1), out_channels = group_out_channels * groups;
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const at::MemoryFormat format = conv_memory_format(at::kCUDA, input, weight);
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  if (is_depthwise(groups, group_out_channels)) {
    at::Tensor out = at::empty({batch, out_channels, out_h, out_w}, input.options().memory_format(format));
    const at::Tensor taps = weight.contiguous(), bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
      launch_indexed(depthwise_conv_transpose2d_kernel<scalar_t, int32_t>,
                     depthwise_conv_transpose2d_kernel<scalar_t, int64_t>, fits_int32({out.numel(), input.numel()}),
                     out.numel(), input.const_data_ptr<scalar_t>(), layout_of(input), taps.const_data_ptr<scalar_t>(),
                     bias_pointer<scalar_t>(bias_values), window, layout_of(out), format == kChannelsLast,
                     out.data_ptr<scalar_t>());
    });
    return out;
  }
  // The kernels below write channels_last; a contiguous result is a copy of it.
  at::Tensor out = at::empty({batch, out_channels, out_h, out_w}, input.options().memory_format(kChannelsLast));
  if (out.numel() == 0) return out.contiguous(format);

  // Here the input is the windows side (the GEMM's rows) and the output the plane side.
  const int64_t windows_h = input.size(2), windows_w = input.size(3), windows = windows_h * windows_w;
  const at::Tensor x_rows = pixel_rows(input.contiguous(kChannelsLast));
  // [G, Cin/G, K/G]: W_cl ([Cin, kH, kW, Cout/G]) by groups.
  const int64_t group_width = weight.size(2) * weight.size(3) * group_out_channels;
  const at::Tensor weight_columns =
      weight.permute({0, 2, 3, 1}).contiguous().view({groups, in_channels / groups, group_width});
  ColumnShape s{0, 0, windows_h, windows_w, groups, group_out_channels, window};
  const bool pointwise = planes_are_columns(out, s);
  const int64_t chunk = chunk_samples(batch, windows, s.width(), input.element_size());
  s.samples = chunk;
  at::Tensor workspace = column_workspace(out, s);
  const at::Tensor out_rows = pixel_rows(out);
  const at::Tensor bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
  for (int64_t first = 0; first < batch; first += chunk) {
    s.first_sample = first;
    s.samples = std::min(chunk, batch - first);
    const at::Tensor x = x_rows.narrow(0, first * windows, s.rows());
    if (pointwise) {  // the columns are the output's own pixel rows
      at::Tensor rows = out_rows.narrow(0, first * windows, s.rows());
      grouped_mm(rows, x, weight_columns);
      if (bias.has_value()) rows.add_(bias_values);
      continue;
    }
    at::Tensor columns = workspace.narrow(0, 0, s.rows());
    grouped_mm(columns, x, weight_columns);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::col2im", [&] {
      const int64_t count = s.samples * out_channels * out_h * out_w;
      launch_indexed(col2im_kernel<scalar_t, int32_t>, col2im_kernel<scalar_t, int64_t>, fits_int32({count}), count,
                     columns.const_data_ptr<scalar_t>(), s, bias_pointer<scalar_t>(bias_values), layout_of(out),
                     out.data_ptr<scalar_t>());
    });
  }
  return out.contiguous(format);
}

// ---------------------------------------------------------- conv2d_weight

at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d_weight", input, kKernelDevice);
  check_conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups);
  const DeviceGuard guard(input.device());
  const int64_t batch = input.size(0), out_channels = weight_size[0];
  const int64_t windows_h = grad_output.size(2), windows_w = grad_output.size(3), windows = windows_h * windows_w;
  const at::MemoryFormat format = conv_memory_format(at::kCUDA, input, grad_output);
  const Window window = make_window(weight_size[2], weight_size[3], stride, padding, dilation);
  if (is_depthwise(groups, weight_size[1])) {
    at::Tensor grad_weight = at::empty(weight_size, input.options());
    if (grad_weight.numel() == 0) return grad_weight.contiguous(format);
    TORCH_CHECK(grad_weight.numel() <= std::numeric_limits<int>::max(),
                "torchconv_cpp::conv2d_weight: more weight elements than CUDA blocks: ", weight_size);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
      // One block per weight element, each summing over the batch's window positions.
      launch_blocks_indexed(depthwise_conv2d_weight_kernel<scalar_t, int32_t>,
                            depthwise_conv2d_weight_kernel<scalar_t, int64_t>, fits_int32({batch * windows}),
                            static_cast<unsigned int>(grad_weight.numel()), kReduceThreads,
                            input.const_data_ptr<scalar_t>(), layout_of(input),
                            grad_output.const_data_ptr<scalar_t>(), layout_of(grad_output), window,
                            grad_weight.data_ptr<scalar_t>());
    });
    return grad_weight.contiguous(format);
  }
  // Sums run in float32 for float16/bfloat16 (as cuDNN's do), in the dtype otherwise.
  const at::ScalarType sum_type = at::toOpMathType(input.scalar_type());
  // W_cl layout: [O, kH, kW, C/G], viewed as [G, O/G, K/G].
  at::Tensor sum = at::zeros({out_channels, weight_size[2], weight_size[3], weight_size[1]},
                             input.options().dtype(sum_type));
  ColumnShape s{0, 0, windows_h, windows_w, groups, weight_size[1], window};
  if (batch > 0 && windows > 0 && sum.numel() > 0) {
    const at::Tensor planes = input.contiguous(kChannelsLast);
    const at::Tensor dy_rows = pixel_rows(grad_output.contiguous(kChannelsLast));
    const int64_t chunk = chunk_samples(batch, windows, s.width(), input.element_size());
    s.samples = chunk;
    at::Tensor workspace = column_workspace(planes, s);
    const at::Tensor sum_groups = sum.view({groups, out_channels / groups, s.width() / groups});
    for (int64_t first = 0; first < batch; first += chunk) {
      s.first_sample = first;
      s.samples = std::min(chunk, batch - first);
      const at::Tensor columns = plane_columns(planes, s, workspace);
      const at::Tensor dy = dy_rows.narrow(0, first * windows, s.rows());
      // [G, O/G, rows] . [G, rows, K/G]
      const at::Tensor part =
          groups == 1 ? at::mm(dy.t(), columns).unsqueeze(0)
                      : at::bmm(dy.view({s.rows(), groups, out_channels / groups}).permute({1, 2, 0}),
                                columns.view({s.rows(), groups, s.width() / groups}).transpose(0, 1));
      sum_groups.add_(part);  // chunks in order: the same sum every run
    }
  }
  // [O, kH, kW, C/G] memory is the channels_last layout of [O, C/G, kH, kW].
  return sum.permute({0, 3, 1, 2}).to(input.scalar_type()).contiguous(format);
}

}  // namespace cuda
}  // namespace torchconv
