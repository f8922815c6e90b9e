// The CPU capability levels of the kernels: which variant of each kernel
// family runs, chosen in this one place.
//
//   default      torch's BLAS for the GEMMs; nothing of this project's that
//                needs more than the build's instruction set
//   avx2         the same kernels as default (torch's BLAS picks its own
//                AVX2 code): the level exists so that the names match
//                ATEN_CPU_CAPABILITY's
//   avx512       this project's AVX-512 GEMM (gemm_avx512.cpp) for float32
//                and float64, and for the half dtypes' widened operands
//   avx512_bf16  as avx512, and bfloat16 convolutions multiply with the
//                CPU's bfloat16 dot products (gemm_avx512_bf16.cpp)
//
// The level in use is the highest the CPU's flags allow, lowered by the
// environment variable TORCHCONV_CPU_CAPABILITY (the names above, as
// ATEN_CPU_CAPABILITY for torch's own kernels), read once, at the first
// kernel call. set_capability() changes it for the whole process, so that one
// machine can test and time every level it can run (tests/conftest.py's
// `capability` fixture, benchmarks' --capability).
//
// The loops the compiler vectorises (im2col, pooling, the direct kernels)
// use the instruction set the extension was built for (-march=native):
// the levels choose between hand-written kernel variants, not between
// builds.
#pragma once

#include <string>
#include <vector>

namespace torchconv {
namespace cpu {

enum class Capability : int { Default = 0, AVX2 = 1, AVX512 = 2, AVX512_BF16 = 3 };

// The highest level this CPU's flags allow.
Capability cpu_capability();

// The level in use (see above).
Capability capability();

// Sets the level in use; a level above cpu_capability() is an error.
void set_capability(Capability level);

const char* capability_name(Capability level);

// The level named `name` (one of the names above); an error for any other.
Capability parse_capability(const std::string& name);

// The names of the levels this CPU can run, lowest first.
std::vector<std::string> supported_capabilities();

}  // namespace cpu
}  // namespace torchconv
