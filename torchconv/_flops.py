"""FLOP formulas of the ``torchconv::`` convolution ops for
``torch.utils.flop_counter.FlopCounterMode``.

Each op is counted as torch counts the ATen convolution it stands for, so a
converted model reports torch's FLOPs: ``conv2d`` and ``conv_transpose2d``
as ``aten.convolution`` (transposed or not), and ``conv2d_weight`` as the
weight-gradient half of ``aten.convolution_backward``. Backward passes are
counted through the ops they run (a convolution's input gradient is the
other convolution). Pooling has no FLOPs in torch's counter, nor here.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

# Imported for what it does (registers the ops' FLOP formulas): nothing
# to import from it.
__all__: list[str] = []


def _t(shape):
    """(A, B, ...) -> (B, A, ...): the weight gradient as a convolution over the batch."""
    return [shape[1], shape[0], *shape[2:]]


@register_flop_formula(torch.ops.torchconv.conv2d)
def _conv2d_flop(input_shape, weight_shape, *_, out_shape=None, **__) -> int:
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=False)


@register_flop_formula(torch.ops.torchconv.conv_transpose2d)
def _conv_transpose2d_flop(input_shape, weight_shape, *_, out_shape=None, **__) -> int:
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=True)


@register_flop_formula(torch.ops.torchconv.conv2d_weight)
def _conv2d_weight_flop(input_shape, grad_output_shape, weight_size, *_, out_shape=None, **__) -> int:
    return conv_flop_count(_t(input_shape), _t(grad_output_shape), _t(out_shape), transposed=False)
