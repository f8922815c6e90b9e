"""One check the C++ kernel tests share: ``torchconv.conv2d`` on the ``cpp``
backend, forward and both gradients, against torch's float64 result rounded
to the dtype (``torchconv.testing.assert_close_to_torch``); and the same
for a shape given as one tuple, with its test id."""

import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import assert_close_to_torch


def assert_conv2d_matches_float64(x, w, kwargs, dtype):
    """conv2d of ``x`` and ``w`` (converted to ``dtype``) with ``kwargs``: its
    output, input gradient and weight gradient under a random probe of the
    output, each against torch's float64 values rounded to ``dtype``."""
    leaves = [t.to(dtype).requires_grad_() for t in (x, w)]
    with torchconv.backends.use("cpp"):
        y = torchconv.conv2d(*leaves, **kwargs)
        probe = torch.randn(y.shape).to(dtype)
        grads = torch.autograd.grad((y * probe).sum(), leaves)
    wide = [t.detach().double().requires_grad_() for t in leaves]
    expected = F.conv2d(*wide, **kwargs)
    expected_grads = torch.autograd.grad((expected * probe.double()).sum(), wide)
    for what, got, want in zip(("output", "grad input", "grad weight"), (y, *grads), (expected, *expected_grads)):
        assert_close_to_torch(got, want.to(dtype), check_memory_format=False, check_strides=False, msg=what)


def conv2d_shape_id(shape):
    """A test id for ``(batch, in, out, (h, w), (kh, kw), stride, padding, dilation, groups)``."""
    n, cin, cout, size, k, s, p, d, g = shape
    return f"n{n}-{cin}to{cout}-{size[0]}x{size[1]}-k{k[0]}x{k[1]}s{s}p{p}d{d}g{g}"


def assert_conv2d_shape_matches_float64(shape, dtype):
    """assert_conv2d_matches_float64 on random operands of ``shape`` (as conv2d_shape_id reads it)."""
    n, cin, cout, size, k, s, p, d, g = shape
    torch.manual_seed(0)
    x, w = torch.randn(n, cin, *size), torch.randn(cout, cin // g, *k)
    assert_conv2d_matches_float64(x, w, dict(stride=s, padding=p, dilation=d, groups=g), dtype)
