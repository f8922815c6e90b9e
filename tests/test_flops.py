"""torch.utils.flop_counter.FlopCounterMode counts torchconv's ops as torch's.

A converted model reports the FLOPs of the original, forward and backward:
conv2d and conv_transpose2d count as aten.convolution, conv2d_weight as the
weight half of aten.convolution_backward (torchconv/_flops.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchconv


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=2, dilation=2, bias=False),
        nn.MaxPool2d(2),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.AvgPool2d(2),
        nn.ConvTranspose2d(4, 2, (2, 3), dilation=(1, 2)),
    )


def _flops(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@pytest.mark.parametrize("grads", ["none", "input", "weights", "all"])
def test_converted_model_counts_torchs_flops(backend, grads):
    torch.manual_seed(0)
    model = _model()
    converted = torchconv.convert(model)
    x = torch.randn(2, 3, 32, 32, requires_grad=grads in ("input", "all"))
    for m in (model, converted):
        m.requires_grad_(grads in ("weights", "all"))

    def forward(m):
        return lambda: m(x)

    def forward_backward(m):
        return lambda: m(x).sum().backward()

    assert _flops(forward(converted)) == _flops(forward(model)) > 0
    if grads != "none":
        assert _flops(forward_backward(converted)) == _flops(forward_backward(model)) > _flops(forward(model))


def test_functional_ops_are_counted(backend):
    x, w = torch.randn(2, 4, 9, 9), torch.randn(6, 2, 3, 3)
    kwargs = dict(stride=2, padding=1, groups=2)
    assert _flops(lambda: torchconv.conv2d(x, w, **kwargs)) == _flops(lambda: torch.nn.functional.conv2d(x, w, **kwargs))
    wt = torch.randn(4, 3, 3, 3)
    assert _flops(lambda: torchconv.conv_transpose2d(x, wt, **kwargs)) == _flops(
        lambda: torch.nn.functional.conv_transpose2d(x, wt, **kwargs)
    )
