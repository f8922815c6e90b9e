"""torch.library.opcheck on the seven torchconv:: custom ops.

opcheck tests the schema (no undeclared mutation or aliasing), the autograd
registration, the fake kernel against the real one (shapes, strides, dtypes),
and tracing through AOTAutograd with dynamic shapes. Every op runs over a
set of argument sets: each base configuration is crossed with four variants
that cover every pair of {float32, float64} x {requires_grad, not} x
{contiguous, channels_last}; biases and the pooling flags (ceil_mode,
count_include_pad, divisor_override) vary between the base configurations.
"""

from __future__ import annotations

import pytest
import torch

import torchconv  # noqa: F401  (registers the ops)

OPS = torch.ops.torchconv

# (dtype, requires_grad, channels_last): a pairwise covering of the three.
VARIANTS = [
    (torch.float32, True, False),
    (torch.float32, False, True),
    (torch.float64, True, True),
    (torch.float64, False, False),
]


def _variant_id(v):
    dtype, rg, cl = v
    return f"{str(dtype)[6:]}-{'grad' if rg else 'nograd'}-{'cl' if cl else 'contig'}"


class _Make:
    """Tensor factory for one variant."""

    def __init__(self, variant):
        self.dtype, self.requires_grad, self.channels_last = variant

    def __call__(self, *shape, grad=True):
        t = torch.randn(*shape, dtype=self.dtype)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(self.requires_grad and grad)


def _conv_out(size, k, s, p, d):
    return [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in zip(size, k, s, p, d)]


# Each entry: id -> (op, args builder taking a _Make).
CONFIGS = {
    # ---- conv2d(input, weight, bias, stride, padding, dilation, groups)
    "conv2d-bias-stride2": (OPS.conv2d, lambda m: (m(2, 3, 7, 6), m(4, 3, 3, 3), m(4), [2, 2], [1, 1], [1, 1], 1)),
    "conv2d-nobias-groups-dilated": (
        OPS.conv2d, lambda m: (m(2, 4, 8, 8), m(6, 2, 3, 2), None, [1, 2], [2, 0], [2, 3], 2)),
    "conv2d-bias-batch0": (OPS.conv2d, lambda m: (m(0, 3, 5, 5), m(2, 3, 3, 3), m(2), [1, 1], [0, 0], [1, 1], 1)),
    # ---- conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    "conv_transpose2d-bias-outpad": (
        OPS.conv_transpose2d, lambda m: (m(2, 3, 4, 5), m(3, 2, 3, 3), m(2), [2, 2], [1, 0], [1, 1], 1, [1, 1])),
    "conv_transpose2d-nobias-groups-outpad-ge-stride": (
        OPS.conv_transpose2d, lambda m: (m(1, 4, 3, 3), m(4, 3, 2, 3), None, [1, 2], [0, 1], [1, 1], 2, [2, 1])),
    # ---- conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups)
    "conv2d_weight-basic": (
        OPS.conv2d_weight, lambda m: (m(2, 3, 6, 6), m(2, 4, 4, 4), [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1)),
    "conv2d_weight-strided-groups": (
        OPS.conv2d_weight,
        lambda m: (m(2, 4, 7, 6), m(2, 6, *_conv_out((7, 6), (3, 2), (2, 1), (1, 0), (1, 2))), [6, 2, 3, 2],
                   [2, 1], [1, 0], [1, 2], 2)),
    # ---- max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    "max_pool2d-ceil-pad": (OPS.max_pool2d, lambda m: (m(2, 3, 7, 6), [3, 3], [2, 2], [1, 1], [1, 1], True)),
    "max_pool2d-dilated-floor": (OPS.max_pool2d, lambda m: (m(1, 2, 8, 7), [2, 3], [1, 2], [1, 0], [2, 1], False)),
    # ---- max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation)
    "max_pool2d_backward-ceil-pad": (
        OPS.max_pool2d_backward,
        lambda m: _max_backward_args(m, (2, 3, 7, 6), ([3, 3], [2, 2], [1, 1], [1, 1], True))),
    "max_pool2d_backward-overlap": (
        OPS.max_pool2d_backward,
        lambda m: _max_backward_args(m, (1, 2, 6, 6), ([3, 2], [1, 1], [1, 0], [1, 2], False))),
    # ---- avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    "avg_pool2d-ceil-exclude-pad": (
        OPS.avg_pool2d, lambda m: (m(2, 3, 7, 6), [3, 3], [2, 2], [1, 1], True, False, None)),
    "avg_pool2d-divisor-override": (
        OPS.avg_pool2d, lambda m: (m(1, 2, 6, 5), [2, 3], [1, 2], [1, 1], False, True, 4)),
    # ---- avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode,
    #                          count_include_pad, divisor_override)
    "avg_pool2d_backward-ceil-exclude-pad": (
        OPS.avg_pool2d_backward,
        lambda m: _avg_backward_args(m, (2, 3, 7, 6), ([3, 3], [2, 2], [1, 1], True, False, None))),
    "avg_pool2d_backward-divisor-override-ceil": (
        OPS.avg_pool2d_backward,
        lambda m: _avg_backward_args(m, (1, 2, 6, 5), ([3, 2], [2, 2], [1, 0], True, True, -3))),
}


def _max_backward_args(m, input_shape, pool_args):
    x = m(*input_shape, grad=False).detach()
    values, indices = OPS.max_pool2d(x, *pool_args)
    gy = m(*values.shape)
    return (gy, indices, list(input_shape[2:]), *pool_args[:4])


def _avg_backward_args(m, input_shape, pool_args):
    x = m(*input_shape, grad=False).detach()
    gy = m(*OPS.avg_pool2d(x, *pool_args).shape)
    return (gy, list(input_shape[2:]), *pool_args)


def test_every_op_is_covered():
    covered = {op for op, _ in CONFIGS.values()}
    names = {"conv2d", "conv_transpose2d", "conv2d_weight", "max_pool2d", "max_pool2d_backward",
             "avg_pool2d", "avg_pool2d_backward"}
    assert covered == {getattr(OPS, n) for n in names}


@pytest.mark.parametrize("variant", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_opcheck(backend, config, variant):
    op, make_args = CONFIGS[config]
    args = make_args(_Make(variant))
    result = torch.library.opcheck(op, args)
    assert result, result
    assert all(status == "SUCCESS" for status in result.values()), result
