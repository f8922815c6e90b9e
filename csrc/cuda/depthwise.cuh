// Direct kernels for grouped convolutions whose groups have one plane
// channel each (depthwise: groups == channels, as in MobileNet).
//
// There the pixel-major GEMM of conv.cu degenerates: every group is a
// [rows x kH*kW] . [kH*kW x O/G] product with O/G usually 1, and im2col
// writes kH*kW copies of the planes to feed it. These kernels compute the
// same sums straight from the tensors (any strides, so no layout copies):
//
//   conv2d            one thread per output element: its kH*kW taps
//   conv_transpose2d  one thread per output element: a gather over the
//                     taps and windows channels that reach it (no atomics)
//   conv2d_weight     one block per weight element: the block's threads
//                     split the (n, y, x) positions in a fixed pattern and
//                     add their partial sums in a fixed tree, so the
//                     result is the same run after run
//
// "plane" is the side the windows lie on, with one channel per group
// (conv2d's input, conv_transpose2d's output), "windows" the side with one
// value per window position and O/G channels per group (the names of
// cpu/conv/shape.h).
#pragma once

#include <ATen/OpMathType.h>

#include "columns.cuh"
#include "launch.cuh"
#include "window.h"

namespace torchconv {
namespace cuda {

template <typename scalar_t, typename index_t>
__global__ void depthwise_conv2d_kernel(const scalar_t* __restrict__ input, Layout4d in, const scalar_t* __restrict__ weight,
                                        const scalar_t* __restrict__ bias, Window w, Layout4d out_layout,
                                        bool channels_last, scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t per_group = static_cast<index_t>(out_layout.size[1] / in.size[1]);  // output channels per input channel
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(out_layout)) {
    const Coords<index_t> o = split_index<index_t>(e, out_layout, channels_last);
    const index_t g = o.c / per_group;
    const scalar_t* taps = weight + static_cast<int64_t>(o.c) * w.kernel_h * w.kernel_w;
    acc_t sum = bias != nullptr ? static_cast<acc_t>(bias[o.c]) : acc_t(0);
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      const int64_t iy = o.h * w.stride_h - w.pad_h + i * w.dilation_h;
      if (iy < 0 || iy >= in.size[2]) continue;
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const int64_t ix = o.w * w.stride_w - w.pad_w + j * w.dilation_w;
        if (ix < 0 || ix >= in.size[3]) continue;
        sum += static_cast<acc_t>(taps[i * w.kernel_w + j]) * static_cast<acc_t>(input[in.offset(o.n, g, iy, ix)]);
      }
    }
    output[out_layout.offset(o.n, o.c, o.h, o.w)] = static_cast<scalar_t>(sum);
  }
}

// out[n, g, y, x] = bias[g] + sum over the windows channels c of group g and
// the taps (i, j) whose window position lands on (y, x): weight[c, 0, i, j] * x[n, c, gy, gx].
template <typename scalar_t, typename index_t>
__global__ void depthwise_conv_transpose2d_kernel(const scalar_t* __restrict__ input, Layout4d in,
                                                  const scalar_t* __restrict__ weight,
                                                  const scalar_t* __restrict__ bias, Window w,
                                                  Layout4d out_layout, bool channels_last,
                                                  scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  // Windows channels per plane channel.
  const index_t per_group = static_cast<index_t>(in.size[1] / out_layout.size[1]);
  const index_t stride_h = static_cast<index_t>(w.stride_h), stride_w = static_cast<index_t>(w.stride_w);
  TORCHCONV_KERNEL_LOOP(index_t, e, numel_of(out_layout)) {
    const Coords<index_t> o = split_index<index_t>(e, out_layout, channels_last);
    acc_t sum = bias != nullptr ? static_cast<acc_t>(bias[o.c]) : acc_t(0);
    for (index_t c = o.c * per_group; c < (o.c + 1) * per_group; ++c) {
      const scalar_t* taps = weight + static_cast<int64_t>(c) * w.kernel_h * w.kernel_w;
      for (index_t i = 0; i < w.kernel_h; ++i) {
        const index_t gy = window_position_reading<index_t>(o.h, i, in.size[2], stride_h, w.pad_h, w.dilation_h);
        if (gy < 0) continue;
        for (index_t j = 0; j < w.kernel_w; ++j) {
          const index_t gx = window_position_reading<index_t>(o.w, j, in.size[3], stride_w, w.pad_w, w.dilation_w);
          if (gx < 0) continue;
          sum += static_cast<acc_t>(taps[i * w.kernel_w + j]) * static_cast<acc_t>(input[in.offset(o.n, c, gy, gx)]);
        }
      }
    }
    output[out_layout.offset(o.n, o.c, o.h, o.w)] = static_cast<scalar_t>(sum);
  }
}

constexpr int kReduceThreads = 256;
static_assert((kReduceThreads & (kReduceThreads - 1)) == 0, "the tree reduction halves the block: a power of two");

// grad_weight[o, 0, i, j] = sum over n, y, x of dy[n, o, y, x] * x[n, g, y*sh - ph + i*dh, x*sw - pw + j*dw].
// Launched with one block of kReduceThreads threads (a power of two) per weight element.
template <typename scalar_t, typename index_t>
__global__ void depthwise_conv2d_weight_kernel(const scalar_t* __restrict__ input, Layout4d in,
                                               const scalar_t* __restrict__ grad_output, Layout4d gy, Window w,
                                               scalar_t* __restrict__ grad_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[kReduceThreads];
  const int64_t taps = w.kernel_h * w.kernel_w;
  const int64_t per_group = gy.size[1] / in.size[1];
  const int64_t element = blockIdx.x;  // o * taps + i * kernel_w + j
  const int64_t o = element / taps, i = (element % taps) / w.kernel_w, j = element % w.kernel_w;
  const int64_t g = o / per_group;
  const index_t windows_h = static_cast<index_t>(gy.size[2]), windows_w = static_cast<index_t>(gy.size[3]);
  const index_t positions = static_cast<index_t>(gy.size[0]) * windows_h * windows_w;
  acc_t sum = 0;
  for (index_t p = threadIdx.x; p < positions; p += blockDim.x) {
    const index_t x = p % windows_w, y = (p / windows_w) % windows_h, n = p / (windows_w * windows_h);
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
    if (iy < 0 || iy >= in.size[2] || ix < 0 || ix >= in.size[3]) continue;
    sum += static_cast<acc_t>(grad_output[gy.offset(n, o, y, x)]) * static_cast<acc_t>(input[in.offset(n, g, iy, ix)]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {  // fixed tree: same order every run
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_weight[element] = static_cast<scalar_t>(partial[0]);
}

}  // namespace cuda
}  // namespace torchconv
