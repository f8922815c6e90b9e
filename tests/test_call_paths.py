"""The paths an eager call takes: an ordinary call of the cpp backend goes to
its compiled entry (torchconv._C, see torchconv._eager and
tests/test_eager_path.py), every other one to the Python path; both give
torch's results, layouts and gradients, and see the backend choice, the
FLOP counter, the profiler, autocast and the torch.func transforms. Each
test here fails if a call takes a path it must not, or gives another result.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import torchconv
from torchconv import _eager, backends
from torchconv.backends import reference

ENV = backends.ENV_VAR


def _cases(requires_grad=False, channels_last=False):
    """(name, torchconv op, torch op, args, kwargs) for each op, tiny and ordinary."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        t = torch.randn(*shape, generator=gen)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(requires_grad)

    x = randn(2, 3, 6, 6)
    return [
        ("conv2d", torchconv.conv2d, F.conv2d, (x, randn(4, 3, 3, 3), randn(4)), {"padding": 1}),
        ("conv2d s2", torchconv.conv2d, F.conv2d, (x, randn(6, 1, 3, 3)), {"stride": (2, 2), "groups": 3}),
        ("conv_transpose2d", torchconv.conv_transpose2d, F.conv_transpose2d, (x, randn(3, 2, 3, 3), randn(2)),
         {"stride": 2, "output_padding": 1}),
        ("max_pool2d", torchconv.max_pool2d, F.max_pool2d, (x, 3), {"stride": 2, "padding": 1}),
        ("avg_pool2d", torchconv.avg_pool2d, F.avg_pool2d, (x, [2, 2]), {}),
    ]


def _ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("index", range(len(_cases())), ids=_ids(_cases()))
def test_no_grad_path_matches_torch_and_its_layout(index, channels_last):
    _, ours, theirs, args, kwargs = _cases(channels_last=channels_last)[index]
    y, expected = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert y.grad_fn is None and not y.requires_grad
    torch.testing.assert_close(y, expected)
    assert y.stride() == expected.stride()


@pytest.mark.parametrize("index", range(len(_cases())), ids=_ids(_cases()))
def test_requires_grad_builds_the_graph(index):
    name, ours, theirs, args, kwargs = _cases(requires_grad=True)[index]
    y = ours(*args, **kwargs)
    assert y.grad_fn is not None and "Function" in type(y.grad_fn).__name__
    leaves = [a for a in args if isinstance(a, torch.Tensor)]
    grads = torch.autograd.grad(y.sum(), leaves)
    expected = torch.autograd.grad(theirs(*args, **kwargs).sum(), leaves)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)


def test_only_the_weight_requiring_grad_builds_the_graph():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3, requires_grad=True)
    y = torchconv.conv2d(x, w)
    assert y.grad_fn is not None
    (gw,) = torch.autograd.grad(y.sum(), w)
    torch.testing.assert_close(gw, torch.autograd.grad(F.conv2d(x, w).sum(), w)[0])


def test_no_grad_and_inference_mode_record_nothing():
    x, w = torch.randn(1, 2, 5, 5, requires_grad=True), torch.randn(3, 2, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert torchconv.conv2d(x, w).grad_fn is None
    with torch.inference_mode():
        y = torchconv.conv2d(x.detach(), w.detach())
        assert y.is_inference() and y.grad_fn is None


def test_double_backward_through_the_short_path_of_the_backward():
    # The backward's own ops run without a graph (create_graph=False) or with
    # one (create_graph=True): the second-order gradient needs the latter.
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradgradcheck(lambda x, w: torchconv.conv2d(x, w, padding=1), (x, w))
    (gx,) = torch.autograd.grad(torchconv.conv2d(x, w).square().sum(), x, create_graph=True)
    assert gx.grad_fn is not None


def test_forward_mode_dual_without_requires_grad_gets_its_tangent():
    x, w, t = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(1, 2, 5, 5)
    with fwAD.dual_level():
        y = torchconv.conv2d(fwAD.make_dual(x, t), w)
        tangent = fwAD.unpack_dual(y).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, F.conv2d(t, w))


def test_torch_func_transforms_see_the_function():
    x, w = torch.randn(4, 1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(torch.vmap(torchconv.conv2d, (0, None))(x, w), torch.vmap(F.conv2d, (0, None))(x, w))
    _, jvp = torch.func.jvp(lambda x: torchconv.max_pool2d(x, 2), (x[0],), (torch.ones_like(x[0]),))
    _, expected = torch.func.jvp(lambda x: F.max_pool2d(x, 2), (x[0],), (torch.ones_like(x[0]),))
    torch.testing.assert_close(jvp, expected)


@pytest.mark.parametrize("index", range(len(_cases())), ids=_ids(_cases()))
def test_flop_counter_sees_the_ops_without_grad(index):
    name, ours, theirs, args, kwargs = _cases()[index]
    with FlopCounterMode(display=False) as counter:
        ours(*args, **kwargs)
    counts = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    if name.startswith("conv"):
        op = "torchconv." + name.split()[0]
        assert counts.get(op, 0) > 0, counts
    with FlopCounterMode(display=False) as expected:
        theirs(*args, **kwargs)
    assert counter.get_total_flops() == expected.get_total_flops()


def test_profiler_names_the_ops_without_grad():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torchconv.conv2d(x, w)
        torchconv.avg_pool2d(x, 2)
    names = {e.name for e in prof.events()}
    assert {"torchconv::conv2d", "torchconv::avg_pool2d"} <= names


def test_autocast_casts_on_the_short_path():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, expected = torchconv.conv2d(x, w), F.conv2d(x, w)
    assert y.dtype == expected.dtype == torch.bfloat16


@contextlib.contextmanager
def _spy_backend(name, priority):
    """A registered backend that runs the reference kernels and counts its calls."""
    calls = []

    def wrap(kernel_name):
        def kernel(*args):
            calls.append(kernel_name)
            return getattr(reference, kernel_name)(*args)

        return kernel

    kernels = SimpleNamespace(**{k: wrap(k) for k in reference.__all__})
    backends.register(backends.Backend(name, kernels, devices=("cpu",), priority=priority))
    try:
        yield calls
    finally:
        backends._REGISTRY.pop(name, None)


def test_backend_choice_is_honoured_on_the_short_path(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with _spy_backend("_spy_low", priority=-1000) as calls:
        torchconv.conv2d(x, w)
        assert calls == []  # not the default
        with backends.use("_spy_low"):
            torchconv.conv2d(x, w)
        assert calls == ["conv2d"]
        monkeypatch.setenv(ENV, "_spy_low")
        torchconv.max_pool2d(x, 2)
        assert calls == ["conv2d", "max_pool2d"]
        monkeypatch.delenv(ENV)
        torchconv.max_pool2d(x, 2)
        assert calls == ["conv2d", "max_pool2d"]


def test_default_backend_follows_registry_changes(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    torchconv.conv2d(x, w)  # the priority order is cached now
    with _spy_backend("_spy_high", priority=1000) as calls:
        torchconv.conv2d(x, w)
        assert calls == ["conv2d"]
        assert backends.current("cpu") == "_spy_high"
    torchconv.conv2d(x, w)  # popped straight from the registry dict
    assert calls == ["conv2d"]
    assert backends.current("cpu") == backends.available("cpu")[0]


def test_environment_choice_reads_os_environ(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert backends._environment_choice() is None
    monkeypatch.setenv(ENV, "reference")
    assert backends._environment_choice() == "reference"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": True},  # bool is no int to torch
        {"stride": (1, 1, 1)},
        {"padding": "same"},
        {"padding": (1,)},
        {"dilation": 0},
        {"groups": 2},  # does not divide the channels
        {"groups": torch.tensor(1)},
        {"stride": (torch.tensor(1), 1)},
    ],
    ids=str,
)
def test_the_compiled_entry_leaves_the_unusual_to_the_python_checks(kwargs):
    args = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kwargs}
    x, w = torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3)
    if _eager._C is not None:
        assert _eager._C.conv2d(x, w, None, *args.values()) is NotImplemented
    try:
        expected = F.conv2d(x, w, None, **args)
    except (RuntimeError, TypeError) as error:
        with pytest.raises(type(error)):
            torchconv.conv2d(x, w, None, **args)
    else:
        torch.testing.assert_close(torchconv.conv2d(x, w, None, **args), expected)
