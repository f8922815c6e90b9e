"""conv_transpose2d at stride 1 as conv2d's NCHW GEMM kernel with the weight
flipped (csrc/cpu/conv/choice.h, runs_as_flipped_conv2d), against torch.

A stride-1 transposed convolution without output padding is conv2d of its
input with the weight's taps flipped and its channel axes swapped per
group, padded by dilation * (kernel - 1) - padding. Contiguous layers the
tiled kernel does not take (result channels not a multiple of 32, or a
weight past its bound) run so from 384 input pixels (batch x plane) up, on
input planes of at most 64 pixels with 24 result channels per group or
more, and on larger planes with 256 or more.
The shapes here fall under the rule: 7 x 7 planes (a ResNet stage's input
gradient), a 14 x 14 plane of 264 result channels, groups, dilation with a padding that leaves the conv2d one row,
no padding (the output grows by the window), a 5 x 5 window, a 3 x 1
window with padding along one axis; and around it, a padding past the
window's reach and an output padding (the transposed GEMM kernel), each with
its gradients, in float64 against torch's float64 and in the other dtypes
against torch's result rounded to them, and a conv2d whose input gradient
runs this way.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS

from cpp_kernel_marks import CPP_KERNEL_MARKS
from test_cpp_tiled import _check, _conv_t_inputs, _ids

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, image size, kernel, padding, dilation, groups, output_padding)
FLIPPED_SHAPES = [
    (8, 48, 24, (7, 7), 3, 1, 1, 1, 0),
    (8, 32, 48, (7, 7), 3, 1, 1, 2, 0),  # groups
    (8, 16, 24, (8, 7), 3, 2, 2, 1, 0),  # dilation 2, padding 2: the conv2d pads by 2
    (12, 16, 24, (6, 6), 3, 0, 1, 1, 0),  # no padding: the conv2d pads by 2
    (2, 16, 264, (14, 14), 3, 1, 1, 1, 0),  # a larger plane, 264 result channels (outside the tiled rule)
    (8, 16, 24, (7, 7), 5, 2, 1, 1, 0),  # 5x5
    (8, 16, 24, (7, 9), (3, 1), (1, 0), 1, 1, 0),  # 3x1, padding along one axis
    (8, 16, 24, (7, 7), 3, 3, 1, 1, 0),  # padding past the reach: the transposed GEMM kernel
    (8, 16, 24, (7, 7), 3, 1, 2, 1, 1),  # output padding: the transposed GEMM kernel
]


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", FLIPPED_SHAPES, ids=_ids)
def test_conv_transpose2d_as_flipped_conv2d(threads, shape, memory_format):
    tensors, kwargs = _conv_t_inputs(shape)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, torch.float64, memory_format)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", FLIPPED_SHAPES[:3], ids=_ids)
def test_flipped_in_other_dtypes(shape, dtype):
    tensors, kwargs = _conv_t_inputs(shape)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, dtype, torch.contiguous_format)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_conv2d_input_gradient_as_flipped_conv2d(dtype):
    """A stride-1 conv2d of 24 input channels: its input gradient is a
    transposed convolution to 24 channels, which runs as the flipped conv2d."""
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(8, 24, 7, 7, generator=gen), torch.randn(40, 24, 3, 3, generator=gen),
               torch.randn(40, generator=gen))
    _check(torchconv.conv2d, F.conv2d, tensors, dict(padding=1), dtype, torch.contiguous_format)
    _check(torchconv.conv2d, F.conv2d, tensors, dict(padding=1), dtype, torch.contiguous_format, expanded_grad=True)
