"""The eager path: the compiled entries (torchconv._C) and the C++ autograd
Functions on the torchconv_cpp:: ops' Autograd key, against the Python path
(the torchconv:: custom ops with the Functions of torchconv._autograd).

Which path a call took shows in its result's grad_fn: a C++ Function's node
is named ``torch::autograd::CppNode<...>``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv import _eager, backends

pytestmark = pytest.mark.skipif(not backends.cpp.is_available(), reason="needs the compiled extension")

_C = _eager._C


def _randn(*shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _took_cpp_path(out) -> bool:
    node = out.grad_fn
    if node is not None and node.name().startswith("SqueezeBackward"):  # an unbatched call's squeeze
        node = node.next_functions[0][0]
    return node is not None and "CppNode" in node.name()


def _assert_close(ours, theirs, dtype):
    """Within torchconv.testing's tolerance of ``dtype``, scaled as its metric is."""
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=torchconv.testing.tolerance(dtype) * scale)


# (name, public call, the same computation through the torchconv:: custom op
# (the Python autograd Functions), the differentiable tensors)
def _cases():
    x, w, b = _randn(2, 4, 7, 6), _randn(6, 2, 3, 3), _randn(6)
    yield "conv2d", (
        lambda x, w, b: torchconv.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
        lambda x, w, b: torch.ops.torchconv.conv2d(x, w, b, [2, 1], [1, 1], [1, 2], 2),
        (x, w, b),
    )
    wt = _randn(4, 3, 3, 2)
    yield "conv_transpose2d", (
        lambda x, w, b: torchconv.conv_transpose2d(x, w, b, stride=2, padding=(1, 0), output_padding=1, groups=2),
        lambda x, w, b: torch.ops.torchconv.conv_transpose2d(x, w, b, [2, 2], [1, 0], [1, 1], 2, [1, 1]),
        (x, wt, b),
    )
    yield "conv2d_no_bias", (
        lambda x, w: torchconv.conv2d(x, w, padding=1),
        lambda x, w: torch.ops.torchconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1),
        (x, _randn(3, 4, 3, 3)),
    )
    yield "max_pool2d", (
        lambda x: torchconv.max_pool2d(x, 3, stride=2, padding=1, dilation=1, ceil_mode=True),
        lambda x: torch.ops.torchconv.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)[0],
        (x,),
    )
    yield "avg_pool2d", (
        lambda x: torchconv.avg_pool2d(x, (3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        lambda x: torch.ops.torchconv.avg_pool2d(x, [3, 2], [2, 2], [1, 1], True, False, None),
        (x,),
    )
    yield "avg_pool2d_divisor", (
        lambda x: torchconv.avg_pool2d(x, 2, divisor_override=3),
        lambda x: torch.ops.torchconv.avg_pool2d(x, [2, 2], [2, 2], [0, 0], False, True, 3),
        (x,),
    )


CASES = dict(_cases())


def _first_and_second_order(function, tensors):
    """The output, the gradients of <out, v>, and the gradients of
    <gradients, u> with respect to the tensors and v (double backward):
    gradients to the second order."""
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = function(*tensors)
    v = _randn(*out.shape, seed=1).requires_grad_()
    grads = torch.autograd.grad(out, tensors, v, create_graph=True)
    us = [_randn(*g.shape, seed=2 + i) for i, g in enumerate(grads)]
    total = sum((g * u).sum() for g, u in zip(grads, us))
    second = torch.autograd.grad(total, [*tensors, v], allow_unused=True, materialize_grads=True)
    return out, grads, second


@pytest.mark.parametrize("name", list(CASES))
def test_cpp_and_python_autograd_agree_to_the_second_order(name):
    public, custom_op, tensors = CASES[name]
    out, grads, second = _first_and_second_order(public, tensors)
    assert _took_cpp_path(out), out.grad_fn
    ref_out, ref_grads, ref_second = _first_and_second_order(custom_op, tensors)
    assert not _took_cpp_path(ref_out), ref_out.grad_fn
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for ours, theirs in zip(grads + second, ref_grads + ref_second):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
        assert ours.stride() == theirs.stride()


@pytest.mark.parametrize("name", list(CASES))
def test_cpp_path_gradcheck_and_gradgradcheck(name):
    public, _, tensors = CASES[name]
    small = [t[..., :5, :5].contiguous() if t.dim() == 4 and t.shape[2] > 3 else t for t in tensors]
    small = [t.detach().clone().requires_grad_() for t in small]
    assert _took_cpp_path(public(*small))
    assert torch.autograd.gradcheck(public, small)
    assert torch.autograd.gradgradcheck(public, small)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"])
def test_cpp_path_matches_torch_values_strides_and_gradients(op, memory_format):
    x = _randn(2, 4, 6, 6, dtype=torch.float32).to(memory_format=memory_format).requires_grad_()
    if op == "conv2d":
        w = _randn(5, 4, 3, 3, dtype=torch.float32).requires_grad_()
        ours, theirs = torchconv.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)
        inputs = (x, w)
    elif op == "conv_transpose2d":
        w = _randn(4, 5, 3, 3, dtype=torch.float32).requires_grad_()
        ours, theirs = torchconv.conv_transpose2d(x, w, stride=2), F.conv_transpose2d(x, w, stride=2)
        inputs = (x, w)
    elif op == "max_pool2d":
        ours, theirs = torchconv.max_pool2d(x, 2), F.max_pool2d(x, 2)
        inputs = (x,)
    else:
        ours, theirs = torchconv.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)
        inputs = (x,)
    assert _took_cpp_path(ours)
    torch.testing.assert_close(ours, theirs)
    assert ours.stride() == theirs.stride()
    g = torch.ones_like(theirs).to(memory_format=torch.channels_last)  # the other layout than some inputs
    for a, b in zip(torch.autograd.grad(ours, inputs, g), torch.autograd.grad(theirs, inputs, g)):
        torch.testing.assert_close(a, b)
        assert a.stride() == b.stride(), (a.stride(), b.stride())


def test_inference_runs_without_a_graph():
    x, w = _randn(1, 2, 5, 5).requires_grad_(), _randn(3, 2, 3, 3)
    with torch.no_grad():
        y = torchconv.conv2d(x, w)
    assert y.grad_fn is None and not y.requires_grad
    with torch.inference_mode():
        y = torchconv.max_pool2d(x.detach(), 2)
    assert y.is_inference()
    torch.testing.assert_close(y, F.max_pool2d(x.detach(), 2))
    values, indices = torchconv.max_pool2d(x.detach(), 2, return_indices=True)
    ref_values, ref_indices = F.max_pool2d(x.detach(), 2, return_indices=True)
    assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)


class _Subclass(torch.Tensor):
    pass


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w: _C.conv2d(x[0, 0], w, None, 1, 0, 1, 1),  # 2-d
        lambda x, w: _C.conv2d(x.to(torch.complex64), w.to(torch.complex64), None, 1, 0, 1, 1),
        lambda x, w: _C.conv2d(x.int(), w.int(), None, 1, 0, 1, 1),
        lambda x, w: _C.conv2d(x, w, None, 1, "same", 1, 1),
        lambda x, w: _C.conv2d(x, w, None, (1, 1, 1), 0, 1, 1),
        lambda x, w: _C.conv2d(x, w, None, 0, 0, 1, 1),
        lambda x, w: _C.conv2d(x, w, None, 1, 0, 1, 2),  # groups do not divide
        lambda x, w: _C.conv2d(x, w, None, 1, 0, 9, 1),  # kernel larger than the input
        lambda x, w: _C.conv2d(x, w.float(), None, 1, 0, 1, 1),  # dtypes differ
        lambda x, w: _C.conv2d(x.as_subclass(_Subclass), w, None, 1, 0, 1, 1),
        lambda x, w: _C.conv2d(x[:0], w, None, 1, 0, 1, 1),  # empty batch
        lambda x, w: _C.conv2d(x, w, None, 1.0, 0, 1, 1),
        lambda x, w: _C.conv2d(x, w, None, True, 0, 1, 1),
        lambda x, w: _C.conv_transpose2d(x, w.transpose(0, 1), None, 1, 0, 1, 1, 1),  # output_padding too big
        lambda x, w: _C.max_pool2d(x, 2, None, 2, 1, False, False),  # padding over half the kernel
        lambda x, w: _C.max_pool2d(x, 2, None, 0, 1, 0, False),  # ceil_mode not a bool
        lambda x, w: _C.avg_pool2d(x, 2, None, 0, False, True, 0),  # divisor 0
        lambda x, w: _C.avg_pool2d(x, 9, None, 0, False, True, None),  # empty output
    ],
)
def test_entries_decline_what_the_python_path_must_check(call):
    x, w = _randn(1, 2, 5, 5), _randn(3, 2, 3, 3)
    assert call(x, w) is NotImplemented


def test_entries_decline_under_dispatcher_watchers(monkeypatch):
    x, w = _randn(1, 2, 5, 5), _randn(3, 2, 3, 3)
    call = lambda: _C.conv2d(x, w, None, 1, 0, 1, 1)  # noqa: E731
    assert call() is not NotImplemented
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        assert call() is NotImplemented
    with torch.autograd.profiler.profile():
        assert call() is NotImplemented
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        assert _C.conv2d(dual, w, None, 1, 0, 1, 1) is NotImplemented
    seen = []
    torch.func.vmap(lambda a: seen.append(_C.conv2d(a, w, None, 1, 0, 1, 1)) or a)(x.unsqueeze(0))
    assert seen == [NotImplemented]
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert call() is NotImplemented
    monkeypatch.setenv(backends.ENV_VAR, "cpp")
    assert call() is not NotImplemented


def test_another_backend_takes_the_python_path():
    x, w = _randn(1, 2, 5, 5).requires_grad_(), _randn(3, 2, 3, 3)
    assert _eager.entries() is _C
    with backends.use("reference"):
        assert _eager.entries() is None
        y = torchconv.conv2d(x, w)
    assert not _took_cpp_path(y)
    with backends.use("cpp"):
        assert _took_cpp_path(torchconv.conv2d(x, w))


def test_entry_errors_are_python_exceptions():
    # A call the entry takes but the kernel refuses still raises cleanly
    # (never a crash): here a weight whose channels the groups do not match
    # is declined before the kernel, and the Python path raises torch's error.
    x, w = _randn(1, 2, 5, 5), _randn(3, 1, 3, 3)
    with pytest.raises(RuntimeError, match="expected input"):
        torchconv.conv2d(x, w)


def test_unbatched_inputs_take_the_cpp_path():
    x, w = _randn(2, 5, 5).requires_grad_(), _randn(3, 2, 3, 3)
    for ours, theirs in [
        (torchconv.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)),
        (torchconv.conv_transpose2d(x, w.transpose(0, 1)), F.conv_transpose2d(x, w.transpose(0, 1))),
        (torchconv.max_pool2d(x, 2), F.max_pool2d(x, 2)),
        (torchconv.avg_pool2d(x, 2, ceil_mode=True), F.avg_pool2d(x, 2, ceil_mode=True)),
    ]:
        assert _took_cpp_path(ours)
        torch.testing.assert_close(ours, theirs)
        assert ours.shape == theirs.shape and ours.stride() == theirs.stride()
        torch.testing.assert_close(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(theirs.sum(), x)[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_casts_the_convolutions_operands_as_torch_does(dtype):
    x = _randn(2, 3, 6, 6, dtype=torch.float32).requires_grad_()
    w = _randn(4, 3, 3, 3, dtype=torch.float32).requires_grad_()
    b = _randn(4, dtype=torch.float32).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        ours = torchconv.conv2d(x, w, b, padding=1)
        theirs = F.conv2d(x, w, b, padding=1)
        pooled = torchconv.max_pool2d(x, 2)  # pooling runs in the input's dtype
    assert _took_cpp_path(ours) and ours.dtype == theirs.dtype == dtype
    assert pooled.dtype == torch.float32
    _assert_close(ours, theirs, dtype)
    grads = torch.autograd.grad(ours.float().sum(), (x, w, b))
    expected = torch.autograd.grad(theirs.float().sum(), (x, w, b))
    for a, e in zip(grads, expected):
        assert a.dtype == e.dtype == torch.float32
        _assert_close(a, e, dtype)
    # float64 is not cast: a float64 input with a float32 weight is torch's dtype error.
    with torch.autocast("cpu", dtype=dtype), pytest.raises(RuntimeError):
        torchconv.conv2d(x.detach().double(), w)
