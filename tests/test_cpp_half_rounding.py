"""bfloat16 and float16 values widened and rounded by the CPU kernels
exactly as torch rounds them (csrc/cpu/precision.h's convert, vectorised
where the build has AVX-512): round to nearest even, ties included,
denormals kept, a NaN a NaN (its payload bits are not compared: torch's own
kernels differ in them), infinities and overflow to infinity.

A 1x1 depthwise convolution computes each output as one float32 product,
input x weight, rounded once into the half dtype (the direct loops widen
the input plane and round the output plane), so it shows the conversions
alone.
"""

from __future__ import annotations

import pytest
import torch

import torchconv

pytestmark = pytest.mark.skipif(not torchconv.backends.cpp.is_available(), reason="the C++ extension is not built")


def _awkward_values(count: int, dtype: torch.dtype) -> torch.Tensor:
    """Half values whose products with the weights below hit every rounding case."""
    gen = torch.Generator().manual_seed(0)
    info = torch.finfo(dtype)
    values = [
        torch.randn(count, generator=gen),
        torch.randn(count, generator=gen) * info.tiny,  # products in the denormal range
        torch.randn(count, generator=gen) * info.max / 2,  # products that overflow
        torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1.0, -1.0, 3.0]),
        torch.tensor([info.smallest_normal / 4, -info.smallest_normal / 3]),
    ]
    return torch.cat(values).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width", [1, 15, 16, 17, 40])
def test_half_products_round_as_torch(width, dtype):
    x = _awkward_values(64, dtype)
    channels = x.numel() // width
    x = x[: channels * width].view(1, channels, 1, width)
    # weights with many mantissa bits make most products fall between half values
    gen = torch.Generator().manual_seed(1)
    w = (torch.rand(channels, 1, 1, 1, generator=gen) * 3 + 0.1).to(dtype)
    with torchconv.backends.use("cpp"):
        ours = torchconv.conv2d(x, w, groups=channels)
    # one float32 product, rounded once; + 0.0 as the kernel's sum starts from zero (-0.0 becomes 0.0)
    expected = (x.float() * w.float().view(1, channels, 1, 1) + 0.0).to(dtype)
    assert ours.dtype == dtype
    assert torch.equal(ours.view(torch.int16)[~expected.isnan()], expected.view(torch.int16)[~expected.isnan()])
    assert torch.equal(ours.isnan(), expected.isnan())
