// CPU kernels of max_pool2d and avg_pool2d, forward and backward.
//
// Planes (n, c) are independent and run in parallel. Window rules are
// ATen's: a max window starts at -inf with its first in-bounds tap as index
// and takes a value that is greater or NaN; an average window's divisor is
// divisor_override, or the cells it covers inside the padded input
// (count_include_pad) or inside the input alone. Backward passes write only
// into their own plane, in a fixed order: results are deterministic.
//
// float16 and bfloat16: max pooling compares in the dtype itself (a
// comparison of halves is exact, and the result is one of the inputs);
// average pooling sums and divides in float32 and rounds once, so a window
// of large halves does not overflow where its mean is finite. Both backward
// passes accumulate each input plane's gradient in float32 and round it once.
#include <ATen/ATen.h>
#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <memory>

#include "checks.h"
#include "precision.h"

namespace torchconv {
namespace cpu {
namespace {

template <typename Fn>
void for_each_plane(int64_t planes, const Fn& fn) {
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) fn(p);
  });
}

// Runs accumulate(plane, gradient) for every plane of a backward pass, with
// gradient the plane's `plane_size` elements of grad_input in acc_t, zeroed:
// grad_input itself, or for a half dtype the thread's float32 scratch,
// rounded into grad_input afterwards.
template <typename scalar_t, typename Fn>
void for_each_gradient_plane(scalar_t* grad_input, int64_t planes, int64_t plane_size, const Fn& accumulate) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    const int64_t scratch = widening_size<scalar_t>(plane_size);
    std::unique_ptr<acc[]> buffer(scratch > 0 ? new acc[scratch] : nullptr);
    for (int64_t plane = begin; plane < end; ++plane) {
      scalar_t* result = grad_input + plane * plane_size;
      acc* gradient = accumulator(result, buffer.get());
      std::fill(gradient, gradient + plane_size, acc(0));
      accumulate(plane, gradient);
      store(gradient, plane_size, result);
    }
  });
}

// ------------------------------------------------------------- max pool

// ATen's rule: a value replaces the window's best when it is greater or NaN,
// so with several NaNs in a window the last one wins (its index is taken).
template <typename scalar_t>
inline bool replaces_max(scalar_t value, scalar_t best) {
  return value > best || at::_isnan(value);
}

template <typename scalar_t>
void max_pool2d_kernel(const scalar_t* input, scalar_t* output, int64_t* indices, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, const Pool& p) {
  for_each_plane(planes, [&](int64_t plane) {
    const scalar_t* in = input + plane * in_h * in_w;
    scalar_t* out = output + plane * out_h * out_w;
    int64_t* idx = indices + plane * out_h * out_w;
    for (int64_t oy = 0; oy < out_h; ++oy) {
      int64_t y0 = oy * p.stride_h - p.pad_h;
      const int64_t y1 = std::min(y0 + (p.kernel_h - 1) * p.dilation_h + 1, in_h);
      while (y0 < 0) y0 += p.dilation_h;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        int64_t x0 = ox * p.stride_w - p.pad_w;
        const int64_t x1 = std::min(x0 + (p.kernel_w - 1) * p.dilation_w + 1, in_w);
        while (x0 < 0) x0 += p.dilation_w;
        int64_t best_index = y0 * in_w + x0;
        scalar_t best = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t y = y0; y < y1; y += p.dilation_h) {
          for (int64_t x = x0; x < x1; x += p.dilation_w) {
            const scalar_t v = in[y * in_w + x];
            if (replaces_max(v, best)) {
              best = v;
              best_index = y * in_w + x;
            }
          }
        }
        out[oy * out_w + ox] = best;
        idx[oy * out_w + ox] = best_index;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_kernel_device("max_pool2d", input, at::kCPU);
  check_plane_input("max_pool2d", input);
  const Pool p = check_pool("max_pool2d", kernel_size, stride, padding, dilation);
  const int64_t in_h = input.size(2), in_w = input.size(3);
  const std::pair<int64_t, int64_t> out_size = check_pool_output("max_pool2d", input, p, ceil_mode);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty({input.size(0), input.size(1), out_h, out_w}, input.options());
  at::Tensor indices = at::empty({input.size(0), input.size(1), out_h, out_w}, input.options().dtype(at::kLong));
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::max_pool2d", [&] {
    max_pool2d_kernel<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), indices.data_ptr<int64_t>(),
                                input.size(0) * input.size(1), in_h, in_w, out_h, out_w, p);
  });
  return {out, indices};
}

// True if some tap of window `o` along one axis (taps o * stride - pad +
// k * dilation) falls inside [0, size).
inline bool window_meets_axis(int64_t o, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                              int64_t dilation) {
  for (int64_t k = 0; k < kernel; ++k) {
    const int64_t at = o * stride - pad + k * dilation;
    if (at >= 0 && at < size) return true;
  }
  return false;
}

// The window (kernel_size, stride, padding, dilation: max_pool2d's) is in the
// schema for the CUDA kernel, which gathers per input pixel over the windows
// that can contain it; this scatter needs only the indices. A window that
// sees no input at all (possible with dilation) holds torch's index, its
// start clamped to >= 0, which may lie past the plane: its gradient goes
// nowhere, as in torch. Any other index past the plane is an error.
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation) {
  check_kernel_device("max_pool2d_backward", grad_output, at::kCPU);
  check_input("max_pool2d_backward", grad_output);
  check_pair("max_pool2d_backward", "input_size", input_size, 1);
  const Pool p = check_pool("max_pool2d_backward", kernel_size, stride, padding, dilation);
  check_pool_indices(grad_output, indices);
  const int64_t planes = grad_output.size(0) * grad_output.size(1);
  const int64_t plane_in = input_size[0] * input_size[1], plane_out = grad_output.size(2) * grad_output.size(3);
  const at::Tensor dy = grad_output.contiguous(), idx = indices.contiguous();
  at::Tensor grad_input = at::empty({grad_output.size(0), grad_output.size(1), input_size[0], input_size[1]},
                                    grad_output.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "torchconv_cpp::max_pool2d_backward", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* g = dy.data_ptr<scalar_t>();
    const int64_t* ix = idx.data_ptr<int64_t>();
    for_each_gradient_plane(grad_input.data_ptr<scalar_t>(), planes, plane_in, [&](int64_t plane, acc* gx) {
      for (int64_t o = 0; o < plane_out; ++o) {
        const int64_t target = ix[plane * plane_out + o];
        if (target >= plane_in) {
          const int64_t out_w = grad_output.size(3);
          const bool sees_input =
              window_meets_axis(o / out_w, input_size[0], p.kernel_h, p.stride_h, p.pad_h, p.dilation_h) &&
              window_meets_axis(o % out_w, input_size[1], p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
          if (!sees_input) continue;
        }
        TORCH_CHECK(target >= 0 && target < plane_in, "torchconv_cpp::max_pool2d_backward: index ", target,
                    " is outside the input plane of ", plane_in, " elements");
        gx[target] += static_cast<acc>(g[plane * plane_out + o]);
      }
    });
  });
  return grad_input;
}

// ------------------------------------------------------------- avg pool

// Calls visit(o, rows, cols, divisor) for every output cell o; an empty
// window gets divisor 0 (its output is 0, its gradient goes nowhere).
//
// The window of output cell o along one axis, clipped to the input, and its
// divisor factor along that axis.
struct Span {
  int64_t begin, end, count_padded;
};

inline Span avg_span(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t size) {
  const int64_t start = o * stride - pad;
  const int64_t stop = std::min(start + kernel, size + pad);
  return Span{std::max<int64_t>(start, 0), std::min(stop, size), stop - start};
}

template <typename scalar_t, typename Visit>
void for_each_avg_window(int64_t out_h, int64_t out_w, int64_t in_h, int64_t in_w, const Pool& p, bool count_include_pad,
                         c10::optional<int64_t> divisor_override, const Visit& visit) {
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const Span ys = avg_span(oy, p.stride_h, p.pad_h, p.kernel_h, in_h);
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const Span xs = avg_span(ox, p.stride_w, p.pad_w, p.kernel_w, in_w);
      if (ys.begin >= ys.end || xs.begin >= xs.end) {
        visit(oy * out_w + ox, ys, xs, 0);
        continue;
      }
      int64_t divisor;
      if (divisor_override.has_value()) {
        divisor = *divisor_override;
      } else if (count_include_pad) {
        divisor = ys.count_padded * xs.count_padded;
      } else {
        divisor = (ys.end - ys.begin) * (xs.end - xs.begin);
      }
      visit(oy * out_w + ox, ys, xs, divisor);
    }
  }
}

at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      bool ceil_mode, bool count_include_pad, c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d", input, at::kCPU);
  check_plane_input("avg_pool2d", input);
  const Pool p = check_pool("avg_pool2d", kernel_size, stride, padding, {1, 1});
  check_divisor("avg_pool2d", divisor_override);
  const int64_t in_h = input.size(2), in_w = input.size(3);
  const std::pair<int64_t, int64_t> out_size = check_pool_output("avg_pool2d", input, p, ceil_mode);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty({input.size(0), input.size(1), out_h, out_w}, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::avg_pool2d", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    for_each_plane(input.size(0) * input.size(1), [&](int64_t plane) {
      const scalar_t* src = in + plane * in_h * in_w;
      scalar_t* dst = y + plane * out_h * out_w;
      for_each_avg_window<scalar_t>(out_h, out_w, in_h, in_w, p, count_include_pad, divisor_override,
                                    [&](int64_t o, const Span& ys, const Span& xs, int64_t divisor) {
                                      acc sum = 0;
                                      for (int64_t yy = ys.begin; yy < ys.end; ++yy)
                                        for (int64_t xx = xs.begin; xx < xs.end; ++xx)
                                          sum += static_cast<acc>(src[yy * in_w + xx]);
                                      dst[o] = static_cast<scalar_t>(divisor == 0 ? acc(0) : sum / acc(divisor));
                                    });
    });
  });
  return out;
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                               c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d_backward", grad_output, at::kCPU);
  check_input("avg_pool2d_backward", grad_output);
  check_pair("avg_pool2d_backward", "input_size", input_size, 1);
  const Pool p = check_pool("avg_pool2d_backward", kernel_size, stride, padding, {1, 1});
  check_divisor("avg_pool2d_backward", divisor_override);
  const int64_t in_h = input_size[0], in_w = input_size[1];
  const int64_t out_h = grad_output.size(2), out_w = grad_output.size(3);
  const at::Tensor dy = grad_output.contiguous();
  at::Tensor grad_input = at::empty({grad_output.size(0), grad_output.size(1), in_h, in_w}, grad_output.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "torchconv_cpp::avg_pool2d_backward", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* g = dy.data_ptr<scalar_t>();
    const int64_t planes = grad_output.size(0) * grad_output.size(1);
    for_each_gradient_plane(grad_input.data_ptr<scalar_t>(), planes, in_h * in_w, [&](int64_t plane, acc* dst) {
      const scalar_t* src = g + plane * out_h * out_w;
      for_each_avg_window<scalar_t>(out_h, out_w, in_h, in_w, p, count_include_pad, divisor_override,
                                    [&](int64_t o, const Span& ys, const Span& xs, int64_t divisor) {
                                      if (divisor == 0) return;
                                      const acc share = static_cast<acc>(src[o]) / acc(divisor);
                                      for (int64_t yy = ys.begin; yy < ys.end; ++yy)
                                        for (int64_t xx = xs.begin; xx < xs.end; ++xx) dst[yy * in_w + xx] += share;
                                    });
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) {
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("avg_pool2d", &avg_pool2d);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward);
}

}  // namespace cpu
}  // namespace torchconv
