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
#include <initializer_list>
#include <limits>
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

// for (index_t i = first index of this thread; i < n; i += all threads)
//
// Kernels are instantiated for two index types: int32_t when every index
// they decompose fits (see fits_int32), int64_t otherwise. Dividing by a
// runtime value is a long instruction sequence on a GPU, about three times
// longer in 64 bits; the element offsets into tensors stay 64-bit
// (Layout4d::offset), which costs only multiply-adds.
#define TORCHCONV_KERNEL_LOOP(index_t, i, n)                                              \
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<index_t>(blockDim.x) * gridDim.x)

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

// Whether a kernel may index in 32 bits: each extent (its element count and
// every size or product of sizes it decomposes) stays below 2^31 with room
// for the last grid-stride step, which adds up to a whole grid of threads
// before the loop ends.
inline bool fits_int32(std::initializer_list<int64_t> extents) {
#ifdef TORCHCONV_FORCE_INT64_INDEX
  return false;  // tests: the 64-bit instances on small tensors (see tests/cuda_emulation)
#endif
  const int64_t limit = std::numeric_limits<int32_t>::max() - int64_t(65535) * kThreads;
  for (const int64_t extent : extents) {
    if (extent > limit) return false;
  }
  return true;
}

// launch_blocks() of the int32_t or the int64_t instance of a kernel.
template <typename... Args32, typename... Args64, typename... Args>
void launch_blocks_indexed(void (*kernel32)(Args32...), void (*kernel64)(Args64...), bool int32_fits,
                           unsigned int blocks, unsigned int threads, Args&&... args) {
  if (int32_fits) {
    launch_blocks(kernel32, blocks, threads, std::forward<Args>(args)...);
  } else {
    launch_blocks(kernel64, blocks, threads, std::forward<Args>(args)...);
  }
}

// A grid-stride kernel over `count` elements, in its int32_t or int64_t
// instance: enough blocks of kThreads; nothing is launched for no elements.
template <typename... Args32, typename... Args64, typename... Args>
void launch_indexed(void (*kernel32)(Args32...), void (*kernel64)(Args64...), bool int32_fits, int64_t count,
                    Args&&... args) {
  if (count <= 0) return;
  launch_blocks_indexed(kernel32, kernel64, int32_fits, blocks_for(count), kThreads, std::forward<Args>(args)...);
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
template <typename index_t>
struct Coords {
  index_t n, c, h, w;
};

template <typename index_t>
__host__ __device__ inline Coords<index_t> split_index(index_t index, const Layout4d& l, bool channels_last) {
  const index_t channels = static_cast<index_t>(l.size[1]), height = static_cast<index_t>(l.size[2]),
                width = static_cast<index_t>(l.size[3]);
  Coords<index_t> at;
  if (channels_last) {
    at.c = index % channels;
    index /= channels;
    at.w = index % width;
    index /= width;
    at.h = index % height;
    at.n = index / height;
  } else {
    at.w = index % width;
    index /= width;
    at.h = index % height;
    index /= height;
    at.c = index % channels;
    at.n = index / channels;
  }
  return at;
}

__host__ __device__ inline int64_t numel_of(const Layout4d& l) { return l.size[0] * l.size[1] * l.size[2] * l.size[3]; }

}  // namespace cuda
}  // namespace torchconv
