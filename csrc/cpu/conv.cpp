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
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "blas.h"
#include "checks.h"
#include "im2col.h"

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

// Runs fn(n, buffer) for every sample, buffer being `buffer_size` scratch
// elements owned by the running thread (allocated once per thread, not per
// sample, and never initialised: im2col writes all of it). With enough
// samples, samples go to threads and each GEMM runs single-threaded inside
// its worker; otherwise samples run in turn and the GEMM uses the threads.
template <typename scalar_t, typename Fn>
void for_each_sample(int64_t batch, int64_t buffer_size, const Fn& fn) {
  auto run = [&](int64_t begin, int64_t end) {
    std::unique_ptr<scalar_t[]> buffer(buffer_size > 0 ? new scalar_t[buffer_size] : nullptr);
    for (int64_t n = begin; n < end; ++n) fn(n, buffer.get());
  };
  if (batch >= at::get_num_threads()) {
    at::parallel_for(0, batch, 1, run);
  } else {
    run(0, batch);
  }
}

// The column matrix of group g of one image: the image itself for a
// pointwise convolution, otherwise its im2col, written into buffer.
template <typename scalar_t>
const scalar_t* group_columns(const ConvShape& s, const scalar_t* image, int64_t g, bool pointwise,
                              scalar_t* buffer) {
  const scalar_t* group_image = image + g * s.image_group() * s.image_size();
  if (pointwise) return group_image;
  im2col(group_image, s.image_group(), s.image_h, s.image_w, s.grid_h, s.grid_w, s.window, buffer);
  return buffer;
}

template <typename scalar_t>
void add_bias(scalar_t* out, const scalar_t* bias, int64_t channels, int64_t plane) {
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t b = bias[c];
    scalar_t* row = out + c * plane;
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
// channels, and measured it ran 4-5x faster than these loops.

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
void conv2d_direct(const ConvShape& s, const scalar_t* input, const scalar_t* weight, const scalar_t* bias,
                   scalar_t* output) {
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  at::parallel_for(0, s.batch * s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.grid_channels, o = plane % s.grid_channels, g = o / s.grid_group();
      const scalar_t* image = input + (n * s.image_channels + g) * s.image_size();
      scalar_t* out = output + plane * s.grid_size();
      std::fill(out, out + s.grid_size(), bias != nullptr ? bias[o] : scalar_t(0));
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const scalar_t wv = weight[o * taps + i * w.kernel_w + j];
          for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
            const scalar_t* in = image + image_at;
            scalar_t* row = out + grid_at;
            if (sw == 1) {
              for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x];
            } else {
              for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x * sw];
            }
          });
        }
      }
    }
  });
}

template <typename scalar_t>
void conv_transpose2d_direct(const ConvShape& s, const scalar_t* input, const scalar_t* weight, const scalar_t* bias,
                             scalar_t* output) {
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  // One output (image) plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.image_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.image_channels, g = plane % s.image_channels;
      scalar_t* image = output + plane * s.image_size();
      std::fill(image, image + s.image_size(), bias != nullptr ? bias[g] : scalar_t(0));
      for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
        const scalar_t* grid = input + (n * s.grid_channels + c) * s.grid_size();
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const scalar_t wv = weight[c * taps + i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              scalar_t* out = image + image_at;
              const scalar_t* row = grid + grid_at;
              if (sw == 1) {
                for (int64_t x = xb; x < xe; ++x) out[x] += wv * row[x];
              } else {
                for (int64_t x = xb; x < xe; ++x) out[x * sw] += wv * row[x];
              }
            });
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void conv2d_weight_direct(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  // One output channel per task, the batch summed inside it in order.
  at::parallel_for(0, s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g = o / s.grid_group();
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          scalar_t total = 0;
          for (int64_t n = 0; n < s.batch; ++n) {
            const scalar_t* image = input + (n * s.image_channels + g) * s.image_size();
            const scalar_t* dy = grad_output + (n * s.grid_channels + o) * s.grid_size();
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              const scalar_t* in = image + image_at;
              const scalar_t* row = dy + grid_at;
              scalar_t sum = 0;
              if (sw == 1) {
                for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x];
              } else {
                for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x * sw];
              }
              total += sum;
            });
          }
          grad_weight[o * taps + i * w.kernel_w + j] = total;
        }
      }
    }
  });
}

// ---------------------------------------------------------------- conv2d

template <typename scalar_t>
void conv2d_kernel(const ConvShape& s, const scalar_t* input, const scalar_t* weight,
                   const scalar_t* bias, scalar_t* output) {
  if (uses_direct_loops(s)) return conv2d_direct(s, input, weight, bias, output);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const bool pointwise = s.is_pointwise();
  for_each_sample<scalar_t>(s.batch, pointwise ? 0 : rows * grid, [&](int64_t n, scalar_t* buffer) {
    const scalar_t* image = input + n * s.image_channels * s.image_size();
    scalar_t* out = output + n * s.grid_channels * grid;
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* columns = group_columns(s, image, g, pointwise, buffer);
      // out[g] (Cout/G x L) = W[g] (Cout/G x rows) . columns (rows x L)
      gemm<scalar_t>(false, false, s.grid_group(), grid, rows, 1, weight + g * s.grid_group() * rows,
                     std::max<int64_t>(rows, 1), columns, std::max<int64_t>(grid, 1), 0,
                     out + g * s.grid_group() * grid, std::max<int64_t>(grid, 1));
    }
    if (bias != nullptr) add_bias(out, bias, s.grid_channels, grid);
  });
}

// ------------------------------------------------------- conv_transpose2d

template <typename scalar_t>
void conv_transpose2d_kernel(const ConvShape& s, const scalar_t* input, const scalar_t* weight,
                             const scalar_t* bias, scalar_t* output) {
  // Here the input lives on the grid and the output is the image.
  if (uses_direct_loops(s)) return conv_transpose2d_direct(s, input, weight, bias, output);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const bool pointwise = s.is_pointwise();
  for_each_sample<scalar_t>(s.batch, pointwise ? 0 : rows * grid, [&](int64_t n, scalar_t* buffer) {
    const scalar_t* x = input + n * s.grid_channels * grid;
    scalar_t* image = output + n * s.image_channels * s.image_size();
    if (!pointwise) std::fill(image, image + s.image_channels * s.image_size(), scalar_t(0));
    for (int64_t g = 0; g < s.groups; ++g) {
      scalar_t* group_image = image + g * s.image_group() * s.image_size();
      scalar_t* columns = pointwise ? group_image : buffer;
      // columns (rows x L) = W[g]^T (rows x Cin/G) . x[g] (Cin/G x L); W[g] is Cin/G x rows.
      gemm<scalar_t>(true, false, rows, grid, s.grid_group(), 1, weight + g * s.grid_group() * rows,
                     std::max<int64_t>(rows, 1), x + g * s.grid_group() * grid,
                     std::max<int64_t>(grid, 1), 0, columns, std::max<int64_t>(grid, 1));
      if (!pointwise) {
        col2im(columns, s.image_group(), s.image_h, s.image_w, s.grid_h, s.grid_w, s.window,
               group_image);
      }
    }
    if (bias != nullptr) add_bias(image, bias, s.image_channels, s.image_size());
  });
}

// ---------------------------------------------------------- conv2d_weight

template <typename scalar_t>
void conv2d_weight_kernel(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  if (uses_direct_loops(s)) return conv2d_weight_direct(s, input, grad_output, grad_weight);
  const int64_t rows = s.column_rows(), grid = s.grid_size();
  const int64_t weight_numel = s.grid_channels * rows;
  const bool pointwise = s.is_pointwise();
  // One partial sum per thread, added up at the end: no two threads write
  // the same memory, and the result does not depend on scheduling order
  // beyond the fixed order of that final sum.
  const bool threaded_batch = s.batch >= at::get_num_threads();
  const int64_t partials = threaded_batch ? at::get_num_threads() : 1;
  std::vector<scalar_t> sums(partials * weight_numel, scalar_t(0));
  for_each_sample<scalar_t>(s.batch, pointwise ? 0 : rows * grid, [&](int64_t n, scalar_t* buffer) {
    scalar_t* sum = sums.data() + (threaded_batch ? at::get_thread_num() : 0) * weight_numel;
    const scalar_t* image = input + n * s.image_channels * s.image_size();
    const scalar_t* dy = grad_output + n * s.grid_channels * grid;
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* columns = group_columns(s, image, g, pointwise, buffer);
      // sum[g] (Cout/G x rows) += dy[g] (Cout/G x L) . columns^T (L x rows)
      gemm<scalar_t>(false, true, s.grid_group(), rows, grid, 1, dy + g * s.grid_group() * grid,
                     std::max<int64_t>(grid, 1), columns, std::max<int64_t>(grid, 1), 1,
                     sum + g * s.grid_group() * rows, std::max<int64_t>(rows, 1));
    }
  });
  std::copy(sums.begin(), sums.begin() + weight_numel, grad_weight);
  for (int64_t t = 1; t < partials; ++t) {
    const scalar_t* part = sums.data() + t * weight_numel;
    for (int64_t i = 0; i < weight_numel; ++i) grad_weight[i] += part[i];
  }
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
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({s.batch, s.grid_channels, out_h, out_w}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
    conv2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                            b.defined() ? b.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>());
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
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({s.batch, out_channels, out_h, out_w}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
    conv_transpose2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                      b.defined() ? b.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>());
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
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
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
