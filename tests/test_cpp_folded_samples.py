"""The C++ CPU convolution kernels with few window positions (csrc/cpu/conv/gemm_nchw.h
and gemm_nhwc.h, ``kFoldPixels`` in csrc/cpu/conv/blocks.h), against torch in
float64.

When one sample's windows side (output of a convolution, input of a transposed one) has
few pixels, the kernels fold several whole samples into one GEMM, in either
memory format (csrc/cpu/conv/gemm_nchw.h puts the samples' columns side by side,
and computes a transposed convolution's narrow blocks of at most 64 positions as the transposed product). The shapes here make blocks of several
samples, with batches that do and do not divide evenly, more blocks than
threads and fewer, 1 to 3 threads, groups, 1x1 kernels (the image is its own
column matrix), strides, dilation, transposed convolutions whose windows
overlap, gradients with any strides (an expanded gradient of a sum), both
memory formats and the half dtypes; and outputs and input gradients keep
torch's strides, size-1 dimensions included.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS, assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS


# (batch, in channels, out channels, image size, kernel, stride, padding, dilation, groups)
CONV_SHAPES = [
    (8, 16, 24, (4, 4), 3, 1, 1, 1, 1),  # ResNet's last stage, scaled down
    (5, 6, 8, (7, 7), 3, 2, 1, 1, 1),  # strided, batch not a multiple of the blocks
    (9, 8, 12, (3, 5), 1, 1, 0, 1, 1),  # pointwise
    (6, 8, 8, (5, 5), 3, 1, 2, 2, 2),  # dilation, groups
    (3, 4, 6, (1, 1), 1, 1, 0, 1, 1),  # one pixel per sample
    (2, 3, 5, (6, 6), 3, 1, 1, 1, 1),  # batch 2
    (20, 4, 8, (5, 5), 3, 1, 1, 1, 1),  # more blocks than threads, a batch they do not divide
    (4, 8, 40, (2, 2), 3, 1, 1, 1, 1),  # more output channels than folded pixels (the weight still the GEMM's A)
    (3, 256, 16, (8, 8), 3, 1, 1, 1, 1),  # one sample's scratch over half the block budget: no folding
]
CONV_T_SHAPES = [
    (8, 16, 12, (3, 3), 4, 2, 1, 1, 1),  # a DCGAN-like upsampling, overlapping windows
    (5, 6, 4, (4, 4), 3, 1, 1, 1, 2),  # groups
    (7, 8, 8, (2, 5), 1, 1, 0, 1, 1),  # pointwise
    (6, 8, 64, (8, 8), 4, 2, 1, 1, 1),  # blocks of over 64 positions: the product untransposed
]


def _ids(shape):
    n, cin, cout, size, k, s, p, d, g = shape
    return f"n{n}-{cin}to{cout}-{size[0]}x{size[1]}-k{k}s{s}p{p}d{d}g{g}"


def _check(op, torch_op, x, w, b, kwargs, dtype, memory_format, expanded_grad):
    leaves = [t.to(dtype).contiguous(memory_format=memory_format if t.dim() == 4 else torch.contiguous_format)
              .requires_grad_() for t in (x, w, b)]
    with torchconv.backends.use("cpp"):
        y = op(*leaves, **kwargs)
        grads = torch.autograd.grad(y.sum() if expanded_grad else (y * _probe(y)).sum(), leaves)
    wide = [t.detach().double().contiguous(memory_format=memory_format if t.dim() == 4 else torch.contiguous_format)
            .requires_grad_() for t in (x, w, b)]
    expected = torch_op(*wide, **kwargs)
    expected_grads = torch.autograd.grad(
        expected.sum() if expanded_grad else (expected * _probe(y).double()).sum(), wide
    )
    for what, got, want in zip(("output", "grad input", "grad weight", "grad bias"), (y, *grads), (expected, *expected_grads)):
        # Values against torch's float64 result rounded to the dtype.
        assert_close_to_torch(got, want.to(dtype), check_memory_format=False, check_strides=False, msg=what)
        if what in ("output", "grad input"):
            # (A 1x1 weight's layout is ambiguous, and torch's float64 and
            # float32 kernels give its gradient different strides.)
            assert got.stride() == want.stride(), (what, got.stride(), want.stride())


def _probe(y):
    torch.manual_seed(1)
    return torch.randn(y.shape).to(y.dtype)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_ids)
def test_conv2d_few_window_positions(threads, shape, memory_format):
    n, cin, cout, size, k, s, p, d, g = shape
    torch.manual_seed(0)
    x, w, b = torch.randn(n, cin, *size), torch.randn(cout, cin // g, k, k), torch.randn(cout)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g)
    _check(torchconv.conv2d, F.conv2d, x, w, b, kwargs, torch.float64, memory_format, expanded_grad=False)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", CONV_T_SHAPES, ids=_ids)
def test_conv_transpose2d_few_window_positions(threads, shape, memory_format):
    n, cin, cout, size, k, s, p, d, g = shape
    torch.manual_seed(0)
    x, w, b = torch.randn(n, cin, *size), torch.randn(cin, cout // g, k, k), torch.randn(cout)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, x, w, b, kwargs, torch.float64, memory_format,
           expanded_grad=False)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_expanded_gradient_of_a_sum(op):
    """``y.sum().backward()`` hands the kernels a gradient with all strides 0."""
    torch.manual_seed(0)
    if op == "conv2d":
        x, w, b = torch.randn(6, 8, 4, 4), torch.randn(12, 8, 3, 3), torch.randn(12)
        ops = (torchconv.conv2d, F.conv2d)
    else:
        x, w, b = torch.randn(6, 8, 3, 3), torch.randn(8, 5, 4, 4), torch.randn(5)
        ops = (torchconv.conv_transpose2d, F.conv_transpose2d)
    for memory_format in MEMORY_FORMATS:
        _check(*ops, x, w, b, dict(stride=2 if op != "conv2d" else 1, padding=1), torch.float64, memory_format,
               expanded_grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_half_and_single_precision(dtype):
    torch.manual_seed(0)
    x, w, b = torch.randn(8, 16, 4, 4), torch.randn(24, 16, 3, 3), torch.randn(24)
    for memory_format in MEMORY_FORMATS:
        _check(torchconv.conv2d, F.conv2d, x, w, b, dict(padding=1), dtype, memory_format, expanded_grad=False)
