// CUDA kernels of max_pool2d and avg_pool2d, forward and backward.
//
// One thread per output element (forward) or per input element (backward),
// walking memory in the tensor's own order, contiguous or channels_last, so
// neighbouring threads touch neighbouring addresses. Window rules are ATen's,
// the CPU kernels' too (window.h): a max window starts at -inf with its
// first in-bounds tap as index and takes a value that is greater or NaN; an
// average window's divisor is divisor_override, or the cells it covers
// inside the padded input (count_include_pad) or inside the input alone.
//
// Both backward passes are gathers: each input pixel visits the windows that
// can contain it, in a fixed order, and sums what they send it. No atomics,
// so gradients are bit-identical from run to run. (This is why
// max_pool2d_backward takes the window: without it a pixel could not know
// which outputs to look at, and a scatter of overlapping windows would need
// atomic adds.) Sums run in float32 for float16 and bfloat16.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>

#include "checks.h"
#include "launch.cuh"
#include "memory_format.h"
#include "ops.h"
#include "window.h"

namespace torchconv {
namespace cuda {
namespace {

// ------------------------------------------------------------- max pool

template <typename scalar_t, typename index_t>
__global__ void max_pool2d_kernel(const scalar_t* __restrict__ input, Layout4d in, Layout4d out_layout,
                                  bool channels_last, Window p, scalar_t* __restrict__ output,
                                  int64_t* __restrict__ indices) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_h = in.size[2], in_w = in.size[3];
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(out_layout)) {
    const Coords<index_t> o = split_index<index_t>(e, out_layout, channels_last);
    const Range ys = window_taps(o.h, in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    const Range xs = window_taps(o.w, in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    int64_t best_index = ys.begin * in_w + xs.begin;
    acc_t best = -static_cast<acc_t>(INFINITY);
    for (int64_t y = ys.begin; y < ys.end; y += p.dilation_h) {
      for (int64_t x = xs.begin; x < xs.end; x += p.dilation_w) {
        const acc_t v = static_cast<acc_t>(input[in.offset(o.n, o.c, y, x)]);
        if (v > best || v != v) {  // v != v: NaN wins, as in ATen
          best = v;
          best_index = y * in_w + x;
        }
      }
    }
    const int64_t at = out_layout.offset(o.n, o.c, o.h, o.w);
    output[at] = static_cast<scalar_t>(best);
    indices[at] = best_index;
  }
}

template <typename scalar_t, typename index_t>
__global__ void max_pool2d_backward_kernel(const scalar_t* __restrict__ grad_output, Layout4d gy,
                                           const int64_t* __restrict__ indices, Layout4d idx, Layout4d gx_layout,
                                           bool channels_last, Window p, scalar_t* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_w = gx_layout.size[3];
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(gx_layout)) {
    const Coords<index_t> i = split_index<index_t>(e, gx_layout, channels_last);
    const Range ys = windows_reaching<index_t>(i.h, i.h + 1, gy.size[2], p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    const Range xs = windows_reaching<index_t>(i.w, i.w + 1, gy.size[3], p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    const int64_t self = i.h * in_w + i.w;
    acc_t sum = 0;
    for (int64_t oy = ys.begin; oy < ys.end; ++oy) {
      for (int64_t ox = xs.begin; ox < xs.end; ++ox) {
        if (indices[idx.offset(i.n, i.c, oy, ox)] == self) {
          sum += static_cast<acc_t>(grad_output[gy.offset(i.n, i.c, oy, ox)]);
        }
      }
    }
    grad_input[gx_layout.offset(i.n, i.c, i.h, i.w)] = static_cast<scalar_t>(sum);
  }
}

// ------------------------------------------------------------- avg pool

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_kernel(const scalar_t* __restrict__ input, Layout4d in, Layout4d out_layout,
                                  bool channels_last, Window p, bool count_include_pad, int64_t divisor_override,
                                  scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(out_layout)) {
    const Coords<index_t> o = split_index<index_t>(e, out_layout, channels_last);
    const Span ys = avg_span(o.h, in.size[2], p.kernel_h, p.stride_h, p.pad_h);
    const Span xs = avg_span(o.w, in.size[3], p.kernel_w, p.stride_w, p.pad_w);
    const int64_t divisor = avg_divisor(ys, xs, count_include_pad, divisor_override);
    acc_t sum = 0;
    for (int64_t y = ys.begin; y < ys.end; ++y) {
      for (int64_t x = xs.begin; x < xs.end; ++x) sum += static_cast<acc_t>(input[in.offset(o.n, o.c, y, x)]);
    }
    output[out_layout.offset(o.n, o.c, o.h, o.w)] =
        divisor == 0 ? scalar_t(0) : static_cast<scalar_t>(sum / static_cast<acc_t>(divisor));
  }
}

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_backward_kernel(const scalar_t* __restrict__ grad_output, Layout4d gy, Layout4d gx_layout,
                                           bool channels_last, Window p, bool count_include_pad,
                                           int64_t divisor_override, scalar_t* __restrict__ grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_h = gx_layout.size[2], in_w = gx_layout.size[3];
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(gx_layout)) {
    const Coords<index_t> i = split_index<index_t>(e, gx_layout, channels_last);
    const Range ys = windows_reaching<index_t>(i.h, i.h + 1, gy.size[2], p.kernel_h, p.stride_h, p.pad_h, 1);
    const Range xs = windows_reaching<index_t>(i.w, i.w + 1, gy.size[3], p.kernel_w, p.stride_w, p.pad_w, 1);
    acc_t sum = 0;
    for (int64_t oy = ys.begin; oy < ys.end; ++oy) {
      const Span yspan = avg_span(oy, in_h, p.kernel_h, p.stride_h, p.pad_h);
      for (int64_t ox = xs.begin; ox < xs.end; ++ox) {
        const Span xspan = avg_span(ox, in_w, p.kernel_w, p.stride_w, p.pad_w);
        const int64_t divisor = avg_divisor(yspan, xspan, count_include_pad, divisor_override);
        if (divisor == 0) continue;
        sum += static_cast<acc_t>(grad_output[gy.offset(i.n, i.c, oy, ox)]) / static_cast<acc_t>(divisor);
      }
    }
    grad_input[gx_layout.offset(i.n, i.c, i.h, i.w)] = static_cast<scalar_t>(sum);
  }
}

}  // namespace

// ----------------------------------------------------------- entry points

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  check_kernel_device("max_pool2d", input, kKernelDevice);
  const PoolShape shape = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  const DeviceGuard guard(input.device());
  const at::MemoryFormat format = input.suggest_memory_format();
  const std::vector<int64_t> sizes{input.size(0), input.size(1), shape.out_h, shape.out_w};
  at::Tensor out = at::empty(sizes, input.options().memory_format(format));
  at::Tensor indices = at::empty(sizes, input.options().dtype(at::kLong).memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::max_pool2d", [&] {
    launch_indexed(max_pool2d_kernel<scalar_t, int32_t>, max_pool2d_kernel<scalar_t, int64_t>,
                   fits_int32({out.numel(), input.numel()}), out.numel(), input.const_data_ptr<scalar_t>(),
                   layout_of(input), layout_of(out), is_channels_last(input), shape.window, out.data_ptr<scalar_t>(),
                   indices.data_ptr<int64_t>());
  });
  return {out, indices};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation) {
  check_kernel_device("max_pool2d_backward", grad_output, kKernelDevice);
  const Window p = check_max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation);
  const DeviceGuard guard(grad_output.device());
  const at::MemoryFormat format = grad_output.suggest_memory_format();
  at::Tensor grad_input = at::empty({grad_output.size(0), grad_output.size(1), input_size[0], input_size[1]},
                                    grad_output.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "torchconv_cpp::max_pool2d_backward", [&] {
    launch_indexed(max_pool2d_backward_kernel<scalar_t, int32_t>, max_pool2d_backward_kernel<scalar_t, int64_t>,
                   fits_int32({grad_input.numel(), grad_output.numel()}), grad_input.numel(),
                   grad_output.const_data_ptr<scalar_t>(), layout_of(grad_output), indices.const_data_ptr<int64_t>(),
                   layout_of(indices), layout_of(grad_input), is_channels_last(grad_output), p,
                   grad_input.data_ptr<scalar_t>());
  });
  return grad_input;
}

at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                      c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d", input, kKernelDevice);
  const PoolShape shape = check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, divisor_override);
  const DeviceGuard guard(input.device());
  const at::MemoryFormat format = input.suggest_memory_format();
  at::Tensor out = at::empty({input.size(0), input.size(1), shape.out_h, shape.out_w},
                             input.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchconv_cpp::avg_pool2d", [&] {
    launch_indexed(avg_pool2d_kernel<scalar_t, int32_t>, avg_pool2d_kernel<scalar_t, int64_t>,
                   fits_int32({out.numel(), input.numel()}), out.numel(), input.const_data_ptr<scalar_t>(),
                   layout_of(input), layout_of(out), is_channels_last(input), shape.window, count_include_pad,
                   divisor_override.value_or(0), out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                               bool count_include_pad, c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d_backward", grad_output, kKernelDevice);
  const Window p = check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, divisor_override);
  (void)ceil_mode;  // grad_output's size already says how many windows there are
  const DeviceGuard guard(grad_output.device());
  const at::MemoryFormat format = grad_output.suggest_memory_format();
  at::Tensor grad_input = at::empty({grad_output.size(0), grad_output.size(1), input_size[0], input_size[1]},
                                    grad_output.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "torchconv_cpp::avg_pool2d_backward", [&] {
    launch_indexed(avg_pool2d_backward_kernel<scalar_t, int32_t>, avg_pool2d_backward_kernel<scalar_t, int64_t>,
                   fits_int32({grad_input.numel(), grad_output.numel()}), grad_input.numel(),
                   grad_output.const_data_ptr<scalar_t>(), layout_of(grad_output), layout_of(grad_input),
                   is_channels_last(grad_output), p, count_include_pad, divisor_override.value_or(0),
                   grad_input.data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace cuda
}  // namespace torchconv
