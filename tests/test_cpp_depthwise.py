"""The C++ CPU kernels of depthwise convolutions (csrc/cpu/conv/direct.h, "unit
stride: wide windows" and "any stride: rows of taps"; depthwise_nhwc.h), against torch.

A convolution whose groups each read one image channel runs loops of its
own instead of im2col + GEMM: at stride 1 over zero-padded planes with
"wide" grids (one multiply-add or dot product per tap over a whole plane),
at other strides row by row. The shapes here cover both, with channel
multipliers, dilation, padding wider than the kernel's reach, rows shorter
than the vector lanes, transposed convolutions with output_padding, and the
half dtypes (which widen into float32 planes); channels_last operands run
kernels of their own ("depthwise, channels_last") for the true depthwise
case (one windows-side channel per group) and come out channels_last, as torch's.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS, assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (channels, multiplier, kernel, image size, stride, dilation, padding)
SHAPES = [
    (3, 1, (3, 3), (7, 7), (1, 1), (1, 1), (1, 1)),  # MobileNet's late layers
    (4, 1, (3, 3), (4, 4), (1, 1), (1, 1), (1, 1)),  # rows shorter than the lanes
    (2, 2, (3, 3), (9, 11), (1, 1), (1, 1), (1, 1)),  # channel multiplier
    (3, 1, (5, 3), (12, 17), (1, 1), (2, 1), (3, 0)),  # dilation, uneven padding
    (2, 1, (1, 4), (5, 30), (1, 1), (1, 2), (0, 4)),  # padding beyond the kernel's reach
    (2, 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),  # one pixel
    (3, 1, (3, 3), (13, 10), (2, 2), (1, 1), (1, 1)),  # strided: rows of taps
    (2, 2, (3, 2), (11, 9), (1, 2), (1, 1), (1, 0)),  # stride in one direction only
    # Enough channels for whole vectors and rows for whole tiles of pixels
    # (channels_last: depthwise_nhwc.h's tiles, a row's inner pixels
    # several at a time, its ends and the last channels one at a time):
    (21, 1, (3, 3), (6, 19), (1, 1), (1, 1), (1, 1)),  # a 3-tap row tile, channels past the last vector
    (40, 1, (5, 5), (9, 21), (1, 1), (1, 1), (2, 2)),  # a 5-tap row tile
    (32, 1, (3, 3), (8, 23), (1, 1), (2, 2), (2, 2)),  # dilated: taps one by one
    (24, 1, (3, 3), (9, 30), (2, 2), (1, 1), (1, 1)),  # strided
    (16, 1, (7, 7), (9, 26), (1, 1), (1, 1), (3, 3)),  # a 7-tap row: taps one by one
]


def _ids(shape):
    c, m, k, size, s, d, p = shape
    return f"c{c}x{m}-k{k[0]}{k[1]}-{size[0]}x{size[1]}-s{s[0]}{s[1]}-d{d[0]}{d[1]}-p{p[0]}{p[1]}"


def _leaf(shape, dtype, memory_format):
    return torch.randn(shape, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_()


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_conv2d_depthwise(shape, dtype, memory_format):
    channels, multiplier, kernel, size, stride, dilation, padding = shape
    torch.manual_seed(0)
    x = _leaf((2, channels, *size), dtype, memory_format)
    w = _leaf((channels * multiplier, 1, *kernel), dtype, memory_format)
    b = torch.randn(channels * multiplier, dtype=dtype, requires_grad=True)
    args = (stride, padding, dilation, channels)
    with torchconv.backends.use("cpp"):
        y = torchconv.conv2d(x, w, b, *args)
        probe = torch.randn(y.shape, dtype=dtype)
        grads = torch.autograd.grad((y * probe).sum(), (x, w, b))
    wide = [t.detach().double().requires_grad_() for t in (x, w, b)]
    expected = F.conv2d(*wide, *args)
    expected_grads = torch.autograd.grad((expected * probe.double()).sum(), wide)
    # Values against torch's float64 result rounded to the dtype; the
    # output's strides against torch's (the weight gradient's memory format
    # of a 1x1 kernel is ambiguous, see test_layouts).
    for got, want in zip((y, *grads), (expected, *expected_grads)):
        assert_close_to_torch(got, want.to(dtype), check_memory_format=False, check_strides=False)
    assert y.stride() == expected.stride()


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("output_padding", [0, 1])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_conv_transpose2d_depthwise(shape, output_padding, memory_format):
    channels, multiplier, kernel, size, stride, dilation, padding = shape
    if any(output_padding >= max(s, d) for s, d in zip(stride, dilation)):
        pytest.skip("output_padding must be smaller than stride or dilation")
    torch.manual_seed(0)
    x = _leaf((2, channels, *size), torch.float64, memory_format)
    w = _leaf((channels, multiplier, *kernel), torch.float64, memory_format)
    b = torch.randn(channels * multiplier, dtype=torch.float64, requires_grad=True)
    args = (stride, padding, output_padding, channels, dilation)
    try:
        expected = F.conv_transpose2d(x, w, b, *args)
    except RuntimeError:
        pytest.skip("no output for this shape")
    probe = torch.randn(expected.shape, dtype=torch.float64)
    expected_grads = torch.autograd.grad((expected * probe).sum(), (x, w, b))
    with torchconv.backends.use("cpp"):
        y = torchconv.conv_transpose2d(x, w, b, *args)
        grads = torch.autograd.grad((y * probe).sum(), (x, w, b))
    for got, want in zip((y, *grads), (expected, *expected_grads)):
        assert_close_to_torch(got, want, check_memory_format=False, check_strides=False)
    assert y.stride() == expected.stride()


@pytest.mark.parametrize(
    "channels, width, memory_format",
    [(4, 5, torch.contiguous_format), (21, 13, torch.channels_last)],
    ids=["4x6x5", "21x6x13-channels_last"],
)
def test_depthwise_paths_agree_with_torch_on_a_grid_of_small_shapes(channels, width, memory_format):
    """Every combination of small kernel, stride, dilation and padding on a
    6-row image (float64, forward and all gradients)."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, 6, width, dtype=torch.float64).contiguous(memory_format=memory_format)
    x.requires_grad_()
    for kh, kw, s, d, ph, pw in itertools.product((1, 2, 3), (1, 3), (1, 2), (1, 2), (0, 1, 2), (0, 2)):
        w = torch.randn(channels, 1, kh, kw, dtype=torch.float64).contiguous(memory_format=memory_format)
        w.requires_grad_()
        if 6 + 2 * ph < d * (kh - 1) + 1 or width + 2 * pw < d * (kw - 1) + 1:
            continue
        args = (s, (ph, pw), d, channels)
        expected = F.conv2d(x, w, None, *args)
        probe = torch.randn(expected.shape, dtype=torch.float64)
        with torchconv.backends.use("cpp"):
            y = torchconv.conv2d(x, w, None, *args)
            grads = torch.autograd.grad((y * probe).sum(), (x, w))
        expected_grads = torch.autograd.grad((expected * probe).sum(), (x, w))
        for got, want in zip((y, *grads), (expected, *expected_grads)):
            assert_close_to_torch(got, want, msg=f"{(kh, kw, s, d, ph, pw)}")
