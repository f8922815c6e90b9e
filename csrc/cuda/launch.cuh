// Launch helpers shared by the CUDA kernels.
//
// Every element-wise kernel is a grid-stride loop over a 64-bit element
// count, so one launch covers any size (sizes past 2^31 included) with a
// bounded grid; every launch goes to the current stream of the tensors'
// device and is checked at once; every entry point holds a DeviceGuard for
// its input's device.
//
// Emulation: compiled as plain C++ with TORCHCONV_CUDA_EMULATION defined (see
// tests/cuda_emulation/), the same sources run on the CPU: a launch becomes a
// call with one block of one thread, so each grid-stride loop visits every
// element in turn. That checks all the index arithmetic and the host code
// (chunking, GEMM views, layouts) on a machine without a GPU; it says
// nothing about the GPU's own behaviour (races, launch limits, speed).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#ifdef TORCHCONV_CUDA_EMULATION
#include "emulation.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace torchconv {
namespace cuda {

constexpr int kThreads = 256;

// The device type these kernels take tensors on (the CPU in the emulation).
#ifdef TORCHCONV_CUDA_EMULATION
constexpr at::DeviceType kKernelDevice = at::kCPU;
#else
constexpr at::DeviceType kKernelDevice = at::kCUDA;
#endif

// Enough blocks to fill the GPU several times over; the grid-stride loop
// covers the rest. (65535 keeps within every GPU's grid limit.)
inline unsigned int blocks_for(int64_t count) {
  const int64_t wanted = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535)));
}

// for (int64_t i = first index of this thread; i < n; i += all threads)
#define TORCHCONV_KERNEL_LOOP(i, n)                                                     \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

#ifndef TORCHCONV_CUDA_EMULATION
using DeviceGuard = c10::cuda::CUDAGuard;

// Launches kernel<<<blocks, threads, 0, current stream>>>(args...) and raises
// if the launch failed.
template <typename... KernelArgs, typename... Args>
void launch_blocks(void (*kernel)(KernelArgs...), unsigned int blocks, unsigned int threads, Args&&... args) {
  kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

// A grid-stride kernel over `count` elements: enough blocks of kThreads.
// Nothing is launched for zero elements.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), int64_t count, Args&&... args) {
  if (count <= 0) return;
  launch_blocks(kernel, blocks_for(count), kThreads, std::forward<Args>(args)...);
}

// Sizes and strides (in elements) of a 4-d tensor, passed by value to kernels
// so that one kernel reads or writes both contiguous and channels_last memory.
struct Layout4d {
  int64_t size[4];
  int64_t stride[4];

  __host__ __device__ int64_t offset(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return n * stride[0] + c * stride[1] + h * stride[2] + w * stride[3];
  }
};

inline Layout4d layout_of(const at::Tensor& t) {
  Layout4d l;
  for (int d = 0; d < 4; ++d) {
    l.size[d] = t.size(d);
    l.stride[d] = t.stride(d);
  }
  return l;
}

// Splits a flat index over the elements of an (N, C, H, W) tensor into its
// coordinates, in the order its memory is laid out: threads with consecutive
// indices then touch consecutive addresses (coalesced access) in both
// layouts.
struct Coords {
  int64_t n, c, h, w;
};

__host__ __device__ inline Coords split_index(int64_t index, const Layout4d& l, bool channels_last) {
  Coords at;
  if (channels_last) {
    at.c = index % l.size[1];
    index /= l.size[1];
    at.w = index % l.size[3];
    index /= l.size[3];
    at.h = index % l.size[2];
    at.n = index / l.size[2];
  } else {
    at.w = index % l.size[3];
    index /= l.size[3];
    at.h = index % l.size[2];
    index /= l.size[2];
    at.c = index % l.size[1];
    at.n = index / l.size[1];
  }
  return at;
}

__host__ __device__ inline int64_t numel_of(const Layout4d& l) { return l.size[0] * l.size[1] * l.size[2] * l.size[3]; }

}  // namespace cuda
}  // namespace torchconv
