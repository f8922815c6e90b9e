// CPU kernels of max_pool2d and avg_pool2d, forward and backward, in both
// memory formats: contiguous (NCHW) and channels_last (NHWC). A pool runs in
// the memory format its input (forward) or grad_output (backward) suggests,
// as torch's do, and returns its result in it, so neither format pays for a
// copy; max_pool2d's indices are per-plane flat h * W + w in both.
//
// Window rules are ATen's, the CUDA kernels' too (window.h): a max window
// starts at -inf with its first in-bounds tap as index and takes a value that
// is greater or NaN; an average window's divisor is divisor_override, or the
// cells it covers inside the padded input (count_include_pad) or inside the
// input alone. Every window visits its taps in row-major order, whatever the
// loop nest: the vectorised loops below run tap by tap over a row of windows
// (NCHW) or over the channels of one window (NHWC).
//
// Threads: forward passes split the outputs (NCHW: rows of all planes; NHWC:
// pixels), so a batch of a few planes still uses every thread. Backward
// passes scatter into the input; they split it into tasks (plane or image,
// band of input rows) that each own their part of grad_input and take, in
// the serial order, the contributions that land in it: results are
// deterministic and do not depend on the thread count.
//
// float16 and bfloat16: values are widened to float32 as they are read (exact,
// so max pooling compares as if in the dtype and returns one of the inputs);
// average pooling sums and divides in float32 and rounds once, so a window
// of large halves does not overflow where its mean is finite. Both backward
// passes accumulate each gradient in float32 and round it once.
#include <ATen/ATen.h>
#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "precision.h"
#include "window.h"

namespace torchconv {
namespace cpu {
namespace {

// Outputs along one axis whose every tap lies inside [0, size): the
// interior, where the vectorised loops run without bounds checks.
inline Range interior(int64_t out, int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t begin = std::min(ceil_div(pad, stride), out);
  const int64_t end = std::min(floor_div(size - 1 - (kernel - 1) * dilation + pad, stride) + 1, out);
  return Range{begin, std::max(begin, end)};
}

// Backward tasks: `units` (planes or images) times bands of input rows, at
// least ~4 tasks a thread when units are few, so a small batch still
// spreads over the threads. Returns the rows per band.
inline int64_t band_rows(int64_t units, int64_t in_h) {
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  if (units >= want || in_h <= 1) return in_h;
  const int64_t bands = std::min(in_h, ceil_div(want, units));
  return ceil_div(in_h, bands);
}

// Runs fn(unit, y_lo, y_hi, gradient) for every backward task: gradient is
// the task's rows [y_lo, y_hi) of its unit's grad_input (row_elems elements
// a row, `unit_elems` a unit) in acc_t, zeroed; for a half dtype a float32
// scratch, rounded into grad_input afterwards.
template <typename scalar_t, typename Fn>
void for_each_band(scalar_t* grad_input, int64_t units, int64_t in_h, int64_t row_elems, const Fn& fn,
                   bool whole_planes = false) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = whole_planes ? in_h : band_rows(units, in_h);
  const int64_t bands = ceil_div(in_h, rows);
  at::parallel_for(0, units * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer(widening_size<scalar_t>(rows * row_elems));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t unit = task / bands, y_lo = (task % bands) * rows, y_hi = std::min(y_lo + rows, in_h);
      const int64_t n = (y_hi - y_lo) * row_elems;
      scalar_t* result = grad_input + unit * in_h * row_elems + y_lo * row_elems;
      acc* gradient = accumulator(result, buffer.data());
      std::fill(gradient, gradient + n, acc(0));
      fn(unit, y_lo, y_hi, gradient);
      store(gradient, n, result);
    }
  });
}

// ATen's rule: a value replaces the window's best when it is greater or NaN,
// so with several NaNs in a window the last one wins (its index is taken).
template <typename T>
inline bool replaces_max(T value, T best) {
  return value > best || at::_isnan(value);
}

// True if some tap of window `o` along one axis (taps o * stride - pad +
// k * dilation) falls inside [0, size).
inline bool window_meets_axis(int64_t o, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                              int64_t dilation) {
  const Range t = window_taps(o, size, kernel, stride, pad, dilation);
  return t.begin < t.end;
}

// A max_pool2d_backward index that is not in the plane: fine (no gradient)
// for a window that sees no input at all, where torch's index (its start
// clamped to >= 0) may lie past the plane; any other is an error.
[[noreturn]] inline void bad_index(int64_t target, int64_t plane_in) {
  TORCH_CHECK(false, "torchconv_cpp::max_pool2d_backward: index ", target, " is outside the input plane of ", plane_in,
              " elements");
}

inline void check_outside_index(int64_t target, int64_t plane_in, int64_t oy, int64_t ox, int64_t in_h,
                                int64_t in_w, const Window& p) {
  if (target >= plane_in &&
      !(window_meets_axis(oy, in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h) &&
        window_meets_axis(ox, in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w)))
    return;
  bad_index(target, plane_in);
}

// ------------------------------------------------------- max pool, NCHW

// One output row of one plane. The interior columns run tap by tap over the
// whole row (a loop the compiler vectorises: 8 windows per AVX2 step); the
// index is tracked in index_t (int32 when the plane allows, so indices and
// values fill the same vector lanes) and widened once. The row loop runs
// well ahead of one window at a time (benchmarks/bench_ops.py's mnist
// maxpool 2x2 case).
template <typename scalar_t, typename index_t, int STRIDE>
void max_row_nchw(const scalar_t* in, int64_t in_h, int64_t in_w, int64_t oy, int64_t out_w, const Window& p,
                  const Range& cols, acc_t<scalar_t>* __restrict best, index_t* __restrict best_at, scalar_t* out,
                  int64_t* idx) {
  using acc = acc_t<scalar_t>;
  const int64_t sw = STRIDE > 0 ? STRIDE : p.stride_w;
  const Range ys = window_taps(oy, in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  auto window = [&](int64_t ox) {
    const Range xs = window_taps(ox, in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    int64_t best_index = ys.begin * in_w + xs.begin;
    acc m = -std::numeric_limits<acc>::infinity();
    for (int64_t y = ys.begin; y < ys.end; y += p.dilation_h) {
      for (int64_t x = xs.begin; x < xs.end; x += p.dilation_w) {
        const acc v = static_cast<acc>(in[y * in_w + x]);
        if (replaces_max(v, m)) {
          m = v;
          best_index = y * in_w + x;
        }
      }
    }
    out[ox] = static_cast<scalar_t>(m);
    idx[ox] = best_index;
  };
  if (ys.begin >= ys.end || cols.begin >= cols.end) {
    for (int64_t ox = 0; ox < out_w; ++ox) window(ox);
    return;
  }
  for (int64_t ox = 0; ox < cols.begin; ++ox) window(ox);
  const int64_t n = cols.end - cols.begin;
  bool first = true;
  for (int64_t y = ys.begin; y < ys.end; y += p.dilation_h) {
    for (int64_t kx = 0; kx < p.kernel_w; ++kx) {
      const int64_t base = y * in_w + cols.begin * sw - p.pad_w + kx * p.dilation_w;
      const scalar_t* row = in + base;
      const index_t at0 = static_cast<index_t>(base);
      if (first) {
        for (int64_t i = 0; i < n; ++i) {
          best[i] = static_cast<acc>(row[i * sw]);
          best_at[i] = at0 + static_cast<index_t>(i * sw);
        }
        first = false;
        continue;
      }
      for (int64_t i = 0; i < n; ++i) {
        const acc v = static_cast<acc>(row[i * sw]);
        const bool take = (v > best[i]) | (v != v);
        best[i] = take ? v : best[i];
        best_at[i] = take ? at0 + static_cast<index_t>(i * sw) : best_at[i];
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    out[cols.begin + i] = static_cast<scalar_t>(best[i]);
    idx[cols.begin + i] = static_cast<int64_t>(best_at[i]);
  }
  for (int64_t ox = cols.end; ox < out_w; ++ox) window(ox);
}

template <typename scalar_t, typename index_t, int STRIDE>
void max_pool2d_nchw(const scalar_t* input, scalar_t* output, int64_t* indices, int64_t planes, int64_t in_h,
                     int64_t in_w, int64_t out_h, int64_t out_w, const Window& p) {
  using acc = acc_t<scalar_t>;
  const Range cols = interior(out_w, in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(out_w * p.kernel_h * p.kernel_w, 1));
  at::parallel_for(0, planes * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc> best(out_w);
    std::vector<index_t> best_at(out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / out_h, oy = r % out_h;
      max_row_nchw<scalar_t, index_t, STRIDE>(input + plane * in_h * in_w, in_h, in_w, oy, out_w, p, cols,
                                              best.data(), best_at.data(), output + r * out_w, indices + r * out_w);
    }
  });
}

// ------------------------------------------------------- max pool, NHWC

// NHWC max pool: each output pixel's window over all C channels; the
// channel loop is contiguous in every tensor and vectorises. The index is
// tracked in index_t and widened once: with int64 lanes GCC leaves the loop
// scalar, and a version holding blocks of 16 channels in local arrays
// across the taps was not vectorised either; both ran far behind torch
// (benchmarks/bench_ops.py's maxpool 3x3 s2 channels_last case).
template <typename scalar_t, typename index_t>
void max_pool2d_nhwc(const scalar_t* input, scalar_t* output, int64_t* indices, int64_t batch, int64_t channels,
                     int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, const Window& p) {
  using acc = acc_t<scalar_t>;
  const int64_t C = channels;
  at::parallel_for(0, batch * out_h * out_w, std::max<int64_t>(1, 2048 / C), [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer(widening_size<scalar_t>(C));
    std::vector<index_t> best_at_buffer(C);
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const int64_t n = pixel / (out_h * out_w), oy = pixel / out_w % out_h, ox = pixel % out_w;
      const Range ys = window_taps(oy, in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
      const Range xs = window_taps(ox, in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
      const scalar_t* in = input + n * in_h * in_w * C;
      acc* __restrict best = accumulator(output + pixel * C, buffer.data());
      index_t* __restrict best_at = best_at_buffer.data();
      std::fill(best, best + C, -std::numeric_limits<acc>::infinity());
      std::fill(best_at, best_at + C, static_cast<index_t>(ys.begin * in_w + xs.begin));
      for (int64_t y = ys.begin; y < ys.end; y += p.dilation_h) {
        for (int64_t x = xs.begin; x < xs.end; x += p.dilation_w) {
          const scalar_t* __restrict v_at = in + (y * in_w + x) * C;
          const index_t at = static_cast<index_t>(y * in_w + x);
          for (int64_t c = 0; c < C; ++c) {
            const acc v = static_cast<acc>(v_at[c]);
            const bool take = (v > best[c]) | (v != v);
            best[c] = take ? v : best[c];
            best_at[c] = take ? at : best_at[c];
          }
        }
      }
      int64_t* __restrict idx = indices + pixel * C;
      for (int64_t c = 0; c < C; ++c) idx[c] = static_cast<int64_t>(best_at[c]);
      store(best, C, output + pixel * C);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_kernel_device("max_pool2d", input, at::kCPU);
  const PoolShape shape = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  const Window& p = shape.window;
  const int64_t batch = input.size(0), channels = input.size(1), in_h = input.size(2), in_w = input.size(3);
  const int64_t out_h = shape.out_h, out_w = shape.out_w;
  const at::MemoryFormat memory_format = input.suggest_memory_format();  // of a 4-d tensor: NCHW or NHWC
  const at::Tensor x = input.contiguous(memory_format);
  const at::TensorOptions options = input.options().memory_format(memory_format);
  at::Tensor out = at::empty({batch, channels, out_h, out_w}, options);
  at::Tensor indices = at::empty({batch, channels, out_h, out_w}, options.dtype(at::kLong));
  if (out.numel() == 0) return {out, indices};
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::max_pool2d", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    int64_t* ix = indices.data_ptr<int64_t>();
    const bool wide = in_h * in_w > std::numeric_limits<int32_t>::max();
    if (memory_format == at::MemoryFormat::ChannelsLast) {
      if (wide) {
        max_pool2d_nhwc<scalar_t, int64_t>(in, y, ix, batch, channels, in_h, in_w, out_h, out_w, p);
      } else {
        max_pool2d_nhwc<scalar_t, int32_t>(in, y, ix, batch, channels, in_h, in_w, out_h, out_w, p);
      }
    } else if (wide) {
      max_pool2d_nchw<scalar_t, int64_t, 0>(in, y, ix, batch * channels, in_h, in_w, out_h, out_w, p);
    } else if (p.stride_w == 2) {  // the common stride, its loads known to the compiler
      max_pool2d_nchw<scalar_t, int32_t, 2>(in, y, ix, batch * channels, in_h, in_w, out_h, out_w, p);
    } else if (p.stride_w == 1) {
      max_pool2d_nchw<scalar_t, int32_t, 1>(in, y, ix, batch * channels, in_h, in_w, out_h, out_w, p);
    } else {
      max_pool2d_nchw<scalar_t, int32_t, 0>(in, y, ix, batch * channels, in_h, in_w, out_h, out_w, p);
    }
  });
  return {out, indices};
}

// NHWC: tasks are (image, block of channels), each owning its channels of
// the image's grad_input, so every output is read once in all; blocks are
// multiples of 16 channels (a cache line of float32), more than one only
// when images are fewer than ~4 a thread.
template <typename scalar_t>
void max_pool2d_backward_nhwc(const scalar_t* g, const int64_t* ix, scalar_t* grad_input, int64_t batch,
                              int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                              const Window& p) {
  using acc = acc_t<scalar_t>;
  const int64_t C = channels, plane_in = in_h * in_w, plane_out = out_h * out_w;
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks_wanted = batch >= want ? 1 : std::min(ceil_div(C, 16), ceil_div(want, batch));
  const int64_t block = ceil_div(ceil_div(C, blocks_wanted), 16) * 16;
  const int64_t blocks = ceil_div(C, block);
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    const bool direct = !is_widened<scalar_t> && blocks == 1;
    std::vector<acc> buffer(direct ? 0 : plane_in * std::min(block, C));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = task % blocks * block, c1 = std::min(c0 + block, C), cn = c1 - c0;
      scalar_t* result = grad_input + n * plane_in * C;
      // gx[t * ld + c - c0]: grad_input itself (whole rows of C) or the scratch.
      acc* gx = direct ? reinterpret_cast<acc*>(result) : buffer.data();
      const int64_t ld = direct ? C : cn;
      std::fill(gx, gx + plane_in * ld, acc(0));
      const scalar_t* gn = g + n * plane_out * C;
      const int64_t* in = ix + n * plane_out * C;
      for (int64_t o = 0; o < plane_out; ++o) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t t = in[o * C + c];
          if (static_cast<uint64_t>(t) < static_cast<uint64_t>(plane_in)) {
            gx[t * ld + c - c0] += static_cast<acc>(gn[o * C + c]);
          } else {
            check_outside_index(t, plane_in, o / out_w, o % out_w, in_h, in_w, p);
          }
        }
      }
      if (!direct && cn == C) {
        convert(gx, result, plane_in * C);
      } else if (!direct) {
        for (int64_t t = 0; t < plane_in; ++t) convert(gx + t * cn, result + t * C + c0, cn);
      }
    }
  });
}

// NCHW: tasks are (plane, band of input rows). A band reads only the output
// rows whose windows reach it, which holds every index max_pool2d makes (an
// index lies in its window's rows). Any other index (a caller's own, which
// torch scatters wherever it points) is noticed, and then the planes are
// redone whole, each scanning all its outputs: the result is exactly the
// serial one either way.
template <typename scalar_t>
void max_pool2d_backward_nchw(const scalar_t* g, const int64_t* ix, scalar_t* grad_input, int64_t planes, int64_t in_h,
                              int64_t in_w, int64_t out_h, int64_t out_w, const Window& p) {
  using acc = acc_t<scalar_t>;
  const int64_t plane_in = in_h * in_w, plane_out = out_h * out_w;
  auto whole_plane = [&](int64_t plane, int64_t, int64_t, acc* gx) {
    const scalar_t* gp = g + plane * plane_out;
    const int64_t* ip = ix + plane * plane_out;
    for (int64_t o = 0; o < plane_out; ++o) {
      const int64_t t = ip[o];
      if (static_cast<uint64_t>(t) < static_cast<uint64_t>(plane_in)) {
        gx[t] += static_cast<acc>(gp[o]);
      } else {
        check_outside_index(t, plane_in, o / out_w, o % out_w, in_h, in_w, p);
      }
    }
  };
  if (band_rows(planes, in_h) == in_h) {
    for_each_band(grad_input, planes, in_h, in_w, whole_plane, true);
    return;
  }
  const Range reach = windows_reaching<int64_t>(0, in_h, out_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
  std::atomic<bool> stray(false);
  for_each_band(grad_input, planes, in_h, in_w, [&](int64_t plane, int64_t y_lo, int64_t y_hi, acc* gx) {
    const int64_t lo = y_lo * in_w, span = (y_hi - y_lo) * in_w;
    const scalar_t* gp = g + plane * plane_out;
    const int64_t* ip = ix + plane * plane_out;
    bool odd = false;
    if (y_lo == 0) {  // rows that reach no input: their indices must lie past the plane
      for (int64_t o = 0; o < reach.begin * out_w; ++o) odd |= ip[o] < plane_in;
      for (int64_t o = reach.end * out_w; o < plane_out; ++o) odd |= ip[o] < plane_in;
    }
    const Range oys = windows_reaching<int64_t>(y_lo, y_hi, out_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t oy = oys.begin; oy < oys.end; ++oy) {
      const Range ys = window_taps(oy, in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
      const int64_t own = ys.begin * in_w, own_span = (ys.end - ys.begin) * in_w;
      if (own_span <= 0) {  // windows that see no row: their indices must lie past the plane
        for (int64_t o = oy * out_w; o < (oy + 1) * out_w; ++o) odd |= ip[o] < plane_in;
        continue;
      }
      for (int64_t o = oy * out_w; o < (oy + 1) * out_w; ++o) {
        const int64_t index = ip[o];
        odd |= static_cast<uint64_t>(index - own) >= static_cast<uint64_t>(own_span);
        const int64_t t = index - lo;
        if (static_cast<uint64_t>(t) < static_cast<uint64_t>(span)) gx[t] += static_cast<acc>(gp[o]);
      }
    }
    if (odd) stray = true;
  });
  if (stray) for_each_band(grad_input, planes, in_h, in_w, whole_plane, true);
}

// The window (kernel_size, stride, padding, dilation: max_pool2d's) is in the
// schema for the CUDA kernel, which gathers per input pixel over the windows
// that can contain it; this scatter needs only the indices, and the window
// to tell which output rows can reach a band of input rows and whether an
// index past the plane belongs to a window that sees no input.
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation) {
  check_kernel_device("max_pool2d_backward", grad_output, at::kCPU);
  const Window p = check_max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation);
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t in_h = input_size[0], in_w = input_size[1];
  const int64_t out_h = grad_output.size(2), out_w = grad_output.size(3);
  const at::MemoryFormat memory_format = grad_output.suggest_memory_format();
  const at::Tensor dy = grad_output.contiguous(memory_format), idx = indices.contiguous(memory_format);
  at::Tensor grad_input =
      at::empty({batch, channels, in_h, in_w}, grad_output.options().memory_format(memory_format));
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();
  TORCHCONV_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "torchconv_cpp::max_pool2d_backward", [&] {
    const scalar_t* g = dy.data_ptr<scalar_t>();
    const int64_t* ix = idx.data_ptr<int64_t>();
    if (memory_format == at::MemoryFormat::ChannelsLast) {
      max_pool2d_backward_nhwc<scalar_t>(g, ix, grad_input.data_ptr<scalar_t>(), batch, channels, in_h, in_w, out_h,
                                         out_w, p);
    } else {
      max_pool2d_backward_nchw<scalar_t>(g, ix, grad_input.data_ptr<scalar_t>(), batch * channels, in_h, in_w, out_h,
                                         out_w, p);
    }
  });
  return grad_input;
}

// ------------------------------------------------------------- avg pool

// One output row of one plane (NCHW). Interior columns run tap by tap over
// the row (vectorised), summing in the same order as a window at a time, so
// the results are the same bits.
template <typename scalar_t, int STRIDE>
void avg_row_nchw(const scalar_t* in, int64_t in_h, int64_t in_w, int64_t oy, int64_t out_w, const Window& p,
                  const Range& cols, bool count_include_pad, int64_t divisor_override,
                  acc_t<scalar_t>* __restrict sum, scalar_t* out) {
  using acc = acc_t<scalar_t>;
  const int64_t sw = STRIDE > 0 ? STRIDE : p.stride_w;
  const Span ys = avg_span(oy, in_h, p.kernel_h, p.stride_h, p.pad_h);
  auto window = [&](int64_t ox) {
    const Span xs = avg_span(ox, in_w, p.kernel_w, p.stride_w, p.pad_w);
    const int64_t divisor = avg_divisor(ys, xs, count_include_pad, divisor_override);
    acc s = 0;
    for (int64_t yy = ys.begin; yy < ys.end; ++yy)
      for (int64_t xx = xs.begin; xx < xs.end; ++xx) s += static_cast<acc>(in[yy * in_w + xx]);
    out[ox] = static_cast<scalar_t>(divisor == 0 ? acc(0) : s / acc(divisor));
  };
  if (ys.begin >= ys.end || cols.begin >= cols.end) {
    for (int64_t ox = 0; ox < out_w; ++ox) window(ox);
    return;
  }
  for (int64_t ox = 0; ox < cols.begin; ++ox) window(ox);
  const int64_t n = cols.end - cols.begin;
  std::fill(sum, sum + n, acc(0));
  for (int64_t y = ys.begin; y < ys.end; ++y) {
    for (int64_t kx = 0; kx < p.kernel_w; ++kx) {
      const scalar_t* row = in + y * in_w + cols.begin * sw - p.pad_w + kx;
      for (int64_t i = 0; i < n; ++i) sum[i] += static_cast<acc>(row[i * sw]);
    }
  }
  // Interior windows are whole along x: every one has the same divisor.
  const Span xs = avg_span(cols.begin, in_w, p.kernel_w, p.stride_w, p.pad_w);
  const acc divisor = static_cast<acc>(avg_divisor(ys, xs, count_include_pad, divisor_override));
  for (int64_t i = 0; i < n; ++i) out[cols.begin + i] = static_cast<scalar_t>(sum[i] / divisor);
  for (int64_t ox = cols.end; ox < out_w; ++ox) window(ox);
}

template <typename scalar_t, int STRIDE>
void avg_pool2d_nchw(const scalar_t* input, scalar_t* output, int64_t planes, int64_t in_h, int64_t in_w,
                     int64_t out_h, int64_t out_w, const Window& p, bool count_include_pad,
                     int64_t divisor_override) {
  const Range cols = interior(out_w, in_w, p.kernel_w, p.stride_w, p.pad_w, 1);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(out_w * p.kernel_h * p.kernel_w, 1));
  at::parallel_for(0, planes * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t<scalar_t>> sum(out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / out_h, oy = r % out_h;
      avg_row_nchw<scalar_t, STRIDE>(input + plane * in_h * in_w, in_h, in_w, oy, out_w, p, cols, count_include_pad,
                                     divisor_override, sum.data(), output + r * out_w);
    }
  });
}

template <typename scalar_t>
void avg_pool2d_nhwc(const scalar_t* input, scalar_t* output, int64_t batch, int64_t channels, int64_t in_h,
                     int64_t in_w, int64_t out_h, int64_t out_w, const Window& p, bool count_include_pad,
                     int64_t divisor_override) {
  using acc = acc_t<scalar_t>;
  const int64_t C = channels;
  at::parallel_for(0, batch * out_h * out_w, std::max<int64_t>(1, 2048 / C), [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer(widening_size<scalar_t>(C));
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const int64_t n = pixel / (out_h * out_w), oy = pixel / out_w % out_h, ox = pixel % out_w;
      const Span ys = avg_span(oy, in_h, p.kernel_h, p.stride_h, p.pad_h);
      const Span xs = avg_span(ox, in_w, p.kernel_w, p.stride_w, p.pad_w);
      const int64_t divisor = avg_divisor(ys, xs, count_include_pad, divisor_override);
      acc* __restrict sum = accumulator(output + pixel * C, buffer.data());
      std::fill(sum, sum + C, acc(0));
      if (divisor != 0) {
        const scalar_t* in = input + n * in_h * in_w * C;
        for (int64_t y = ys.begin; y < ys.end; ++y) {
          for (int64_t x = xs.begin; x < xs.end; ++x) {
            const scalar_t* __restrict v = in + (y * in_w + x) * C;
            for (int64_t c = 0; c < C; ++c) sum[c] += static_cast<acc>(v[c]);
          }
        }
        const acc d = static_cast<acc>(divisor);
        for (int64_t c = 0; c < C; ++c) sum[c] = sum[c] / d;
      }
      store(sum, C, output + pixel * C);
    }
  });
}

at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      bool ceil_mode, bool count_include_pad, c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d", input, at::kCPU);
  const PoolShape shape = check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, divisor_override);
  const Window& p = shape.window;
  const int64_t fixed_divisor = divisor_override.value_or(0);  // 0: none (avg_divisor)
  const int64_t batch = input.size(0), channels = input.size(1), in_h = input.size(2), in_w = input.size(3);
  const int64_t out_h = shape.out_h, out_w = shape.out_w;
  const at::MemoryFormat memory_format = input.suggest_memory_format();  // of a 4-d tensor: NCHW or NHWC
  const at::Tensor x = input.contiguous(memory_format);
  at::Tensor out = at::empty({batch, channels, out_h, out_w}, input.options().memory_format(memory_format));
  if (out.numel() == 0) return out;
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::avg_pool2d", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    if (memory_format == at::MemoryFormat::ChannelsLast) {
      avg_pool2d_nhwc<scalar_t>(in, y, batch, channels, in_h, in_w, out_h, out_w, p, count_include_pad,
                                fixed_divisor);
    } else if (p.stride_w == 2) {
      avg_pool2d_nchw<scalar_t, 2>(in, y, batch * channels, in_h, in_w, out_h, out_w, p, count_include_pad,
                                   fixed_divisor);
    } else if (p.stride_w == 1) {
      avg_pool2d_nchw<scalar_t, 1>(in, y, batch * channels, in_h, in_w, out_h, out_w, p, count_include_pad,
                                   fixed_divisor);
    } else {
      avg_pool2d_nchw<scalar_t, 0>(in, y, batch * channels, in_h, in_w, out_h, out_w, p, count_include_pad,
                                   fixed_divisor);
    }
  });
  return out;
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                               c10::optional<int64_t> divisor_override) {
  check_kernel_device("avg_pool2d_backward", grad_output, at::kCPU);
  const Window p = check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, divisor_override);
  const int64_t fixed_divisor = divisor_override.value_or(0);  // 0: none (avg_divisor)
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t in_h = input_size[0], in_w = input_size[1];
  const int64_t out_h = grad_output.size(2), out_w = grad_output.size(3);
  const at::MemoryFormat memory_format = grad_output.suggest_memory_format();
  const at::Tensor dy = grad_output.contiguous(memory_format);
  at::Tensor grad_input =
      at::empty({batch, channels, in_h, in_w}, grad_output.options().memory_format(memory_format));
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();
  TORCHCONV_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "torchconv_cpp::avg_pool2d_backward", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* g = dy.data_ptr<scalar_t>();
    // Windows are visited in output order and each spreads over its rows
    // inside the task's band: every input cell takes its contributions in
    // the serial order.
    if (memory_format == at::MemoryFormat::ChannelsLast) {
      const int64_t C = channels;
      for_each_band(grad_input.data_ptr<scalar_t>(), batch, in_h, in_w * C,
                    [&](int64_t n, int64_t y_lo, int64_t y_hi, acc* gx) {
                      std::vector<acc> share(C);
                      const Range oys =
                          windows_reaching<int64_t>(y_lo, y_hi, out_h, p.kernel_h, p.stride_h, p.pad_h, 1);
                      for (int64_t oy = oys.begin; oy < oys.end; ++oy) {
                        const Span ys = avg_span(oy, in_h, p.kernel_h, p.stride_h, p.pad_h);
                        const int64_t r0 = std::max(ys.begin, y_lo), r1 = std::min(ys.end, y_hi);
                        for (int64_t ox = 0; ox < out_w; ++ox) {
                          const Span xs = avg_span(ox, in_w, p.kernel_w, p.stride_w, p.pad_w);
                          const int64_t divisor = avg_divisor(ys, xs, count_include_pad, fixed_divisor);
                          if (divisor == 0 || r0 >= r1) continue;
                          const scalar_t* __restrict go = g + ((n * out_h + oy) * out_w + ox) * C;
                          acc* __restrict s = share.data();
                          const acc d = static_cast<acc>(divisor);
                          for (int64_t c = 0; c < C; ++c) s[c] = static_cast<acc>(go[c]) / d;
                          for (int64_t y = r0; y < r1; ++y) {
                            for (int64_t x = xs.begin; x < xs.end; ++x) {
                              acc* __restrict dst = gx + ((y - y_lo) * in_w + x) * C;
                              for (int64_t c = 0; c < C; ++c) dst[c] += s[c];
                            }
                          }
                        }
                      }
                    });
    } else {
      for_each_band(grad_input.data_ptr<scalar_t>(), batch * channels, in_h, in_w,
                    [&](int64_t plane, int64_t y_lo, int64_t y_hi, acc* gx) {
                      const scalar_t* src = g + plane * out_h * out_w;
                      const Range oys =
                          windows_reaching<int64_t>(y_lo, y_hi, out_h, p.kernel_h, p.stride_h, p.pad_h, 1);
                      for (int64_t oy = oys.begin; oy < oys.end; ++oy) {
                        const Span ys = avg_span(oy, in_h, p.kernel_h, p.stride_h, p.pad_h);
                        const int64_t r0 = std::max(ys.begin, y_lo), r1 = std::min(ys.end, y_hi);
                        if (r0 >= r1) continue;
                        for (int64_t ox = 0; ox < out_w; ++ox) {
                          const Span xs = avg_span(ox, in_w, p.kernel_w, p.stride_w, p.pad_w);
                          const int64_t divisor = avg_divisor(ys, xs, count_include_pad, fixed_divisor);
                          if (divisor == 0) continue;
                          const acc share = static_cast<acc>(src[oy * out_w + ox]) / acc(divisor);
                          for (int64_t y = r0; y < r1; ++y) {
                            acc* dst = gx + (y - y_lo) * in_w;
                            for (int64_t x = xs.begin; x < xs.end; ++x) dst[x] += share;
                          }
                        }
                      }
                    });
    }
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
