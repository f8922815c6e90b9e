// CPU kernels of conv2d, conv_transpose2d and the weight gradient of both.
//
// The three are im2col/col2im around one GEMM per sample and group:
//   conv2d            y[n,g]  = W[g] . im2col(x[n,g])
//   conv_transpose2d  y[n,g]  = col2im(W[g]^T . x[n,g])   (conv2d's grad_input)
//   conv2d_weight     dW[g]   = sum_n dy[n,g] . im2col(x[n,g])^T
// A 1x1 kernel with stride 1 and no padding needs no im2col: the image is its
// own column matrix. Samples run in parallel (at::parallel_for), each thread
// with its own column buffer, so memory stays bounded as the batch grows;
// with fewer samples than threads, the GEMM itself runs multi-threaded.
//
// float16 and bfloat16 compute in float32 (precision.h): the weight and bias
// are widened once (they are small), each sample's image is widened as
// im2col builds its columns (or into the thread's buffer when it needs no
// im2col), the GEMM is the float32 one, and the sample's float32 result, bias
// included, is rounded once into the output. The weight gradient sums the
// batch in float32 and rounds at the end. Scratch stays per thread and per
// sample, as in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "blas.h"
#include "checks.h"
#include "im2col.h"
#include "precision.h"

namespace torchconv {
namespace cpu {
namespace {

struct ConvShape {
  int64_t batch, groups;
  int64_t image_channels, image_h, image_w;  // the side that im2col reads / col2im writes
  int64_t grid_channels, grid_h, grid_w;     // the side the GEMM produces or consumes
  Window window;

  int64_t image_group() const { return image_channels / groups; }
  int64_t grid_group() const { return grid_channels / groups; }
  int64_t column_rows() const { return image_group() * window.kernel_h * window.kernel_w; }
  int64_t grid_size() const { return grid_h * grid_w; }
  int64_t image_size() const { return image_h * image_w; }
  // One sample's elements on each side.
  int64_t grid_sample() const { return grid_channels * grid_size(); }
  int64_t image_sample() const { return image_channels * image_size(); }
  bool is_pointwise() const {
    const Window& w = window;
    return w.kernel_h == 1 && w.kernel_w == 1 && w.stride_h == 1 && w.stride_w == 1 &&
           w.pad_h == 0 && w.pad_w == 0 && grid_h == image_h && grid_w == image_w;
  }
};

Window make_window(const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation) {
  return Window{weight.size(2), weight.size(3), stride[0], stride[1],
                padding[0],     padding[1],     dilation[0], dilation[1]};
}

// A weight or bias in the type the kernels compute in (float32 for the half
// dtypes), contiguous; undefined stays undefined.
at::Tensor computed_in_opmath(const at::Tensor& t) {
  if (!t.defined()) return t;
  return t.to(at::toOpMathType(t.scalar_type())).contiguous();
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Runs fn(n, buffer) for every sample, buffer being `buffer_size` scratch
// elements owned by the running thread (allocated once per thread, not per
// sample, and never initialised: each user writes what it reads). With
// enough samples, samples go to threads and each GEMM runs single-threaded
// inside its worker; otherwise samples run in turn and the GEMM uses the
// threads.
template <typename T, typename Fn>
void for_each_sample(int64_t batch, int64_t buffer_size, const Fn& fn) {
  auto run = [&](int64_t begin, int64_t end) {
    std::unique_ptr<T[]> buffer(buffer_size > 0 ? new T[buffer_size] : nullptr);
    for (int64_t n = begin; n < end; ++n) fn(n, buffer.get());
  };
  if (batch >= at::get_num_threads()) {
    at::parallel_for(0, batch, 1, run);
  } else {
    run(0, batch);
  }
}

// Scratch of a thread's chunk of planes in the direct loops: n elements,
// none when n is 0 (float32 and float64 need none).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

// The column matrix of group g of one image, in acc_t: the image itself for
// a pointwise convolution (widened into buffer for a half dtype), otherwise
// its im2col, written into buffer.
template <typename scalar_t>
const acc_t<scalar_t>* group_columns(const ConvShape& s, const scalar_t* image, int64_t g, bool pointwise,
                                     acc_t<scalar_t>* buffer) {
  const scalar_t* group_image = image + g * s.image_group() * s.image_size();
  if (pointwise) return widened(group_image, s.image_group() * s.image_size(), buffer);
  im2col(group_image, s.image_group(), s.image_h, s.image_w, s.grid_h, s.grid_w, s.window, buffer);
  return buffer;
}

// Column scratch per sample: none when a pointwise image is read in place.
template <typename scalar_t>
int64_t column_buffer_size(const ConvShape& s, bool pointwise) {
  return pointwise && !is_widened<scalar_t> ? 0 : s.column_rows() * s.grid_size();
}

template <typename T>
void add_bias(T* out, const T* bias, int64_t channels, int64_t plane) {
  for (int64_t c = 0; c < channels; ++c) {
    const T b = bias[c];
    T* row = out + c * plane;
    for (int64_t i = 0; i < plane; ++i) row[i] += b;
  }
}


// ------------------------------------------- direct loops, one image channel per group
//
// When there are several groups and each reads a single image channel
// (depthwise convolutions), every group's GEMM is tiny (a reduction of only
// kH * kW, a handful of output channels) and im2col copies the image kH * kW
// times for nothing. These loops run the same sums in place: for every
// kernel tap, one strided multiply-add of an image row into an output row
// (unit stride vectorises). A single group on a one-channel image (an MNIST
// first layer) stays on the GEMM path: there one GEMM covers all output
// channels, and measured it ran 4-5x faster than these loops. Half dtypes
// widen each plane they read into the thread's scratch first, and
// accumulate each plane they write in float32 scratch.

inline bool uses_direct_loops(const ConvShape& s) { return s.groups > 1 && s.image_group() == 1; }

// Calls fn(image_row, grid_row, x_begin, x_end) for every tap (i, j) and grid
// row y that meets the image: grid x in [x_begin, x_end) pairs with image
// pixel x * stride_w + offset of image_row.
template <typename Fn>
void for_each_tap_row(const ConvShape& s, int64_t i, int64_t j, const Fn& fn) {
  const Window& w = s.window;
  const int64_t offset_w = j * w.dilation_w - w.pad_w;
  int64_t x_begin, x_end;
  inside_range(s.grid_w, w.stride_w, offset_w, s.image_w, &x_begin, &x_end);
  for (int64_t y = 0; y < s.grid_h; ++y) {
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    if (iy < 0 || iy >= s.image_h) continue;
    fn(iy * s.image_w + offset_w, y * s.grid_w, x_begin, x_end);
  }
}

template <typename scalar_t>
void conv2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  at::parallel_for(0, s.batch * s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(widening_size<scalar_t>(s.image_size()));
    auto out_buffer = scratch<acc>(widening_size<scalar_t>(s.grid_size()));
    const acc* image = nullptr;
    int64_t image_plane = -1;  // the image plane `image` holds: consecutive outputs often share it
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.grid_channels, o = plane % s.grid_channels, g = o / s.grid_group();
      const int64_t wanted = n * s.image_channels + g;
      if (wanted != image_plane) {
        image = widened(input + wanted * s.image_size(), s.image_size(), image_buffer.get());
        image_plane = wanted;
      }
      scalar_t* result = output + plane * s.grid_size();
      acc* out = accumulator(result, out_buffer.get());
      std::fill(out, out + s.grid_size(), bias != nullptr ? bias[o] : acc(0));
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const acc wv = weight[o * taps + i * w.kernel_w + j];
          for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
            const acc* in = image + image_at;
            acc* row = out + grid_at;
            if (sw == 1) {
              for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x];
            } else {
              for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x * sw];
            }
          });
        }
      }
      store(out, s.grid_size(), result);
    }
  });
}

template <typename scalar_t>
void conv_transpose2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  // One output (image) plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.image_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(widening_size<scalar_t>(s.image_size()));
    auto grid_buffer = scratch<acc>(widening_size<scalar_t>(s.grid_size()));
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.image_channels, g = plane % s.image_channels;
      scalar_t* result = output + plane * s.image_size();
      acc* image = accumulator(result, image_buffer.get());
      std::fill(image, image + s.image_size(), bias != nullptr ? bias[g] : acc(0));
      for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
        const acc* grid = widened(input + (n * s.grid_channels + c) * s.grid_size(), s.grid_size(), grid_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const acc wv = weight[c * taps + i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              acc* out = image + image_at;
              const acc* row = grid + grid_at;
              if (sw == 1) {
                for (int64_t x = xb; x < xe; ++x) out[x] += wv * row[x];
              } else {
                for (int64_t x = xb; x < xe; ++x) out[x * sw] += wv * row[x];
              }
            });
          }
        }
      }
      store(image, s.image_size(), result);
    }
  });
}

template <typename scalar_t>
void conv2d_weight_direct(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  // One output channel per task, the batch summed inside it in order: for
  // each tap, sample after sample, row after row.
  at::parallel_for(0, s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(widening_size<scalar_t>(s.image_size()));
    auto dy_buffer = scratch<acc>(widening_size<scalar_t>(s.grid_size()));
    std::vector<acc> totals(taps);
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g = o / s.grid_group();
      std::fill(totals.begin(), totals.end(), acc(0));
      for (int64_t n = 0; n < s.batch; ++n) {
        const acc* image = widened(input + (n * s.image_channels + g) * s.image_size(), s.image_size(),
                                   image_buffer.get());
        const acc* dy = widened(grad_output + (n * s.grid_channels + o) * s.grid_size(), s.grid_size(),
                                dy_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            acc& total = totals[i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              const acc* in = image + image_at;
              const acc* row = dy + grid_at;
              acc sum = 0;
              if (sw == 1) {
                for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x];
              } else {
                for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x * sw];
              }
              total += sum;
            });
          }
        }
      }
      convert(totals.data(), grad_weight + o * taps, taps);
    }
  });
}

// ---------------------------------------------------------------- conv2d

template <typename scalar_t>
void conv2d_kernel(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  if (uses_direct_loops(s)) return conv2d_direct(s, input, weight, bias, output);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const bool pointwise = s.is_pointwise();
  // Per thread: the columns, then (half dtypes) the sample's float32 output.
  const int64_t column_size = column_buffer_size<scalar_t>(s, pointwise);
  const int64_t out_size = widening_size<scalar_t>(s.grid_sample());
  for_each_sample<acc>(s.batch, column_size + out_size, [&](int64_t n, acc* buffer) {
    const scalar_t* image = input + n * s.image_sample();
    scalar_t* result = output + n * s.grid_sample();
    acc* out = accumulator(result, buffer + column_size);
    for (int64_t g = 0; g < s.groups; ++g) {
      const acc* columns = group_columns(s, image, g, pointwise, buffer);
      // out[g] (Cout/G x L) = W[g] (Cout/G x rows) . columns (rows x L)
      gemm<acc>(false, false, s.grid_group(), grid, rows, 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), columns, std::max<int64_t>(grid, 1), 0,
                out + g * s.grid_group() * grid, std::max<int64_t>(grid, 1));
    }
    if (bias != nullptr) add_bias(out, bias, s.grid_channels, grid);
    store(out, s.grid_sample(), result);
  });
}

// ------------------------------------------------------- conv_transpose2d

template <typename scalar_t>
void conv_transpose2d_kernel(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  // Here the input lives on the grid and the output is the image.
  if (uses_direct_loops(s)) return conv_transpose2d_direct(s, input, weight, bias, output);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const bool pointwise = s.is_pointwise();
  // Per thread: the columns, then (half dtypes) the sample's widened input
  // and its float32 output.
  const int64_t column_size = pointwise ? 0 : rows * grid;
  const int64_t x_size = widening_size<scalar_t>(s.grid_sample());
  const int64_t image_size = widening_size<scalar_t>(s.image_sample());
  for_each_sample<acc>(s.batch, column_size + x_size + image_size, [&](int64_t n, acc* buffer) {
    const acc* x = widened(input + n * s.grid_sample(), s.grid_sample(), buffer + column_size);
    scalar_t* result = output + n * s.image_sample();
    acc* image = accumulator(result, buffer + column_size + x_size);
    if (!pointwise) std::fill(image, image + s.image_sample(), acc(0));
    for (int64_t g = 0; g < s.groups; ++g) {
      acc* group_image = image + g * s.image_group() * s.image_size();
      acc* columns = pointwise ? group_image : buffer;
      // columns (rows x L) = W[g]^T (rows x Cin/G) . x[g] (Cin/G x L); W[g] is Cin/G x rows.
      gemm<acc>(true, false, rows, grid, s.grid_group(), 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), x + g * s.grid_group() * grid,
                std::max<int64_t>(grid, 1), 0, columns, std::max<int64_t>(grid, 1));
      if (!pointwise) {
        col2im(columns, s.image_group(), s.image_h, s.image_w, s.grid_h, s.grid_w, s.window,
               group_image);
      }
    }
    if (bias != nullptr) add_bias(image, bias, s.image_channels, s.image_size());
    store(image, s.image_sample(), result);
  });
}

// ---------------------------------------------------------- conv2d_weight

template <typename scalar_t>
void conv2d_weight_kernel(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  if (uses_direct_loops(s)) return conv2d_weight_direct(s, input, grad_output, grad_weight);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const int64_t weight_numel = s.grid_channels * rows;
  const bool pointwise = s.is_pointwise();
  // One partial sum per thread, added up at the end: no two threads write
  // the same memory, and the result does not depend on scheduling order
  // beyond the fixed order of that final sum. The partial sums are acc_t:
  // half dtypes sum the batch in float32 and round once.
  const bool threaded_batch = s.batch >= at::get_num_threads();
  const int64_t partials = threaded_batch ? at::get_num_threads() : 1;
  std::vector<acc> sums(partials * weight_numel, acc(0));
  // Per thread: the columns, then (half dtypes) the sample's widened grad_output.
  const int64_t column_size = column_buffer_size<scalar_t>(s, pointwise);
  const int64_t dy_size = widening_size<scalar_t>(s.grid_sample());
  for_each_sample<acc>(s.batch, column_size + dy_size, [&](int64_t n, acc* buffer) {
    acc* sum = sums.data() + (threaded_batch ? at::get_thread_num() : 0) * weight_numel;
    const scalar_t* image = input + n * s.image_sample();
    const acc* dy = widened(grad_output + n * s.grid_sample(), s.grid_sample(), buffer + column_size);
    for (int64_t g = 0; g < s.groups; ++g) {
      const acc* columns = group_columns(s, image, g, pointwise, buffer);
      // sum[g] (Cout/G x rows) += dy[g] (Cout/G x L) . columns^T (L x rows)
      gemm<acc>(false, true, s.grid_group(), rows, grid, 1, dy + g * s.grid_group() * grid,
                std::max<int64_t>(grid, 1), columns, std::max<int64_t>(grid, 1), 1,
                sum + g * s.grid_group() * rows, std::max<int64_t>(rows, 1));
    }
  });
  for (int64_t t = 1; t < partials; ++t) {
    const acc* part = sums.data() + t * weight_numel;
    for (int64_t i = 0; i < weight_numel; ++i) sums[i] += part[i];
  }
  convert(sums.data(), grad_weight, weight_numel);
}

// ------------------------------------------------------------- entry points

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight, stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    weight.size(0), out_h, out_w, window};
  const at::Tensor x = input.contiguous(), w = computed_in_opmath(weight);
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  at::Tensor out = at::empty({s.batch, s.grid_channels, out_h, out_w}, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
    using acc = acc_t<scalar_t>;
    conv2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                            out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  check_kernel_device("conv_transpose2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size =
      check_conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight, stride, padding, dilation);
  const int64_t out_channels = weight.size(1) * groups;
  const ConvShape s{input.size(0), groups, out_channels, out_h, out_w,
                    input.size(1), input.size(2), input.size(3), window};
  const at::Tensor x = input.contiguous(), w = computed_in_opmath(weight);
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  at::Tensor out = at::empty({s.batch, out_channels, out_h, out_w}, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
    using acc = acc_t<scalar_t>;
    conv_transpose2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                                      out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d_weight", input, at::kCPU);
  check_conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups);
  const at::Tensor weight_like = at::empty(weight_size, input.options().device(at::kMeta));
  const Window window = make_window(weight_like, stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    grad_output.size(1), grad_output.size(2), grad_output.size(3), window};
  const at::Tensor x = input.contiguous(), dy = grad_output.contiguous();
  at::Tensor grad_weight = at::empty(weight_size, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
    conv2d_weight_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), grad_weight.data_ptr<scalar_t>());
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv_transpose2d", &conv_transpose2d);
  m.impl("conv2d_weight", &conv2d_weight);
}

}  // namespace cpu
}  // namespace torchconv
