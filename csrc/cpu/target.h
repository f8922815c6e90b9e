// Regions of a file compiled for an instruction set the build does not
// assume: the kernel variants of a capability level above the build's
// baseline (capability.h chooses, at run time, whether they run).
//
//   TORCHCONV_TARGET_BEGIN(TORCHCONV_TARGET_AVX512)
//   ... functions compiled for AVX-512 ...
//   TORCHCONV_TARGET_END
//
// No header may be included between BEGIN and END: an inline function of a
// header would get a definition for that instruction set, which the linker
// may then pick for callers on CPUs without it. Include headers first.
#pragma once

#define TORCHCONV_TARGET_AVX512 "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
#define TORCHCONV_TARGET_AVX512_BF16 "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma"

#define TORCHCONV_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define TORCHCONV_TARGET_BEGIN(isa) \
  TORCHCONV_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define TORCHCONV_TARGET_END TORCHCONV_PRAGMA(clang attribute pop)
#else
#define TORCHCONV_TARGET_BEGIN(isa) TORCHCONV_PRAGMA(GCC push_options) TORCHCONV_PRAGMA(GCC target(isa))
#define TORCHCONV_TARGET_END TORCHCONV_PRAGMA(GCC pop_options)
#endif
