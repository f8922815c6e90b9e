// csrc/cuda/conv.cu compiled as C++ for the CPU (TORCHCONV_CUDA_EMULATION).
#include "cuda/conv.cu"
