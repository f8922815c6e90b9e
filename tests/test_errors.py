"""Bad arguments: torchconv rejects what torch rejects, the way torch does.

``CASES`` is a table of bad inputs for the four public ops. For each one:

* ``test_torchconv_rejects``: torchconv raises the exception type torch
  raises, with a message matching the regex pinned in the table (torch's own
  wording wherever torchconv reuses it, and naming the offending argument);
* ``test_torch_agrees``: torch itself rejects the input with the same
  exception type (and, where marked, a message matching the same regex), or
  behaves as the documented difference says;
* ``test_no_hang_or_crash``: the whole table runs in a child process (one per
  backend) under a time limit; every case must come back, with both torch
  and torchconv raising (or torch behaving as documented), and the child must
  exit cleanly: no hang, no segfault or abort.

Deliberate differences from torch (``differs=`` in the table):

* torch's CPU conv_transpose2d does not check the bias dtype (conv2d does);
  torchconv checks it for both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

import torchconv
from conftest import device_of_test

SAME = "same"  # torch's message matches the same regex as torchconv's


@dataclass(frozen=True)
class Case:
    id: str
    op: str
    make: Callable[[], tuple]  # () -> positional args (built fresh each time)
    kwargs: dict
    exc: type
    match: str  # regex torchconv's message must match
    torch_match: Optional[str] = SAME  # regex for torch's message; None: not checked
    # Deliberate difference: (what torch does: None = accepts, or its exception type, reason).
    differs: Optional[tuple] = None
    bug: Optional[str] = None  # torchconv does not behave as torch: strict xfail with this reason
    extra: dict = field(default_factory=dict)


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def ones(*shape, dtype):
    return torch.ones(*shape, dtype=dtype)


W = lambda: t(2, 3, 3, 3)  # noqa: E731  conv2d weight: 3 -> 2 channels
WT = lambda: t(3, 2, 3, 3)  # noqa: E731  conv_transpose2d weight: 3 -> 2 channels
X = lambda: t(1, 3, 5, 5)  # noqa: E731

_LEN = r"expected {name} to be a single integer value or a list of 2 values to match the convolution dimensions, but got {name}=\[{value}\]"
_INVALID_COMBINATION = r"received an invalid combination of arguments - got \({got}\)"


def _conv_cases(op: str, w: Callable, transposed: bool) -> list[Case]:
    p = "t_" if transposed else ""
    c = []

    def add(id, make, kwargs, exc, match, **kw):
        c.append(Case(p + id, op, make, kwargs, exc, match, **kw))

    # -- dimensions
    for id, shape in (("input_1d", (5,)), ("input_2d", (3, 5)), ("input_5d", (1, 3, 5, 5, 5))):
        add(id, lambda s=shape: (t(*s), w()), {}, RuntimeError,
            rf"Expected 3D \(unbatched\) or 4D \(batched\) input to {op}, but got input of size: "
            + re.escape(str(list(shape))))
    for id, shape in (("weight_3d", (3, 3, 3)), ("weight_5d", (3, 3, 3, 3, 3))):
        add(id, lambda s=shape: (X(), t(*s)), {}, RuntimeError,
            rf"{op}: expected a 4-dimensional weight, but got weight of size " + re.escape(str(list(shape))),
            # torch reads the dimension off the weight and complains about stride's length.
            torch_match=rf"expected stride to be a single integer value or a list of {len(shape) - 2} values")
    # -- channels and groups
    weight_desc = "Given transposed=1, weight" if transposed else "Given groups=1, weight"
    add("channels", lambda: (t(1, 4, 5, 5), w()), {}, RuntimeError,
        rf"{weight_desc} of size \[{'3, 2' if transposed else '2, 3'}, 3, 3\], expected input\[1, 4, 5, 5\] "
        r"to have 3 channels, but got 4 channels instead")
    add("channels_unbatched", lambda: (t(4, 5, 5), w()), {}, RuntimeError,
        rf"expected input\[1, 4, 5, 5\] to have 3 channels, but got 4 channels instead")
    add("groups_not_dividing", lambda: (t(1, 4, 5, 5), t(3, 2, 3, 3)), {"groups": 2}, RuntimeError,
        r"Given groups=2, expected weight to be divisible by 2 at dimension 0")
    add("groups_above_weight_dim0", lambda: (t(1, 4, 5, 5), t(1, 4, 3, 3)), {"groups": 4}, RuntimeError,
        r"Given groups=4, expected weight to be at least 4 at dimension 0, but got weight of size \[1, 4, 3, 3\] instead")
    for g in (0, -1):
        add(f"groups_{g}", lambda: (X(), w()), {"groups": g}, RuntimeError, r"non-positive groups is not supported")
    if not transposed:
        add("groups_input_channels", lambda: (X(), t(2, 1, 3, 3)), {"groups": 2}, RuntimeError,
            r"Given groups=2, weight of size \[2, 1, 3, 3\], expected input\[1, 3, 5, 5\] to have 2 channels, "
            r"but got 3 channels instead")
    # -- signs
    add("padding_negative", lambda: (X(), w()), {"padding": (0, -1)}, RuntimeError, r"negative padding is not supported")
    add("stride_0", lambda: (X(), w()), {"stride": 0}, RuntimeError, r"non-positive stride is not supported")
    add("stride_negative", lambda: (X(), w()), {"stride": (1, -1)}, RuntimeError, r"non-positive stride is not supported")
    add("dilation_0", lambda: (X(), w()), {"dilation": 0}, RuntimeError, r"dilation should be greater than zero")
    add("dilation_negative", lambda: (X(), w()), {"dilation": (1, -2)}, RuntimeError, r"dilation should be greater than zero")
    # -- tuple lengths
    for name, value in (("stride", (1, 1, 1)), ("padding", (1, 1, 1)), ("dilation", (1, 1, 1)), ("stride", ())):
        add(f"{name}_len{len(value)}", lambda: (X(), w()), {name: value}, RuntimeError,
            _LEN.format(name=name, value=", ".join(map(str, value))))
    # -- types
    for name, value in (("stride", 1.5), ("padding", 1.0), ("dilation", 2.0), ("stride", True), ("stride", None)):
        kind = type(value).__name__
        add(f"{name}_{kind}", lambda: (X(), w()), {name: value}, TypeError,
            rf"{op}\(\): argument '{name}' must be an int or a tuple of ints, but got {kind}",
            torch_match=(rf"{name}=\w+" if not transposed else rf"argument '{name}'"))
    add("stride_float_in_tuple", lambda: (X(), w()), {"stride": (1, 2.0)}, TypeError,
        rf"{op}\(\): argument 'stride' must be an int or a tuple of ints, but got an element of type float",
        torch_match=r"argument 'stride'")
    add("groups_float", lambda: (X(), w()), {"groups": 1.0}, TypeError,
        rf"{op}\(\): argument 'groups' must be int, not float",
        torch_match=r"groups" if not transposed else SAME)
    add("input_list", lambda: ([[1.0]], w()), {}, TypeError, rf"{op}\(\): argument 'input' must be Tensor, not list",
        torch_match=r"\(list, Tensor\)|argument 'input'")
    add("weight_list", lambda: (X(), [[1.0]]), {}, TypeError, rf"{op}\(\): argument 'weight' must be Tensor, not list",
        torch_match=r"\(Tensor, list\)|argument 'weight'")
    add("bias_list", lambda: (X(), w(), [1.0, 2.0]), {}, TypeError,
        rf"{op}\(\): argument 'bias' must be Tensor or None, not list", torch_match=r"\(Tensor, Tensor, list\)|argument 'bias'")
    # -- bias
    add("bias_size", lambda: (X(), w(), t(3)), {}, RuntimeError,
        rf"{'Given transposed=1, weight' if transposed else 'Given weight'} of size \[{'3, 2' if transposed else '2, 3'}, 3, 3\], "
        r"expected bias to be 1-dimensional with 2 elements, but got bias of size \[3\] instead")
    add("bias_2d", lambda: (X(), w(), t(1, 2)), {}, RuntimeError,
        r"expected bias to be 1-dimensional with 2 elements, but got bias of size \[1, 2\] instead")
    # -- dtypes
    add("dtype_weight", lambda: (X(), w().double()), {}, RuntimeError,
        rf"{op}: Input type \(float\) and weight type \(double\) should be the same",
        torch_match=r"expected scalar type Float but found Double")
    add("dtype_weight_half", lambda: (X().half(), w()), {}, RuntimeError,
        rf"{op}: Input type \(c10::Half\) and weight type \(float\) should be the same",
        torch_match=r"expected scalar type Half but found Float")
    if transposed:
        add("dtype_bias", lambda: (X(), w(), t(2).double()), {}, RuntimeError,
            rf"{op}: Input type \(float\) and bias type \(double\) should be the same",
            differs=(None, "torch's CPU conv_transpose2d does not check the bias dtype (its conv2d does)"))
    else:
        add("dtype_bias", lambda: (X(), w(), t(2).double()), {}, RuntimeError,
            rf"{op}: Input type \(float\) and bias type \(double\) should be the same")
    # -- dtypes torch's CPU kernels do not compute (the others: tests/test_dtypes.py)
    add("dtype_bool", lambda: (ones(1, 3, 5, 5, dtype=torch.bool), w().bool()), {}, NotImplementedError,
        r"\"slow_conv_transpose2d_out_cpu\" not implemented for 'Bool'" if transposed
        else r"\"slow_conv2d_cpu\" not implemented for 'Bool'")
    if transposed:
        for dtype, name in ((torch.int32, "Int"), (torch.uint8, "Byte")):
            add(f"dtype_{str(dtype)[6:]}", lambda d=dtype: (ones(1, 3, 5, 5, dtype=d), w().to(d)), {},
                NotImplementedError, rf"\"slow_conv_transpose2d_out_cpu\" not implemented for '{name}'")
    else:
        add("dtype_int8_dilated", lambda: (ones(1, 3, 5, 5, dtype=torch.int8), w().to(torch.int8)), {"dilation": 2},
            NotImplementedError, r"\"slow_conv_dilated<>\" not implemented for 'Char'")
    add("dtype_weight_int", lambda: (ones(1, 3, 5, 5, dtype=torch.int64), w()), {}, RuntimeError,
        r"expected scalar type Long but found Float")
    add("dtype_weight_long_for_float", lambda: (X(), w().long()), {}, RuntimeError,
        r"expected scalar type Float but found Long")
    # -- sizes
    if transposed:
        add("output_padding_negative", lambda: (X(), w()), {"stride": 2, "output_padding": -1}, RuntimeError,
            r"negative output_padding is not supported")
        add("output_padding_len3", lambda: (X(), w()), {"output_padding": (0, 0, 0)}, RuntimeError,
            _LEN.format(name="output_padding", value="0, 0, 0"))
        add("output_padding_float", lambda: (X(), w()), {"output_padding": 0.5}, TypeError,
            rf"{op}\(\): argument 'output_padding' must be an int or a tuple of ints, but got float",
            torch_match=r"argument 'output_padding'")
        for id, kwargs in (
            ("output_padding_ge_stride", dict(stride=2, output_padding=2)),
            ("output_padding_stride1", dict(output_padding=1)),
            ("output_padding_ge_stride_and_dilation", dict(stride=2, dilation=2, output_padding=(0, 2))),
        ):
            add(id, lambda: (X(), w()), kwargs, RuntimeError,
                r"output padding must be smaller than either stride or dilation, but got output_padding")
        add("output_too_small", lambda: (t(1, 3, 1, 1), t(3, 2, 1, 1)), {"padding": 1}, RuntimeError,
            r"Given input size per channel: \(1 x 1\)\. Calculated output size per channel: \(-1 x -1\)\. "
            r"Output size is too small")
        add("output_size_zero", lambda: (t(1, 3, 2, 2), t(3, 2, 1, 1)), {"padding": 1}, RuntimeError,
            r"Calculated output size per channel: \(0 x 0\)\. Output size is too small")
        add("padding_string", lambda: (X(), w()), {"padding": "same"}, TypeError,
            rf"{op}\(\): argument 'padding' must be tuple of ints, not str")
        add("zero_height", lambda: (t(1, 3, 0, 5), w()), {}, RuntimeError,
            r"Only zero batch or zero channel inputs are supported, but got input shape: \[1, 3, 0, 5\]")
        add("zero_width_unbatched", lambda: (t(3, 5, 0), w()), {}, RuntimeError,
            r"Only zero batch or zero channel inputs are supported, but got input shape: \[1, 3, 5, 0\]")
    else:
        add("padding_string", lambda: (X(), w()), {"padding": "full"}, RuntimeError, r"Invalid padding string: 'full'")
        add("padding_string_case", lambda: (X(), w()), {"padding": "VALID"}, RuntimeError,
            r"Invalid padding string: 'VALID'")
        add("same_stride_2", lambda: (X(), w()), {"padding": "same", "stride": 2}, RuntimeError,
            r"padding='same' is not supported for strided convolutions")
        add("same_stride_tuple", lambda: (X(), w()), {"padding": "same", "stride": (1, 2)}, RuntimeError,
            r"padding='same' is not supported for strided convolutions")
        add("same_dilation_len3", lambda: (X(), w()), {"padding": "same", "dilation": (1, 1, 1)}, RuntimeError,
            _LEN.format(name="dilation", value="1, 1, 1"), torch_match=r"dilation cannot broadcast to 2 dimensions")
        for id, shape, kwargs, padded, kernel in (
            ("kernel_bigger_than_input", (1, 3, 2, 2), {}, "2 x 2", "3 x 3"),
            ("kernel_bigger_padded", (1, 3, 1, 2), {"padding": (0, 1)}, "1 x 4", "3 x 3"),
            ("kernel_bigger_dilated", (1, 3, 4, 4), {"dilation": 2}, "4 x 4", "5 x 5"),
            ("zero_height", (1, 3, 0, 5), {}, "0 x 5", "3 x 3"),
            ("zero_height_batch0", (0, 3, 0, 5), {}, "0 x 5", "3 x 3"),
        ):
            add(id, lambda s=shape: (t(*s), w()), kwargs, RuntimeError,
                rf"Calculated padded input size per channel: \({padded}\)\. Kernel size: \({kernel}\)\. "
                r"Kernel size can't be greater than actual input size")
        add("zero_width_padded", lambda: (t(1, 3, 5, 0), t(2, 3, 1, 1)), {"padding": 1}, RuntimeError,
            r"Only zero batch or zero channel inputs are supported, but got input shape: \[1, 3, 5, 0\]")
    return c


def _pool_cases(op: str) -> list[Case]:
    p = op[:3] + "_"
    c = []

    def add(id, make, kwargs, exc, match, **kw):
        c.append(Case(p + id, op, make, kwargs, exc, match, **kw))

    P = lambda: t(1, 1, 4, 4)  # noqa: E731
    dims = r"3D or 4D \(batch mode\) tensor"
    for id, shape in (("input_1d", (4,)), ("input_2d", (4, 4)), ("input_5d", (1, 1, 1, 4, 4))):
        kw = {}
        if op == "avg_pool2d" and len(shape) < 3:
            # torch's avg_pool2d indexes dimension -3 first: an IndexError, and so is ours.
            kw = dict(exc=IndexError, match=r"Dimension out of range", torch_match=r"Dimension out of range")
        args = dict(exc=RuntimeError, match=rf"{dims}.*input", torch_match=rf"{dims}.*input")
        if op == "max_pool2d":  # torch's own text, which its tests match on
            args.update(match=rf"non-empty {dims} expected for input", torch_match=SAME)
        args.update(kw)
        add(id, lambda s=shape: (t(*s), 2), {}, **args)
    for id, shape in (("zero_channels", (1, 0, 4, 4)), ("zero_height", (1, 1, 0, 4)),
                      ("zero_channels_unbatched", (0, 4, 4)), ("zero_width_unbatched", (1, 4, 0))):
        add(id, lambda s=shape: (t(*s), 2), {}, RuntimeError,
            r"Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got: ?"
            + re.escape(str(list(shape))))
    # kernel 0 makes the default stride 0, which ATen checks first.
    add("kernel_0", lambda: (P(), 0), {}, RuntimeError, r"stride should not be zero")
    add("kernel_0_in_tuple_stride_1", lambda: (P(), (2, 0), 1), {}, RuntimeError,
        r"kernel size should be greater than zero, but got kH: 2 kW: 0")
    add("kernel_negative", lambda: (P(), -1), {}, RuntimeError,
        r"kernel size should be greater than zero, but got kH: -1 kW: -1")
    add("stride_0", lambda: (P(), 2, 0), {}, RuntimeError, r"stride should not be zero")
    add("stride_0_in_tuple", lambda: (P(), 2, (2, 0)), {}, RuntimeError, r"stride should not be zero")
    add("stride_negative", lambda: (P(), 2, -1), {}, RuntimeError,
        r"stride should be greater than zero, but got dH: -1 dW: -1")
    add("padding_over_half_kernel", lambda: (P(), 2, 1, 2), {}, RuntimeError,
        r"pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and dilation=1")
    add("padding_over_half_kernel_w", lambda: (t(1, 1, 6, 6), 3, 1, (1, 2)), {}, RuntimeError,
        r"pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 and dilation=1")
    add("padding_negative", lambda: (P(), 2, 1, -1), {}, RuntimeError, r"pad must be non-negative, but got pad: -1")
    add("padding_negative_in_tuple", lambda: (P(), 2, 1, (1, -1)), {}, RuntimeError,
        r"pad must be non-negative, but got pad: -1")
    add("output_too_small", lambda: (t(1, 1, 2, 2), 3), {}, RuntimeError,
        r"Given input size: \(1x2x2\)\. Calculated output size: \(1x0x0\)\. Output size is too small")
    add("output_too_small_w", lambda: (t(1, 1, 4, 2), (2, 3)), {}, RuntimeError,
        r"Given input size: \(1x4x2\)\. Calculated output size: \(1x2x0\)\. Output size is too small")
    add("kernel_len3", lambda: (P(), (2, 2, 2)), {}, RuntimeError,
        rf"{op}: kernel_size must either be a single int, or a tuple of two ints")
    add("kernel_empty", lambda: (P(), ()), {}, RuntimeError,
        rf"{op}: kernel_size must either be a single int, or a tuple of two ints")
    add("stride_len3", lambda: (P(), 2, (1, 1, 1)), {}, RuntimeError,
        rf"{op}: stride must either be omitted, a single int, or a tuple of two ints")
    add("padding_len3", lambda: (P(), 2, 1, (0, 0, 0)), {}, RuntimeError,
        rf"{op}: padding must either be a single int, or a tuple of two ints")
    for name, pos, value in (("kernel_size", 1, 2.0), ("kernel_size", 1, None), ("stride", 2, 1.5),
                             ("padding", 3, 0.5), ("padding", 3, "same")):
        kind = type(value).__name__

        def make(pos=pos, value=value):
            return (P(), 2, 2, 0)[:pos] + (value,)

        add(f"{name}_{kind}", make, {}, TypeError,
            rf"{op}\(\): argument '{name}' must be an int or a tuple of ints, but got {kind}",
            torch_match=rf"{op}\(\): argument '{name}' (\(position \d\) )?must be tuple of ints, not {kind}")
    add("input_list", lambda: ([[1.0]], 2), {}, TypeError, rf"{op}\(\): argument 'input' must be Tensor, not list",
        torch_match=rf"{op}\(\): argument 'input' (\(position 1\) )?must be Tensor, not list")
    refused = [(torch.bool, "Bool"), (torch.complex64, "ComplexFloat")]
    if op == "avg_pool2d":
        refused += [(torch.int32, "Int"), (torch.uint8, "Byte")]
    for dtype, name in refused:
        add(f"dtype_{str(dtype)[6:]}", lambda d=dtype: (ones(1, 1, 4, 4, dtype=d), 2), {}, NotImplementedError,
            rf"\"{op}\" not implemented for '{name}'")
    if op == "max_pool2d":
        add("dilation_0", lambda: (P(), 2), {"dilation": 0}, RuntimeError,
            r"dilation should be greater than zero, but got dilationH: 0 dilationW: 0")
        add("dilation_negative", lambda: (P(), 2), {"dilation": (1, -1)}, RuntimeError,
            r"dilation should be greater than zero, but got dilationH: 1 dilationW: -1")
        add("dilation_len3", lambda: (P(), 2), {"dilation": (1, 1, 1)}, RuntimeError,
            r"max_pool2d: dilation must be either a single int, or a tuple of two ints")
        add("dilation_float", lambda: (P(), 2), {"dilation": 1.5}, TypeError,
            r"max_pool2d\(\): argument 'dilation' must be an int or a tuple of ints, but got float",
            torch_match=r"argument 'dilation' (\(position \d\) )?must be tuple of ints, not float")
        add("padding_over_half_dilated_kernel", lambda: (t(1, 1, 8, 8), 2, 1, 3, 3), {}, RuntimeError,
            r"pad should be at most half of effective kernel size, but got pad=3, kernel_size=2 and dilation=3")
        add("output_too_small_dilated", lambda: (P(), 3), {"dilation": 2}, RuntimeError,
            r"Given input size: \(1x4x4\)\. Calculated output size: \(1x0x0\)\. Output size is too small")
    else:
        add("divisor_override_0", lambda: (P(), 2), {"divisor_override": 0}, RuntimeError,
            r"divisor must be not zero")
        for value in (1.5, True):
            kind = type(value).__name__
            add(f"divisor_override_{kind}", lambda: (P(), 2), {"divisor_override": value}, TypeError,
                rf"avg_pool2d\(\): argument 'divisor_override' must be int or None, not {kind}",
                torch_match=rf"avg_pool2d\(\): argument 'divisor_override' must be int, not {kind}")
    return c


CASES = [
    *_conv_cases("conv2d", W, transposed=False),
    *_conv_cases("conv_transpose2d", WT, transposed=True),
    *_pool_cases("max_pool2d"),
    *_pool_cases("avg_pool2d"),
]
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def _params(with_bug_marks: bool):
    params = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.bug)] if (c.bug and with_bug_marks) else []
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


def _call(module, case: Case):
    return getattr(module, case.op)(*case.make(), **case.kwargs)


def _torch_outcome(case: Case):
    """(exception type or None, message) of torch on the case."""
    try:
        _call(F, case)
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None, ""


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", _params(with_bug_marks=True))
def test_torchconv_rejects(backend, case):
    with pytest.raises(case.exc, match=case.match):
        _call(torchconv, case)


@pytest.mark.parametrize("case", _params(with_bug_marks=False))
def test_torch_agrees(case):
    exc, message = _torch_outcome(case)
    if case.differs is not None:
        torch_does, reason = case.differs
        assert exc is torch_does, f"documented difference no longer holds ({reason}): torch gave {exc}: {message}"
        return
    if case.op == "avg_pool2d" and exc is RuntimeError and message == "integer out of range":
        # torch 2.11's avg_pool2d rejects kernel_size <= 0 and stride < 0 with this
        # bare message (its meta function, before its other checks); torch 2.13
        # gives the messages the table pins.
        pytest.xfail(f"torch {torch.__version__}: avg_pool2d says 'integer out of range'")
    assert exc is case.exc, f"torch raised {exc} ({message!r}), the table says {case.exc}"
    # torchconv prefixes some of torch's messages with the op's name.
    pattern = case.match.removeprefix(f"{case.op}: ") if case.torch_match == SAME else case.torch_match
    if pattern is not None:
        assert re.search(pattern, message), f"torch's message {message!r} does not match {pattern!r}"


def test_table_covers_every_op():
    ops = {c.op for c in CASES}
    assert ops == {"conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"}
    assert len(CASES) > 150


# ---------------------------------------------------------------- child process: no hang, no crash

_CHILD_TIMEOUT_S = 240
_CHILD_RESULTS: dict[tuple[str, str], dict] = {}


def _child_main() -> None:  # pragma: no cover - runs in the child process
    import faulthandler

    faulthandler.enable()
    if os.environ.get("TORCHCONV_BACKEND") == "cuda-emulated":  # the tests' backend, not the package's
        from cuda_emulation import emulated

        torchconv.backends.register(emulated.backend())
    with torch.device(os.environ.get("TORCHCONV_TEST_DEVICE", "cpu")):
        _child_cases()


def _child_cases() -> None:  # pragma: no cover - runs in the child process
    for case in CASES:
        print(f"START {case.id}", flush=True)
        for who, module in (("torch", F), ("torchconv", torchconv)):
            try:
                _call(module, case)
                outcome = "OK"
            except Exception as e:  # noqa: BLE001
                outcome = type(e).__name__
            print(f"RESULT {case.id} {who} {outcome}", flush=True)
    print("ALLDONE", flush=True)


def _child_results(backend: str) -> dict:
    """The child's outcomes for ``backend`` on the running test's device (CUDA in a CUDA run)."""
    device = device_of_test().type
    key = (backend, device)
    if key not in _CHILD_RESULTS:
        here = os.path.dirname(os.path.abspath(__file__))
        root = os.path.dirname(here)
        env = dict(os.environ, TORCHCONV_BACKEND=backend, TORCHCONV_TEST_DEVICE=device)
        env["PYTHONPATH"] = os.pathsep.join([root, here, env.get("PYTHONPATH", "")])
        code = "import test_errors; test_errors._child_main()"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S
            )
            stdout, stderr, rc, timed_out = proc.stdout, proc.stderr, proc.returncode, False
        except subprocess.TimeoutExpired as e:
            out = e.stdout or ""
            stdout = out.decode() if isinstance(out, bytes) else out
            err = e.stderr or ""
            stderr = err.decode() if isinstance(err, bytes) else err
            rc, timed_out = None, True
        outcomes: dict = {}
        started = None
        for line in stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["START"]:
                started = parts[1]
            elif parts[:1] == ["RESULT"]:
                outcomes.setdefault(parts[1], {})[parts[2]] = parts[3]
        _CHILD_RESULTS[key] = dict(
            outcomes=outcomes, last_started=started, rc=rc, timed_out=timed_out,
            all_done="ALLDONE" in stdout, stderr=stderr[-3000:],
        )
    return _CHILD_RESULTS[key]


@pytest.mark.parametrize("case", _params(with_bug_marks=True))
def test_no_hang_or_crash(backend, case):
    run = _child_results(backend)
    got = run["outcomes"].get(case.id, {})
    if "torchconv" not in got:
        why = "hung (time limit)" if run["timed_out"] else f"crashed (rc={run['rc']})"
        blame = "this case" if run["last_started"] == case.id else f"case {run['last_started']!r}"
        pytest.fail(f"child process {why} at {blame} before finishing {case.id!r}; stderr:\n{run['stderr']}")
    assert got["torchconv"] == case.exc.__name__, got
    if case.differs is not None:
        torch_does = case.differs[0]
        assert got["torch"] == ("OK" if torch_does is None else torch_does.__name__), got
    else:
        assert got["torch"] == case.exc.__name__, got


def test_child_exits_cleanly(backend):
    run = _child_results(backend)
    assert not run["timed_out"], f"child hung after starting {run['last_started']!r}"
    assert run["rc"] == 0 and run["all_done"], f"child died (rc={run['rc']}):\n{run['stderr']}"
