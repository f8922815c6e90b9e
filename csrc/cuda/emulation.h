// Stand-ins that let the CUDA sources compile and run as plain C++ on the
// CPU (TORCHCONV_CUDA_EMULATION; see launch.cuh and tests/cuda_emulation/).
// Every block runs with one thread, blocks one after the other: grid-stride
// loops still visit every element once, a block reduction reduces one
// partial. Used only by tests.
#pragma once

#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __shared__
#define __syncthreads()

namespace torchconv {
namespace cuda {

struct Dim {
  unsigned int x;
};

// The running block and the grid's size, set by launch_blocks; each emulated
// block has one thread.
struct EmulatedGrid {
  Dim block{0};
  Dim size{1};
};

inline EmulatedGrid& emulated_grid() {
  static thread_local EmulatedGrid grid;
  return grid;
}

constexpr Dim threadIdx{0}, blockDim{1};
#define blockIdx (::torchconv::cuda::emulated_grid().block)
#define gridDim (::torchconv::cuda::emulated_grid().size)

// No devices to switch between: a CPU tensor's "device guard" does nothing.
struct DeviceGuard {
  template <typename Device>
  explicit DeviceGuard(const Device&) {}
};

// Runs the kernel once per block, in order, each block one thread: a
// grid-stride loop in block b visits elements b, b + blocks, ... as on a GPU.
template <typename... KernelArgs, typename... Args>
void launch_blocks(void (*kernel)(KernelArgs...), unsigned int blocks, unsigned int /*threads*/, Args&&... args) {
  EmulatedGrid& grid = emulated_grid();
  grid.size.x = blocks;
  for (unsigned int block = 0; block < blocks; ++block) {
    grid.block.x = block;
    kernel(args...);
  }
  grid = EmulatedGrid{};
}

}  // namespace cuda
}  // namespace torchconv
