"""Agreement with torch on PyTorch's own OpInfo sample inputs and error inputs.

For the OpInfos of ``nn.functional.{conv2d, conv_transpose2d, max_pool2d,
avg_pool2d}`` (``torch.testing._internal.common_methods_invocations.op_db``):

* ``test_forward``: every sample input, in float32 and float64: values
  (max_pool2d's indices exactly), shape, dtype, memory format and strides
  of every output against the OpInfo's own torch op
  (:func:`torchconv.testing.assert_close_to_torch`, at its tolerances);
* ``test_backward``: every sample input, in float64, and in float32 too but
  for max_pool2d's 1440 (the same index scatter in either dtype): gradients of
  a random-weighted sum of the (first) output with respect to every tensor
  input that requires grad (input, weight, bias): values, shape, dtype and
  strides, for weights (the output gradient) in the output's layout and
  again for contiguous weights;
* ``test_error_input``: every error input: torchconv raises the OpInfo's
  exception type with a message matching its ``error_regex``.

Samples are generated once, at collection, under a fixed seed; test ids name
the op, dtype, sample number and the sample's shapes and arguments, e.g.
``conv2d-float64-002-x(2,4,8,8)-w(2,2,3,3)-b(2)-stride=(3,2)-padding=(2,1)...``.

Samples per dtype: conv2d 30, conv_transpose2d 12, max_pool2d 1440,
avg_pool2d 7; error inputs: conv2d 10, conv_transpose2d 0 (its OpInfo has
none), max_pool2d 7, avg_pool2d 5.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db

import torchconv
from conftest import device_of_test, to_test_device
from torchconv.testing import assert_close_to_torch

OURS = {
    "nn.functional.conv2d": torchconv.conv2d,
    "nn.functional.conv_transpose2d": torchconv.conv_transpose2d,
    "nn.functional.max_pool2d": torchconv.max_pool2d,
    "nn.functional.avg_pool2d": torchconv.avg_pool2d,
}
OPINFOS = {name: next(o for o in op_db if o.name == name and o.variant_test_name == "") for name in OURS}
DTYPES = (torch.float32, torch.float64)

pytestmark = pytest.mark.filterwarnings(
    # torch's own warning for padding='same' with an even kernel: not ours.
    "ignore:Using padding='same' with even kernel lengths:UserWarning"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The samples are tiny: intra-op threads only add overhead (3x the runtime
    on a busy 2-core machine). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _short(name: str) -> str:
    return name.removeprefix("nn.functional.")


# --------------------------------------------------------------------------- samples


@functools.lru_cache(maxsize=None)
def _samples(name: str, dtype: torch.dtype) -> tuple:
    """The OpInfo's sample inputs, generated once under a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        # set_seed=False: the OpInfo would otherwise reseed (slowly) before every sample.
        return tuple(OPINFOS[name].sample_inputs("cpu", dtype, requires_grad=True, set_seed=False))


@functools.lru_cache(maxsize=None)
def _error_inputs(name: str) -> tuple:
    opinfo = OPINFOS[name]
    if opinfo.error_inputs_func is None:  # conv_transpose2d's OpInfo has none
        return ()
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return tuple(opinfo.error_inputs("cpu", set_seed=False))


def _on_test_device(sample):
    """The sample (generated on the CPU, once) on the running test's device."""
    if device_of_test().type == "cpu":
        return sample
    input, args, kwargs = to_test_device((sample.input, sample.args, sample.kwargs))
    return type(sample)(input, args=args, kwargs=kwargs)


def _outputs(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]


def _fmt(value) -> str:
    if isinstance(value, torch.Tensor):
        shape = ",".join(str(s) for s in value.shape)
        layout = ""
        if value.dim() == 4 and not value.is_contiguous() and value.is_contiguous(memory_format=torch.channels_last):
            layout = "cl"
        elif not value.is_contiguous():
            layout = "nc"
        return f"({shape}){layout}"
    if isinstance(value, str):
        return repr(value)
    return str(value).replace(" ", "")


def _describe(sample) -> str:
    parts = [f"x{_fmt(sample.input)}"]
    labels = iter(("w", "b"))
    for arg in sample.args:
        parts.append(f"{next(labels, 'a')}{_fmt(arg)}" if isinstance(arg, torch.Tensor) else _fmt(arg))
    parts += [f"{k}={_fmt(v)}" for k, v in sample.kwargs.items()]
    return "-".join(parts)


# max_pool2d's 1440 samples run backward in float64 only (its float32 backward
# is the same scatter of the same indices), the other ops' in both dtypes.
BACKWARD_DTYPES = {name: DTYPES for name in OURS} | {"nn.functional.max_pool2d": (torch.float64,)}


def _sample_params(dtypes):
    """``dtypes``: a tuple, or a dict op name -> tuple."""
    params = []
    for name in OURS:
        for dtype in dtypes[name] if isinstance(dtypes, dict) else dtypes:
            for i, sample in enumerate(_samples(name, dtype)):
                params.append(
                    pytest.param(name, dtype, i, id=f"{_short(name)}-{str(dtype)[6:]}-{i:04d}-{_describe(sample)}")
                )
    return params


def _error_params():
    params = []
    for name in OURS:
        for i, error in enumerate(_error_inputs(name)):
            sample = error.sample_input
            ident = f"{_short(name)}-{i:02d}-{error.error_type.__name__}-{_describe(sample)}-{str(sample.input.dtype)[6:]}"
            params.append(pytest.param(name, i, id=ident))
    return params


# --------------------------------------------------------------------------- helpers


def _call(name: str, sample, ours: bool):
    fn = OURS[name] if ours else OPINFOS[name].op
    return _outputs(fn(sample.input, *sample.args, **sample.kwargs))


def _grad_inputs(sample) -> list[torch.Tensor]:
    tensors = [sample.input, *sample.args, *sample.kwargs.values()]
    return [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name, dtype, index", _sample_params(DTYPES))
def test_forward(backend, name, dtype, index):
    sample = _on_test_device(_samples(name, dtype)[index])
    expected = _call(name, sample, ours=False)
    got = _call(name, sample, ours=True)
    assert_close_to_torch(got, expected, msg="outputs")


@pytest.mark.parametrize("name, dtype, index", _sample_params(BACKWARD_DTYPES))
def test_backward(backend, name, dtype, index):
    sample = _on_test_device(_samples(name, dtype)[index])
    inputs = _grad_inputs(sample)
    assert inputs, "the sample has no input that requires grad"
    expected = _call(name, sample, ours=False)[0]
    got = _call(name, sample, ours=True)[0]
    generator = torch.Generator().manual_seed(index)
    # The random weights, hence the output gradient, first in the layout of
    # torch's output (what a following op usually gives back), then in
    # contiguous layout: the gradients' layout is torch's either way.
    for weights_layout in (torch.preserve_format, torch.contiguous_format):
        weights = torch.randn(expected.shape, dtype=dtype, generator=generator, device="cpu").to(expected.device)
        if weights_layout is torch.preserve_format:
            weights = torch.empty_like(expected).copy_(weights)
        expected_grads = torch.autograd.grad((expected * weights).sum(), inputs, allow_unused=True, retain_graph=True)
        got_grads = torch.autograd.grad((got * weights).sum(), inputs, allow_unused=True, retain_graph=True)
        for k, (g, e) in enumerate(zip(got_grads, expected_grads)):
            what = f"grad of input {k} {tuple(inputs[k].shape)}, output grad in {weights_layout}"
            if e is None:
                assert g is None or not g.any(), f"{what}: torch gives none, torchconv a nonzero one"
                continue
            assert_close_to_torch(g, e, msg=what)


@pytest.mark.parametrize("name, index", _error_params())
def test_error_input(backend, name, index):
    error = _error_inputs(name)[index]
    sample = _on_test_device(error.sample_input)
    # The OpInfo is right about torch ...
    with pytest.raises(error.error_type, match=error.error_regex):
        OPINFOS[name].op(sample.input, *sample.args, **sample.kwargs)
    # ... and torchconv fails the same way.
    with pytest.raises(error.error_type, match=error.error_regex):
        OURS[name](sample.input, *sample.args, **sample.kwargs)


def test_every_opinfo_found():
    """The four OpInfos exist and have samples (a renamed OpInfo must not silently test nothing)."""
    counts = {name: len(_samples(name, torch.float64)) for name in OURS}
    assert all(counts.values()), counts
    assert counts["nn.functional.max_pool2d"] >= 1000, counts
