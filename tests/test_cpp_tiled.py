"""The C++ CPU tiled direct kernel (csrc/cpu/conv/direct_tiled.h), against torch.

conv2d at stride 1 or 2 and conv_transpose2d at stride 1 with whole tiles of result channels
(a multiple of 32) and a moderate reduction run without im2col: a tile of
result channels x consecutive pixels is summed in registers straight from
zero-padded copies of the source planes (``uses_tiled_kernel`` in that file
has the rule). The shapes here fall under the rule: rows that a tile
straddles, a last tile past the plane's end, 5x5 and 3x1 windows,
dilation, asymmetric padding, groups, stride 2, transposed convolutions with no
padding, with output_padding and with groups, in both memory formats
(channels_last shapes have wide rows and at most 128 channels, as the rule
asks), each with its gradients (a conv2d's input gradient of 32 channels is
a tiled transposed convolution), in float64 against torch's float64 and in
the other dtypes against torch's result rounded to them.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS, assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, image size, kernel, padding, dilation, groups)
CONV_SHAPES = [
    (2, 8, 32, (14, 13), 3, 1, 1, 1),  # 13-pixel rows: tiles straddle two rows; last tile partial
    (3, 16, 64, (12, 30), 5, 2, 1, 1),  # 5x5
    (2, 8, 32, (16, 29), 3, 2, 2, 1),  # dilation 2
    (2, 16, 64, (9, 28), 3, (1, 0), 1, 1),  # padding along one axis only
    (2, 16, 64, (10, 28), 3, 1, 1, 2),  # groups
    (2, 32, 32, (12, 28), (3, 1), (1, 0), 1, 1),  # a 3x1 window; 32-channel input gradient
    (1, 32, 32, (13, 30), 3, 1, 1, 1),  # batch 1
    (1, 128, 96, (6, 28), 3, 1, 1, 1),  # the most channels the channels_last rule takes
    (1, 64, 32, (6, 28), 5, 2, 1, 1),  # a 5x5 window over 64 channels: a reduction of 1600
    (2, 18, 64, (12, 30), 3, 1, 1, 2),  # an odd number of input channels per group (a bfloat16 pair short of one)
]
# conv2d at stride 2, the same fields
STRIDED_SHAPES = [
    (2, 8, 32, (14, 27), 3, 1, 1, 1),  # 14-pixel rows: tiles straddle two rows
    (2, 16, 32, (12, 30), 4, 1, 1, 1),  # 4x4 (a k4 s2 transposed convolution's input gradient)
    (2, 8, 32, (16, 33), 3, 2, 2, 1),  # dilation 2
    (2, 16, 64, (10, 28), 3, 1, 1, 2),  # groups
    (2, 9, 32, (11, 25), 5, 2, 1, 1),  # 5x5, an odd number of input channels
    (1, 16, 32, (8, 58), 3, 1, 1, 1),  # rows wide enough for the channels_last rule
]
# conv_transpose2d: (batch, in channels, out channels, image size, kernel, padding, dilation, groups, output_padding)
CONV_T_SHAPES = [
    (2, 16, 32, (12, 28), 3, 1, 1, 1, 0),
    (2, 8, 64, (6, 26), 3, 0, 1, 1, 0),  # no padding: the output grows by the kernel
    (2, 16, 32, (10, 26), 3, 1, 2, 1, 1),  # dilation and output_padding
    (2, 16, 64, (8, 28), 3, 1, 1, 2, 0),  # groups
]


def _ids(shape):
    return "-".join(str(v).replace(" ", "") for v in shape)


def _check(op, torch_op, tensors, kwargs, dtype, memory_format, expanded_grad=False):
    leaves = [t.to(dtype).contiguous(memory_format=memory_format if t.dim() == 4 else torch.contiguous_format)
              .requires_grad_() for t in tensors]
    with torchconv.backends.use("cpp"):
        y = op(*leaves, **kwargs)
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        # y.sum()'s gradient is an expanded tensor (all strides 0), read in place.
        grads = torch.autograd.grad(y.sum() if expanded_grad else (y * probe).sum(), leaves)
    wide = [t.detach().double().contiguous(memory_format=memory_format if t.dim() == 4 else torch.contiguous_format)
            .requires_grad_() for t in tensors]
    expected = torch_op(*wide, **kwargs)
    expected_grads = torch.autograd.grad(expected.sum() if expanded_grad else (expected * probe.double()).sum(), wide)
    for what, got, want in zip(("output", "grad input", "grad weight", "grad bias"), (y, *grads), (expected, *expected_grads)):
        assert_close_to_torch(got, want.to(dtype), check_memory_format=False, check_strides=False, msg=what)
        if what in ("output", "grad input"):
            assert got.stride() == want.stride(), (what, got.stride(), want.stride())


def _conv_inputs(shape):
    n, cin, cout, size, k, p, d, g = shape
    kernel = k if isinstance(k, tuple) else (k, k)
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(n, cin, *size, generator=gen), torch.randn(cout, cin // g, *kernel, generator=gen),
               torch.randn(cout, generator=gen))
    return tensors, dict(padding=p, dilation=d, groups=g)


def _conv_t_inputs(shape):
    n, cin, cout, size, k, p, d, g, op = shape
    kernel = k if isinstance(k, tuple) else (k, k)
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(n, cin, *size, generator=gen), torch.randn(cin, cout // g, *kernel, generator=gen),
               torch.randn(cout, generator=gen))
    return tensors, dict(padding=p, dilation=d, groups=g, output_padding=op)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_ids)
def test_conv2d_tiled(threads, shape, memory_format):
    tensors, kwargs = _conv_inputs(shape)
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, torch.float64, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", STRIDED_SHAPES, ids=_ids)
def test_conv2d_tiled_at_stride_2(threads, shape, memory_format):
    tensors, kwargs = _conv_inputs(shape)
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs | dict(stride=2), torch.float64, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("shape", CONV_T_SHAPES, ids=_ids)
def test_conv_transpose2d_tiled(threads, shape, memory_format):
    tensors, kwargs = _conv_t_inputs(shape)
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, torch.float64, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_tiled_in_other_dtypes(dtype, memory_format):
    tensors, kwargs = _conv_inputs(CONV_SHAPES[1])
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, dtype, memory_format)
    tensors, kwargs = _conv_inputs(CONV_SHAPES[-1])
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, dtype, memory_format)
    for shape in CONV_SHAPES[-3:-1]:  # the most channels in channels_last, a reduction of 1600
        tensors, kwargs = _conv_inputs(shape)
        _check(torchconv.conv2d, F.conv2d, tensors, kwargs, dtype, memory_format)
    tensors, kwargs = _conv_t_inputs(CONV_T_SHAPES[2])
    _check(torchconv.conv_transpose2d, F.conv_transpose2d, tensors, kwargs, dtype, memory_format)
    tensors, kwargs = _conv_inputs(STRIDED_SHAPES[1])
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs | dict(stride=2), dtype, memory_format)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
def test_expanded_gradient_of_a_sum(memory_format):
    """A 32-channel conv2d's input gradient is a tiled transposed convolution
    of y.sum()'s gradient, an expanded tensor the kernel reads in place."""
    tensors, kwargs = _conv_inputs(CONV_SHAPES[5])
    _check(torchconv.conv2d, F.conv2d, tensors, kwargs, torch.float64, memory_format, expanded_grad=True)
