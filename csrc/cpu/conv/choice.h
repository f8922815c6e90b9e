// Which kernel runs a convolution: one rule for the three computations,
// applied by their entry points (conv2d.cpp, conv_transpose2d.cpp,
// conv2d_weight.cpp).
//
// The computations are im2col/col2im around one GEMM per block and group:
//   conv2d            y[n,g]  = W[g] . im2col(x[n,g])
//   conv_transpose2d  y[n,g]  = col2im(W[g]^T . x[n,g])   (conv2d's grad_input)
//   conv2d_weight     dW[g]   = sum_n dy[n,g] . im2col(x[n,g])^T
// im2col reads the plane side and col2im writes it (shape.h): x of conv2d
// and conv2d_weight, y of conv_transpose2d. A 1x1 kernel with stride 1 and
// no padding needs no im2col: the planes are their own column matrix.
// Columns are built a block of windows rows at a time (blocks.h), and
// (sample, block) tasks run in parallel, so memory stays bounded for any
// batch or plane size and a single sample still uses every thread.
// float16 and bfloat16 sum in float32 (precision.h), and each result is
// rounded once into the output (a transposed convolution accumulates its
// whole output in float32 first, unless its taps never meet on a pixel:
// taps_disjoint, im2col.h); the GEMM's operands are widened to
// float32 as they are copied, or stay bfloat16 where the capability level's
// GEMM multiplies bfloat16 (operands.h, gemm.h).
//
//   shape class                                kernel          why
//   channels_last, depthwise                   DepthwiseNHWC   one multiply-add per tap over a pixel's channels, no copies
//   groups of one plane channel (depthwise,    Direct          each group's GEMM would reduce over kH*kW only, and
//     channel multipliers), either format                      im2col copy the planes kH*kW times
//   conv2d at stride 1 or 2, conv_transpose2d  Tiled           tiles of result channels x pixels summed in registers
//     at stride 1, within uses_tiled_kernel's                  from padded rows: no column matrix, no padding columns
//     bounds (direct_tiled.h)                                  (outside the bounds the GEMM kernels are faster)
//   conv_transpose2d at stride >= 2, split    TiledPhases     each output phase (every stride-th pixel of every
//     into stride-1 phases within the tiled                    stride-th row) sums its own taps in registers, no
//     bounds (uses_tiled_phases)                               column matrix or col2im (direct_tiled_phases.h)
//   conv2d_weight, contiguous, any stride,     Tiled           tiles of gradient channels x weight columns summed
//     within uses_tiled_weight_kernel's bounds                 over the pixels from padded rows: no column matrix
//     (direct_tiled_weight.h)                                  (channels_last: the NHWC GEMM reads it in place)
//   channels_last                              GemmNHWC        NHWC read in place, one GEMM per block of windows rows
//   conv_transpose2d at stride 1, contiguous,  FlippedGemmNCHW conv2d's GEMM kernel on the input with the flipped
//     runs_as_flipped_conv2d                                   weight: im2col of the input instead of col2im
//   everything else                            GemmNCHW        one GEMM per block of windows rows, planes in place
//
// The first match wins. The tiled kernels' bounds come from timing them
// against the GEMM kernels shape by shape (benchmarks/bench_ops.py;
// benchmarks/README.md, "Where the time goes"). Both GEMM kernels fold whole
// samples into one block when a sample has fewer than kFoldPixels window
// positions (blocks.h), so that the GEMM is wide enough.
//
// The GEMM kernels read their operands in their own layout; where the
// Direct and DepthwiseNHWC kernels read another, the entry point converts
// them, and returns the result in torch's memory format (memory_format.h).
#pragma once

#include "../gemm.h"
#include "blocks.h"
#include "depthwise_nhwc.h"
#include "direct.h"
#include "direct_tiled.h"
#include "direct_tiled_phases.h"
#include "direct_tiled_weight.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

enum class ConvKernel { DepthwiseNHWC, Direct, Tiled, TiledPhases, GemmNHWC, FlippedGemmNCHW, GemmNCHW };

enum class Computation { Conv2d, ConvTranspose2d, Conv2dWeight };

// Whether the tiled kernel runs computation `op` of shape s in dtype: with
// bfloat16 pairs where the GEMM would multiply bfloat16 (the same operands
// as with_gemm_operand's), else with the accumulation type's vectors. The
// weight gradient has no bfloat16 step: there the GEMM's bfloat16 products
// are kept.
inline bool uses_tiles(Computation op, const ConvShape& s, bool to_channels_last, at::ScalarType dtype) {
  const bool pairs = dtype == at::kBFloat16 && gemm_reads_bfloat16();
  if (op == Computation::Conv2dWeight) {
    return !pairs && kTiledVectorsBuilt && uses_tiled_weight_kernel(s, to_channels_last, tile_channels<float>());
  }
  if (s.is_pointwise()) return false;
  if (pairs ? pair_step_for(1) == nullptr : !kTiledVectorsBuilt) return false;
  if (pairs && s.window.stride_w != 1) return false;  // the bfloat16 step is compiled for stride 1
  return uses_tiled_kernel(s, op == Computation::ConvTranspose2d, to_channels_last,
                           pairs ? kPairTilePixels : kTilePixels, pairs ? kPairTileChannels : tile_channels<float>());
}

// Whether conv_transpose2d of shape s runs as its stride-1 phases on the
// tiled kernel (direct_tiled_phases.h): where it splits into them, every
// phase's rows hold a tile, its phase of the most taps is one the tiled
// kernel would run, and the GEMM kernels are slower. Timed shape by shape
// against them: contiguous planes over at most kMaxPhasedSources input
// channels per group (the GEMM reduces over those channels alone, and
// col2im adds every tap's column); with float vectors only where every
// phase has as many taps (kernels a multiple of the stride: the 1-tap
// phases of a 3x3 window at stride 2 are slower than the GEMM's share);
// channels_last only with the bfloat16 pair step.
constexpr int64_t kMaxPhasedSources = 64;

inline bool uses_tiled_phases(const ConvShape& s, bool to_channels_last, at::ScalarType dtype) {
  const Window& w = s.window;
  const bool pairs = dtype == at::kBFloat16 && gemm_reads_bfloat16();
  if (to_channels_last ? !pairs : s.windows_group() > kMaxPhasedSources) return false;
  if (!pairs && (w.kernel_h % w.stride_h != 0 || w.kernel_w % w.stride_w != 0)) return false;
  const std::vector<TransposedPhase> phases = transposed_phases(s);
  if (phases.empty()) return false;
  const TransposedPhase* widest = &phases[0];
  for (const TransposedPhase& phase : phases) {
    if (phase.shape.plane_w < (pairs ? kPairTilePixels : kTilePixels)) return false;
    const Window& pw = phase.shape.window;
    if (pw.kernel_h * pw.kernel_w > widest->shape.window.kernel_h * widest->shape.window.kernel_w) widest = &phase;
  }
  return uses_tiles(Computation::ConvTranspose2d, widest->shape, to_channels_last, dtype);
}

// Whether conv_transpose2d of shape s runs as conv2d's NCHW GEMM kernel on
// its input with the weight flipped and its channel axes swapped: at
// stride 1 without output padding, where that conv2d's padding
// (dilation * (kernel - 1) - pad) is not negative and the window is not
// 1x1 (a pointwise transposed convolution needs no col2im). Its columns
// are im2col's of the input (the small-plane permutes included), where the
// transposed GEMM's are scattered back by col2im a windows row at a time.
// Timed against it: faster from kMinFlippedPixels input pixels (batch x
// plane) up, on input planes of at most kMaxFlippedSmallPlane pixels
// (7 x 7: col2im's rows of a few pixels) with at least kMinFlippedChannels
// result channels per group, and on larger planes from
// kMinFlippedWideChannels; with fewer result channels the conv2d's GEMM has
// too few rows (an MNIST first layer's input gradient, 32 -> 1 channel:
// 7x slower), with fewer pixels copying the flipped weight costs more than
// col2im (a ResNet 7x7 stage's input gradient at batch 2: 1.5x slower),
// and the NHWC GEMM's col2im adds whole runs of channels and stays faster.
constexpr int64_t kMinFlippedPixels = 384, kMaxFlippedSmallPlane = 64;
constexpr int64_t kMinFlippedChannels = 24, kMinFlippedWideChannels = 256;

inline bool runs_as_flipped_conv2d(const ConvShape& s) {
  const Window& w = s.window;
  const int64_t reach_h = w.dilation_h * (w.kernel_h - 1), reach_w = w.dilation_w * (w.kernel_w - 1);
  return w.stride_h == 1 && w.stride_w == 1 && w.kernel_h * w.kernel_w > 1 && w.pad_h <= reach_h &&
         w.pad_w <= reach_w && s.plane_h == s.windows_h + reach_h - 2 * w.pad_h &&
         s.plane_w == s.windows_w + reach_w - 2 * w.pad_w && s.batch * s.windows_size() >= kMinFlippedPixels &&
         s.plane_group() >= kMinFlippedChannels &&
         (s.windows_size() <= kMaxFlippedSmallPlane || s.plane_group() >= kMinFlippedWideChannels);
}

// The kernel of computation `op` of shape `s` in dtype, whose result is
// channels_last when `to_channels_last` (the table above).
inline ConvKernel choose_kernel(Computation op, const ConvShape& s, bool to_channels_last, at::ScalarType dtype) {
  if (to_channels_last && is_depthwise(s)) return ConvKernel::DepthwiseNHWC;
  if (uses_direct_loops(s)) return ConvKernel::Direct;
  if (uses_tiles(op, s, to_channels_last, dtype)) return ConvKernel::Tiled;
  if (op == Computation::ConvTranspose2d && uses_tiled_phases(s, to_channels_last, dtype)) {
    return ConvKernel::TiledPhases;
  }
  if (to_channels_last) return ConvKernel::GemmNHWC;
  if (op == Computation::ConvTranspose2d && runs_as_flipped_conv2d(s)) return ConvKernel::FlippedGemmNCHW;
  return ConvKernel::GemmNCHW;
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
