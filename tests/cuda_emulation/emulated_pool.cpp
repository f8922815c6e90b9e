// csrc/cuda/pool.cu compiled as C++ for the CPU (TORCHCONV_CUDA_EMULATION).
#include "cuda/pool.cu"
