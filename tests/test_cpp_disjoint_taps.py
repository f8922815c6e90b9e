"""Transposed convolutions whose window taps never meet on a pixel (a 1x1 or
2x2 window at stride 2: a ResNet downsampling layer's input gradient, a
U-Net's up-convolution), against torch.

Their half outputs take each value rounded once straight from the GEMM's
columns, plus the bias, with every pixel no window reaches its bias alone
(csrc/cpu/im2col.h col2im_nhwc_disjoint), instead of a float32 copy of the
whole output; the shapes here have holes between the windows, output
padding, padding that crops, groups, and no bias, in both memory formats.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import MEMORY_FORMATS, assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, image size, kernel, stride, padding, output_padding, groups, bias)
SHAPES = [
    (2, 16, 8, (5, 7), 1, 2, 0, 1, 1, True),  # every other pixel: its bias alone
    (2, 8, 12, (4, 6), 2, 2, 0, 0, 1, True),  # a U-Net up-convolution
    (1, 8, 6, (5, 5), 2, 3, 1, 2, 2, False),  # holes, cropped edges, groups, no bias
    (3, 4, 4, (3, 9), (1, 2), (2, 3), 0, (1, 0), 1, True),  # different along each axis
]


def _ids(shape):
    return "-".join(str(v).replace(" ", "") for v in shape)


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_disjoint_taps(shape, dtype, memory_format):
    n, cin, cout, size, k, s, p, op, g, has_bias = shape
    kernel = k if isinstance(k, tuple) else (k, k)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, *size, generator=gen).contiguous(memory_format=memory_format)
    w = torch.randn(cin, cout // g, *kernel, generator=gen).contiguous(memory_format=memory_format)
    b = torch.randn(cout, generator=gen) if has_bias else None
    kwargs = dict(stride=s, padding=p, output_padding=op, groups=g)
    expected = F.conv_transpose2d(x.double(), w.double(), None if b is None else b.double(), **kwargs)
    with torchconv.backends.use("cpp"):
        got = torchconv.conv_transpose2d(x.to(dtype), w.to(dtype), None if b is None else b.to(dtype), **kwargs)
    assert_close_to_torch(got, expected.to(dtype), check_memory_format=False, check_strides=False)
    assert got.is_contiguous(memory_format=memory_format)
