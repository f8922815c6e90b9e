"""torch.autocast: torchconv's ops behave as their torch twins.

The convolutions are on autocast's lower-precision list: under autocast
their floating-point operands (float64 excepted) run in autocast's dtype,
whichever the user picked, and gradients come back in each operand's own
dtype. The pools have no autocast rule: they run in their input's dtype.
Checked in eager mode and under ``torch.compile``, on every backend.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv
from conftest import device_of_test

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def _autocast(dtype):
    return torch.autocast(device_of_test().type, dtype=dtype)


def _conv_operands(transposed: bool, dtype=torch.float32):
    x = torch.randn(2, 4, 7, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(*((4, 3) if transposed else (3, 4)), 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(3, dtype=dtype, requires_grad=True)
    return x, w, b


CONVS = {
    "conv2d": (torchconv.conv2d, F.conv2d, dict(stride=2, padding=1), False),
    "conv_transpose2d": (torchconv.conv_transpose2d, F.conv_transpose2d, dict(stride=2, output_padding=1), True),
}


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
@pytest.mark.parametrize("op", CONVS)
def test_convolutions_run_in_the_autocast_dtype(backend, op, dtype):
    ours, theirs, kwargs, transposed = CONVS[op]
    operands = _conv_operands(transposed)
    with _autocast(dtype):
        got = ours(*operands, **kwargs)
        expected = theirs(*operands, **kwargs)
    assert got.dtype == expected.dtype == dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    got_grads = torch.autograd.grad(got.float().square().sum(), operands)
    expected_grads = torch.autograd.grad(expected.float().square().sum(), operands)
    for g, e, t in zip(got_grads, expected_grads, operands):
        assert g.dtype == e.dtype == t.dtype  # float32: the casts are differentiated
        torch.testing.assert_close(g, e, rtol=3e-2, atol=3e-2 * e.abs().max().item())


@pytest.mark.parametrize("op", CONVS)
def test_float64_is_not_cast(backend, op):
    ours, theirs, kwargs, transposed = CONVS[op]
    operands = _conv_operands(transposed, torch.float64)
    with _autocast(torch.bfloat16):
        got = ours(*operands, **kwargs)
        expected = theirs(*operands, **kwargs)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected)


def test_mixed_operands_are_cast_before_the_dtype_check(backend):
    """A bfloat16 activation into a float32 layer (e.g. after a layer that
    autocast already ran in bfloat16) is fine under autocast, as in torch."""
    x = torch.randn(2, 4, 9, 9).bfloat16()
    for layer in (torch.nn.Conv2d(4, 2, 3), torch.nn.ConvTranspose2d(4, 2, 4, stride=2)):
        with _autocast(torch.bfloat16):
            expected = layer(x)
            got = torchconv.convert(layer)(x)
        assert got.dtype == expected.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_pools_keep_their_input_dtype(backend, dtype):
    x = torch.randn(2, 3, 8, 8, dtype=dtype, requires_grad=True)
    with _autocast(torch.bfloat16):
        for ours, theirs in ((torchconv.max_pool2d, F.max_pool2d), (torchconv.avg_pool2d, F.avg_pool2d)):
            got, expected = ours(x, 2), theirs(x, 2)
            assert got.dtype == expected.dtype == dtype
            torch.testing.assert_close(got, expected)
            (grad,) = torch.autograd.grad(got.sum(), x)
            assert grad.dtype == dtype


def test_issue_model_under_autocast(backend):
    """Conv2d -> Linear -> ConvTranspose2d: the transposed convolution gets a
    bfloat16 activation and float32 weights."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 64),
        torch.nn.Unflatten(1, (4, 4, 4)), torch.nn.ConvTranspose2d(4, 2, 4, stride=2),
    )
    converted = torchconv.convert(model)
    x = torch.randn(2, 3, 32, 32)
    with _autocast(torch.bfloat16):
        expected, got = model(x), converted(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=5e-2, atol=5e-2)
    got.float().sum().backward()
    expected.float().sum().backward()
    for (name, p), q in zip(converted.named_parameters(), model.parameters()):
        assert p.grad.dtype == q.grad.dtype == torch.float32, name
        torch.testing.assert_close(p.grad, q.grad, rtol=5e-2, atol=5e-2 * q.grad.abs().max().item())


def test_backward_inside_autocast_and_double_backward(backend):
    """A gradient penalty computed inside the autocast region (create_graph)."""
    layer = torch.nn.Conv2d(3, 4, 3)
    converted = torchconv.convert(layer)
    results = []
    for model in (layer, converted):
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device_of_test()).requires_grad_()
        with _autocast(torch.bfloat16):
            y = model(x)
            (gx,) = torch.autograd.grad(y.float().sum(), x, create_graph=True)
            penalty = gx.square().sum()
        (gw,) = torch.autograd.grad(penalty, model.weight)
        results.append((y, gx, gw))
    for got, expected in zip(results[1], results[0]):
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got.float(), expected.float(), rtol=5e-2, atol=5e-2 * expected.abs().max().item())


@pytest.mark.parametrize("op", CONVS)
def test_compiled_under_autocast(cpu_backend, op):
    ours, theirs, kwargs, transposed = CONVS[op]
    x, w, b = _conv_operands(transposed)
    compiled = torch.compile(lambda x, w, b: ours(x, w, b, **kwargs), fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compiled(x, w, b)
        expected = theirs(x, w, b, **kwargs)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    (gw,) = torch.autograd.grad(got.float().sum(), w)
    (ew,) = torch.autograd.grad(expected.float().sum(), w)
    assert gw.dtype == torch.float32
    torch.testing.assert_close(gw, ew, rtol=3e-2, atol=3e-2 * ew.abs().max().item())


def test_the_rule_is_registered_on_the_custom_ops():
    """The autocast rules live on the ``torchconv::`` ops themselves, so code
    that calls ``torch.ops.torchconv.conv2d`` directly gets them too."""
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.autocast("cpu", dtype=torch.float16):
        y = torch.ops.torchconv.conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 1)
    assert y.dtype == torch.float16


def test_torch_func_transforms_under_autocast(backend):
    """The eager path keeps the autograd.Function under autocast: forward
    mode and torch.func work as with torch's convolutions."""
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    tangent = torch.randn_like(x)
    with _autocast(torch.bfloat16):
        results = [
            (
                torch.func.jvp(lambda x: conv(x, w), (x,), (tangent,)),
                torch.func.grad(lambda x: conv(x, w).float().square().sum())(x),
            )
            for conv in (torchconv.conv2d, F.conv2d)
        ]
    ((got_out, got_tangent), got_grad), ((out, tangent_out), grad) = results
    assert got_out.dtype == out.dtype == got_tangent.dtype == tangent_out.dtype == torch.bfloat16
    assert got_grad.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(got_tangent.float(), tangent_out.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got_grad, grad, rtol=3e-2, atol=3e-2 * grad.abs().max().item())
