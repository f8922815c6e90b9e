"""Strided transposed convolutions as stride-1 phases on the C++ tiled kernel
(csrc/cpu/conv/direct_tiled_phases.h), against torch.

conv_transpose2d at stride S splits its output into S x S phases (every S-th
pixel of every S-th row), each a stride-1 transposed convolution of the same
input with a sub-kernel of the window's taps, written into the output's
interleaved pixels. ``uses_tiled_phases`` (csrc/cpu/conv/choice.h) takes
contiguous planes of at most 64 input channels per group (float vectors:
kernels a multiple of the stride; bfloat16 also 3x3 windows) and bfloat16
channels_last, with whole tiles of result channels (a multiple of 32) and
phase rows at least a tile wide. The shapes here fall under the rule: phase
rows that tiles straddle, stride 3 (nine phases), paddings that give the
phases different offsets, output_padding (phases of unequal sizes), groups,
and a conv2d at stride 2 whose input gradient is such a transposed
convolution, also of y.sum()'s expanded gradient; each in float64 against
torch's float64 and in the other dtypes against torch's result rounded to
them.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS

from cpp_kernel_marks import CPP_KERNEL_MARKS
from test_cpp_tiled import _check, _ids

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, image size, kernel, stride, padding, output_padding, groups)
PHASED_SHAPES = [
    (2, 16, 32, (7, 13), 4, 2, 1, 0, 1),  # 13-pixel phase rows: tiles straddle two rows
    (2, 32, 64, (6, 14), 4, 2, 1, 0, 2),  # groups
    (1, 16, 32, (5, 12), 6, 3, 1, 0, 1),  # stride 3: nine phases
    (2, 16, 32, (8, 14), 4, 2, 2, 0, 1),  # padding 2: every phase reads one row up
    (2, 16, 32, (6, 13), 4, 2, 0, 0, 1),  # no padding
    (2, 16, 32, (6, 13), 4, 2, 1, 1, 1),  # output_padding: the even phases one pixel longer
]
# bfloat16 only: 3x3 windows (phases of 4, 2 and 1 taps), channels_last rows of 28 phase pixels
PAIR_PHASED_SHAPES = [
    (2, 16, 32, (7, 14), 3, 2, 1, 1, 1),
    (2, 16, 32, (4, 28), 4, 2, 1, 0, 1),
    (2, 32, 64, (4, 28), 3, 2, 1, 1, 1),
]
# conv2d at stride 2 whose input gradient is phased: (batch, in, out, image size, kernel, padding)
STRIDED_CONV_SHAPES = [
    (2, 32, 16, (14, 26), 4, 1),
    (2, 64, 32, (8, 28), 4, 1),
]


def _conv_t_inputs(shape):
    n, cin, cout, size, k, s, p, op, g = shape
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(n, cin, *size, generator=gen), torch.randn(cin, cout // g, k, k, generator=gen),
               torch.randn(cout, generator=gen))
    return tensors, dict(stride=s, padding=p, output_padding=op, groups=g)


def _conv_inputs(shape):
    n, cin, cout, size, k, p = shape
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(n, cin, *size, generator=gen), torch.randn(cout, cin, k, k, generator=gen),
               torch.randn(cout, generator=gen))
    return tensors, dict(stride=2, padding=p)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", PHASED_SHAPES, ids=_ids)
def test_conv_transpose2d_phases(threads, shape, memory_format):
    tensors, kwargs = _conv_t_inputs(shape)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, torch.float64, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", PHASED_SHAPES + PAIR_PHASED_SHAPES, ids=_ids)
def test_phases_in_other_dtypes(shape, dtype, memory_format):
    tensors, kwargs = _conv_t_inputs(shape)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, dtype, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", STRIDED_CONV_SHAPES, ids=_ids)
def test_strided_conv2d_input_gradient(shape, dtype, memory_format):
    tensors, kwargs = _conv_inputs(shape)
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, dtype, memory_format)
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, dtype, memory_format, expanded_grad=True)
