// A strided transposed convolution as stride-1 ones on the tiled kernel
// (direct_tiled.h): its output split into stride x stride phases.
//
// Along one axis, output pixel Y of conv_transpose2d at stride S and
// padding P sums the taps i and input pixels y with y * S - P + i = Y
// (shape.h). Write Y = S * q + r (0 <= r < S): the taps that reach it are
// i = a + S * m with a = (r + P) mod S, and they read y = q + c - m with
// c = (r + P) div S. So the output's phase r (every S-th pixel from r) is
// a stride-1 transposed convolution of the same input with the sub-kernel
// of taps a, a + S, ... and padding c, over ceil((out - r) / S) pixels.
// Over both axes, each of the S * S phases sums a quarter (at S = 2) of
// the taps, no zero of a column matrix is multiplied, and the tiles'
// bfloat16 pair step, compiled for stride 1, runs strided layers too.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../../memory_format.h"
#include "direct_tiled.h"
#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// One phase: its stride-1 transposed convolution (the plane side is the
// phase's pixels) and its padded input, its sub-kernel's first taps, and
// where its pixels lie in the whole output.
struct TransposedPhase {
  ConvShape shape;
  PaddedPlanes planes;
  int64_t first_tap_h, first_tap_w;
  ResultGrid grid;
};

// One axis of a phase: output pixels r, r + S, ... of `size`.
struct PhaseAxis {
  int64_t first_tap, taps, pad, pixels;
};

inline PhaseAxis phase_axis(int64_t r, int64_t size, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t a = (r + pad) % stride;
  return PhaseAxis{a, ceil_div(kernel - a, stride), (r + pad) / stride, ceil_div(size - r, stride)};
}

// The phases of conv_transpose2d of shape s, or none where s does not split
// into them: a stride of 2 or more along both axes, no dilation, kernels at
// least as long as the stride (every phase has taps) and paddings each
// phase's padded input can hold (pad <= taps - 1 per phase, the padded rows
// as wide as the phase's output's reach).
inline std::vector<TransposedPhase> transposed_phases(const ConvShape& s) {
  const Window& w = s.window;
  std::vector<TransposedPhase> phases;
  if (w.stride_h < 2 || w.stride_w < 2 || w.dilation_h != 1 || w.dilation_w != 1) return phases;
  if (w.kernel_h < w.stride_h || w.kernel_w < w.stride_w || s.plane_h < w.stride_h || s.plane_w < w.stride_w) {
    return phases;
  }
  for (int64_t r = 0; r < w.stride_h; ++r) {
    const PhaseAxis rows = phase_axis(r, s.plane_h, w.kernel_h, w.stride_h, w.pad_h);
    for (int64_t rb = 0; rb < w.stride_w; ++rb) {
      const PhaseAxis cols = phase_axis(rb, s.plane_w, w.kernel_w, w.stride_w, w.pad_w);
      const Window window{rows.taps, cols.taps, 1, 1, rows.pad, cols.pad, 1, 1};
      const ConvShape phase{s.batch,          s.groups,         s.plane_channels, rows.pixels, cols.pixels,
                            s.windows_channels, s.windows_h, s.windows_w, window};
      const PaddedPlanes planes = conv_transpose2d_planes(phase);
      if (planes.top < 0 || planes.left < 0 || planes.padded_w < planes.left + planes.w) return {};
      const ResultGrid grid{s.plane_size(), r * s.plane_w + rb, w.stride_h * s.plane_w, w.stride_w};
      phases.push_back(TransposedPhase{phase, planes, rows.first_tap, cols.first_tap, grid});
    }
  }
  return phases;
}

// conv_transpose2d of shape s by its phases (transposed_phases(s), each of
// which uses the tiled kernel: uses_tiled_phases holds), its result
// `out_sizes`, channels_last when `to_channels_last`; bias in the
// accumulation type or undefined.
inline at::Tensor tiled_phases_conv_transpose2d(const ConvShape& s, const at::Tensor& input, const at::Tensor& weight,
                                                const at::Tensor& bias, at::IntArrayRef out_sizes,
                                                bool to_channels_last) {
  at::Tensor out = to_channels_last ? empty_channels_last(out_sizes, input) : at::empty(out_sizes, input.options());
  const Window& w = s.window;
  std::vector<TiledPlan> plans;
  for (const TransposedPhase& phase : transposed_phases(s)) {
    at::Tensor sub_kernel = weight.slice(2, phase.first_tap_h, w.kernel_h, w.stride_h)
                                .slice(3, phase.first_tap_w, w.kernel_w, w.stride_w)
                                .contiguous();
    plans.push_back(TiledPlan{phase.planes, phase.grid, std::move(sub_kernel)});
  }
  tiled_convolution_into<true>(s, plans, input, bias, to_channels_last, out);
  return out;
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
