"""``python -m torchconv.validate``: checks every backend against torch.

For each op (conv2d, conv_transpose2d, max_pool2d, avg_pool2d), on each
registered backend and each device type where that backend is available
(``cpu``, and ``cuda`` when ``torch.cuda.is_available()``), it runs:

``forward DTYPE``
    torchconv's outputs against ``torch.nn.functional``'s on the same inputs,
    over a few fixed configurations (strides, padding, dilation, groups,
    ``padding='same'``, unbatched inputs, ``ceil_mode``, ``count_include_pad``,
    ``divisor_override`` ...), in every dtype torch's CPU op computes
    (:data:`DTYPES`: float32, float64, float16, bfloat16, complex64 and
    complex128 for the convolutions, integers). For max_pool2d the returned
    indices must be equal, not just close; integer results must be equal.
``backward DTYPE``
    the gradients with respect to every tensor input (input, weight, bias)
    for the same random ``grad_output``, against torch's, in each floating
    and complex dtype.
``gradcheck`` / ``gradgradcheck``
    :func:`torch.autograd.gradcheck` and :func:`torch.autograd.gradgradcheck`
    in float64 on small shapes, with respect to every tensor input (and, for
    gradgradcheck, the output gradient), at torch's default tolerances.

An agreement check passes when every tensor compared passes
:func:`torchconv.testing.assert_close_to_torch`: shape, dtype, memory
format and strides equal to torch's, and the values
``max|ours - torch| <= c(dtype) * max(1, max|torch|)`` with ``c`` from
:data:`torchconv.testing.TOLERANCES`, integers equal. The error is measured
against the tensor's own scale, so the limit holds for any magnitude (see
docs/tolerances.md for how the limits were chosen). The table shows the
largest absolute error and the largest scaled error of each check.

Options:
    ``--backend NAME`` (repeatable) validates only these backends;
    ``--device DEVICE`` (repeatable) only these devices (``cpu``, ``cuda``,
    ``cuda:1`` ...);
    ``--quick`` runs the gradient checks on the first configuration of each
    op only.

Backends that are registered but not available are listed with what enables
them. The exit code is 0 when every check passes, 1 otherwise (or when
nothing could be validated), 2 for bad arguments.

It can be used from Python too: :func:`run` returns the results and
:func:`main` does what the command does.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from . import backends
from . import functional
from ._precision import full_float32
from .testing import assert_close_to_torch, error_scale, scaled_error, tolerance

__all__ = [
    "Case", "OpSpec", "Result", "OPS", "DTYPES", "GRADCHECK_TOLERANCES", "checks_of", "run", "format_table", "main",
]

#: torch.autograd.gradcheck's defaults, spelled out for the table.
GRADCHECK_TOLERANCES = dict(eps=1e-6, atol=1e-5, rtol=1e-3)

_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: Half precision is compared with torch's float64 result rounded to the
#: dtype: torch's own half-precision kernels round differently on different
#: machines.
_HALF = (torch.float16, torch.bfloat16)
#: Every dtype validated, in table order.
_ALL_DTYPES = (*_FLOATING, torch.complex64, torch.complex128, torch.int64, torch.int32, torch.uint8)
#: The dtypes each op is checked in: every dtype torch's CPU op computes
#: (integer convolutions other than int64 only on cases without dilation).
DTYPES = {
    "conv2d": (*_FLOATING, torch.complex64, torch.complex128, torch.int64, torch.int32, torch.uint8),
    "conv_transpose2d": (*_FLOATING, torch.complex64, torch.complex128, torch.int64),
    "max_pool2d": (*_FLOATING, torch.int64, torch.int32, torch.uint8),
    "avg_pool2d": (*_FLOATING, torch.int64),
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _has_gradients(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def _agreement_checks(dtype: torch.dtype) -> list[str]:
    name = _dtype_name(dtype)
    return [f"forward {name}"] + ([f"backward {name}"] if _has_gradients(dtype) else [])


#: Every check, in table order.
CHECKS = (*[check for dtype in _ALL_DTYPES for check in _agreement_checks(dtype)], "gradcheck", "gradgradcheck")


def checks_of(op: str) -> list[str]:
    """The checks run for ``op``, in table order."""
    return [*[check for dtype in DTYPES[op] for check in _agreement_checks(dtype)], "gradcheck", "gradgradcheck"]


@dataclass(frozen=True)
class Case:
    """One configuration of an op.

    Args:
        label: what it exercises.
        input: shape of the input (3-d for unbatched).
        kwargs: keyword arguments of the op, as given to torch.nn.functional.
        weight: weight shape (convolutions), or None for pooling.
        bias: whether the convolution has a bias.
        channels_last: the input and weight in ``torch.channels_last``, as
            ``model.to(memory_format=torch.channels_last)`` leaves them.
    """

    label: str
    input: tuple[int, ...]
    kwargs: dict = field(default_factory=dict)
    weight: tuple[int, ...] | None = None
    bias: bool = False
    channels_last: bool = False


@dataclass(frozen=True)
class OpSpec:
    """An op under validation.

    Args:
        ours: the torchconv function.
        reference: the torch.nn.functional function it must agree with.
        cases: configurations for the agreement checks.
        grad_cases: tiny configurations for gradcheck and gradgradcheck
            (their cost grows with the product of input and output sizes).
    """

    ours: Callable
    reference: Callable
    cases: list[Case]
    grad_cases: list[Case]


def _bias_size(op: str, case: Case) -> int:
    if op == "conv2d":
        return case.weight[0]
    return case.weight[1] * case.kwargs.get("groups", 1)


#: op name -> what is checked, and on which configurations.
OPS: dict[str, OpSpec] = {
    "conv2d": OpSpec(
        functional.conv2d,
        F.conv2d,
        cases=[
            Case("3x3 pad 1, bias", (2, 3, 6, 6), dict(padding=1), (4, 3, 3, 3), True),
            Case(
                "2x3 kernel, stride 2, pad (1,2), dilation (2,1), bias",
                (2, 2, 7, 6),
                dict(stride=2, padding=(1, 2), dilation=(2, 1)),
                (3, 2, 2, 3),
                True,
            ),
            Case("groups 2", (2, 4, 6, 6), dict(groups=2), (4, 2, 3, 3)),
            Case("padding='same', even kernel, bias", (1, 2, 5, 6), dict(padding="same"), (2, 2, 2, 4), True),
            Case("unbatched, stride (2,1)", (3, 6, 6), dict(stride=(2, 1)), (2, 3, 3, 3), True),
            Case("32->32 channels (reduction 288), bias", (4, 32, 16, 16), dict(padding=1), (32, 32, 3, 3), True),
            Case("channels_last, 3x3 stride 2 pad 1, bias", (2, 8, 9, 9), dict(stride=2, padding=1), (16, 8, 3, 3), True,
                 channels_last=True),
        ],
        grad_cases=[
            Case("3x3 pad 1, bias", (1, 2, 4, 4), dict(padding=1), (2, 2, 3, 3), True),
            Case(
                "2x3 kernel, stride 2, pad (1,2), dilation (2,1), bias",
                (1, 2, 5, 4),
                dict(stride=2, padding=(1, 2), dilation=(2, 1)),
                (2, 2, 2, 3),
                True,
            ),
            Case("groups 2", (1, 4, 3, 3), dict(groups=2), (4, 2, 2, 2)),
            Case("padding='same', even kernel, bias", (1, 1, 4, 5), dict(padding="same"), (2, 1, 2, 4), True),
            Case("unbatched, stride (2,1)", (2, 4, 3), dict(stride=(2, 1)), (2, 2, 3, 2)),
        ],
    ),
    "conv_transpose2d": OpSpec(
        functional.conv_transpose2d,
        F.conv_transpose2d,
        cases=[
            Case(
                "stride 2, pad 1, output_padding 1, bias",
                (2, 3, 4, 4),
                dict(stride=2, padding=1, output_padding=1),
                (3, 2, 3, 3),
                True,
            ),
            Case(
                "groups 2, dilation 2, stride (1,2), bias",
                (1, 4, 3, 4),
                dict(groups=2, dilation=2, stride=(1, 2)),
                (4, 1, 2, 3),
                True,
            ),
            Case("output_padding 1 < dilation 2, stride 1", (1, 2, 3, 3), dict(dilation=2, output_padding=1), (2, 2, 3, 3)),
            Case("unbatched", (3, 4, 4), dict(stride=2), (3, 2, 2, 2), True),
            Case("32->32 channels, 4x4 stride 2, bias", (4, 32, 8, 8), dict(stride=2, padding=1), (32, 32, 4, 4), True),
            Case("channels_last, 4x4 stride 2 pad 1, bias", (2, 8, 5, 5), dict(stride=2, padding=1), (8, 16, 4, 4), True,
                 channels_last=True),
        ],
        grad_cases=[
            Case(
                "stride 2, pad 1, output_padding 1, bias",
                (1, 2, 2, 3),
                dict(stride=2, padding=1, output_padding=1),
                (2, 2, 3, 3),
                True,
            ),
            Case(
                "groups 2, dilation 2, stride (1,2), bias",
                (1, 4, 2, 2),
                dict(groups=2, dilation=2, stride=(1, 2)),
                (4, 1, 2, 2),
                True,
            ),
            Case("output_padding 1 < dilation 2, stride 1", (1, 2, 2, 2), dict(dilation=2, output_padding=1), (2, 1, 2, 2)),
        ],
    ),
    "max_pool2d": OpSpec(
        functional.max_pool2d,
        F.max_pool2d,
        cases=[
            Case("2x2", (2, 3, 6, 6), dict(kernel_size=2)),
            Case("3x3 stride 2 pad 1", (2, 2, 7, 7), dict(kernel_size=3, stride=2, padding=1)),
            Case(
                "(3,2) stride (2,3) pad (1,0) dilation (2,1) ceil_mode",
                (1, 2, 8, 7),
                dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), dilation=(2, 1), ceil_mode=True),
            ),
            Case("unbatched, 3x3 stride 1", (2, 5, 5), dict(kernel_size=3, stride=1)),
            Case("8x32x32x32, 3x3 stride 2 pad 1", (8, 32, 32, 32), dict(kernel_size=3, stride=2, padding=1)),
            Case("channels_last, 3x3 stride 2 pad 1", (2, 16, 9, 9), dict(kernel_size=3, stride=2, padding=1),
                 channels_last=True),
        ],
        grad_cases=[
            Case("2x2", (1, 2, 4, 4), dict(kernel_size=2)),
            Case("3x3 stride 2 pad 1", (1, 1, 5, 5), dict(kernel_size=3, stride=2, padding=1)),
            Case(
                "(3,2) stride (2,3) pad (1,0) dilation (2,1) ceil_mode",
                (1, 1, 6, 5),
                dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), dilation=(2, 1), ceil_mode=True),
            ),
        ],
    ),
    "avg_pool2d": OpSpec(
        functional.avg_pool2d,
        F.avg_pool2d,
        cases=[
            Case("2x2", (2, 3, 6, 6), dict(kernel_size=2)),
            Case(
                "3x3 stride 2 pad 1 ceil_mode, count_include_pad=False",
                (2, 2, 7, 7),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            ),
            Case(
                "(2,3) stride (1,2) pad 1, divisor_override=3",
                (1, 2, 5, 6),
                dict(kernel_size=(2, 3), stride=(1, 2), padding=1, divisor_override=3),
            ),
            Case("unbatched, 3x3 stride 1 pad 1", (2, 5, 5), dict(kernel_size=3, stride=1, padding=1)),
            Case("8x32x32x32, 3x3 stride 1 pad 1", (8, 32, 32, 32), dict(kernel_size=3, stride=1, padding=1)),
            Case("channels_last, 2x2", (2, 16, 8, 8), dict(kernel_size=2), channels_last=True),
        ],
        grad_cases=[
            Case("2x2", (1, 2, 4, 4), dict(kernel_size=2)),
            Case(
                "3x3 stride 2 pad 1 ceil_mode, count_include_pad=False",
                (1, 1, 6, 6),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            ),
            Case(
                "(2,3) stride (1,2) pad 1, divisor_override=3",
                (1, 1, 4, 5),
                dict(kernel_size=(2, 3), stride=(1, 2), padding=1, divisor_override=3),
            ),
        ],
    ),
}


@dataclass
class Result:
    """The outcome of one check of one op on one backend and device."""

    op: str
    backend: str
    device: str
    check: str
    passed: bool
    max_abs_error: float | None = None
    max_scaled_error: float | None = None
    limit: str = ""
    detail: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"


# ----------------------------------------------------------------- inputs


def _inputs(op: str, case: Case, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    """The case's tensors, the same for every dtype and device (made in float64 on the CPU).

    Conv weights are scaled by 1/sqrt(fan_in), as nn.Conv2d's initialisation
    does, so outputs stay O(1). max_pool2d inputs are a permutation of evenly
    spaced values: no ties, and no two values within gradcheck's step.
    """
    gen = torch.Generator().manual_seed(1234)
    numel = math.prod(case.input)
    if op == "max_pool2d":
        x = (torch.randperm(numel, generator=gen, dtype=torch.float64) / numel - 0.5).reshape(case.input)
    else:
        x = torch.randn(case.input, generator=gen, dtype=torch.float64)
    tensors = [x]
    if case.weight is not None:
        tensors.append(torch.randn(case.weight, generator=gen, dtype=torch.float64) / math.sqrt(math.prod(case.weight[1:])))
        if case.bias:
            tensors.append(torch.randn(_bias_size(op, case), generator=gen, dtype=torch.float64))
    if dtype.is_complex:  # an imaginary part of its own
        tensors = [torch.complex(t, torch.randn(t.shape, generator=gen, dtype=torch.float64)) for t in tensors]
    elif not dtype.is_floating_point:  # small integers, large enough sums to wrap in 8 bits
        tensors = [(t * 20).round().abs() if dtype == torch.uint8 else (t * 20).round() for t in tensors]
    tensors = [t.to(device=device, dtype=dtype) for t in tensors]
    if case.channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors]
    return tensors


def _case_supported(op: str, case: Case, dtype: torch.dtype) -> bool:
    """False where torch's CPU op refuses the dtype: dilated integer convolutions other than int64."""
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.int64 or op not in ("conv2d", "conv_transpose2d"):
        return True
    dilation = case.kwargs.get("dilation", 1)
    return dilation in (1, (1, 1))


def _call(op: str, fn: Callable, case: Case, tensors: Sequence[torch.Tensor]):
    """fn(*tensors, **kwargs); max_pool2d also returns its indices."""
    if op == "max_pool2d":
        return fn(*tensors, **case.kwargs, return_indices=True)
    return fn(*tensors, **case.kwargs)


def _values(out):
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------- checks


class _Tally:
    """Worst errors over the tensors compared by one check, and what failed."""

    def __init__(self):
        self.max_abs = 0.0
        self.max_scaled = 0.0
        self.problems: list[str] = []

    def compare(self, what: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
        try:
            assert_close_to_torch(ours, ref, msg=what)
        except AssertionError as error:
            self.problems.append(str(error))
        if ours.shape != ref.shape or not (ref.dtype.is_floating_point or ref.dtype.is_complex):
            return
        scaled = scaled_error(ours, ref)
        self.max_abs = max(self.max_abs, scaled * error_scale(ref))
        self.max_scaled = max(self.max_scaled, scaled)


def _agreement(op, ours_fn, torch_fn, cases, dtype, device):
    """(forward tally, backward tally) of torchconv against torch over ``cases``.

    Half precision is compared with torch in float64 on the same values,
    rounded to the dtype; the other dtypes with torch in the same dtype.
    """
    forward, backward = _Tally(), _Tally()
    gen = torch.Generator().manual_seed(4321)
    torch_dtype = torch.float64 if dtype in _HALF else dtype
    with_grad = _has_gradients(dtype)
    for case in cases:
        if not _case_supported(op, case, dtype):
            continue
        tensors = _inputs(op, case, dtype, device)
        results = []
        for fn, as_dtype in ((ours_fn, dtype), (torch_fn, torch_dtype)):
            leaves = [t.to(as_dtype).requires_grad_(with_grad) for t in tensors]
            with warnings.catch_warnings():
                # torch warns that padding='same' with an even kernel copies the input.
                warnings.simplefilter("ignore", UserWarning)
                out = _call(op, fn, case, leaves)
            results.append((out, leaves))
        (ours_out, ours_leaves), (ref_out, ref_leaves) = results
        names = ["output", "indices"] if isinstance(ref_out, tuple) else ["output"]
        ours_all = ours_out if isinstance(ours_out, tuple) else (ours_out,)
        ref_all = ref_out if isinstance(ref_out, tuple) else (ref_out,)
        for name, ours, ref in zip(names, ours_all, ref_all):
            ref = ref.detach()
            forward.compare(f"[{case.label}] {name}", ours.detach(), ref.to(dtype) if ref.is_floating_point() else ref)
        if not with_grad or (forward.problems and _values(ours_out).shape != _values(ref_out).shape):
            continue
        grad_output = torch.randn(_values(ref_out).shape, generator=gen, dtype=torch.float64)
        if dtype.is_complex:
            grad_output = torch.complex(grad_output, torch.randn(grad_output.shape, generator=gen, dtype=torch.float64))
        grad_output = grad_output.to(device=device, dtype=dtype)
        ours_grads = torch.autograd.grad(_values(ours_out), ours_leaves, grad_output, allow_unused=True)
        ref_grads = torch.autograd.grad(_values(ref_out), ref_leaves, grad_output.to(torch_dtype), allow_unused=True)
        for name, ours, ref in zip(("input", "weight", "bias"), ours_grads, ref_grads):
            if ours is None:
                backward.problems.append(f"[{case.label}] grad {name}: None")
                continue
            backward.compare(f"[{case.label}] grad {name}", ours, ref.to(dtype))
    return forward, backward


@contextlib.contextmanager
def _single_threaded():
    """One intra-op thread: gradcheck makes thousands of calls on tiny tensors,
    where a thread pool only adds synchronisation (and, on a loaded machine,
    stalls while threads wait for a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _gradchecks(op, ours_fn, cases, device, second_order):
    """Problems found by gradcheck (or gradgradcheck) over ``cases``, in float64.

    These run single-threaded (see :func:`_single_threaded`); the agreement
    checks, whose larger configurations reach the kernels' parallel paths,
    run with torch's thread count.
    """
    with _single_threaded():
        return _gradchecks_of(op, ours_fn, cases, device, second_order)


def _gradchecks_of(op, ours_fn, cases, device, second_order):
    problems = []
    for case in cases:
        leaves = [t.requires_grad_() for t in _inputs(op, case, torch.float64, device)]

        def fn(*tensors, case=case):
            return _values(_call(op, ours_fn, case, tensors))

        check = torch.autograd.gradgradcheck if second_order else torch.autograd.gradcheck
        try:
            ok = check(fn, leaves, raise_exception=True, **GRADCHECK_TOLERANCES)
        except Exception as error:  # GradcheckError, or an error of the op itself
            ok = False
            problems.append(f"[{case.label}] {type(error).__name__}: {_first_line(error)}")
            continue
        if not ok:
            problems.append(f"[{case.label}] failed")
    return problems


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _guarded(make_results: Callable[[], list[Result]], fallback: Callable[[str], list[Result]]) -> list[Result]:
    try:
        return make_results()
    except Exception as error:  # a crashing kernel is a failed check, not a crashed validation
        return fallback(f"{type(error).__name__}: {_first_line(error)}")


def _validate_op(op: str, backend: str, device: str, quick: bool) -> list[Result]:
    spec = OPS[op]
    ours_fn, torch_fn, cases = spec.ours, spec.reference, spec.cases
    grad_cases = spec.grad_cases[:1] if quick else spec.grad_cases
    results: list[Result] = []

    def row(check, passed, tally=None, limit="", detail=""):
        results.append(
            Result(
                op, backend, device, check, passed,
                None if tally is None else tally.max_abs,
                None if tally is None else tally.max_scaled,
                limit, detail,
            )
        )

    for dtype in DTYPES[op]:
        limit = f"{tolerance(dtype):g} * scale" if tolerance(dtype) else "equal"
        checks = _agreement_checks(dtype)
        try:
            with full_float32():  # torch's CUDA convolutions default to TF32
                tallies = _agreement(op, ours_fn, torch_fn, cases, dtype, device)
        except Exception as error:
            for check in checks:
                row(check, False, limit=limit, detail=f"{type(error).__name__}: {_first_line(error)}")
            continue
        for check, tally in zip(checks, tallies):
            row(check, not tally.problems, tally, limit, "; ".join(tally.problems))

    limit = "atol {atol:g}, rtol {rtol:g}".format(**GRADCHECK_TOLERANCES)
    for check, second in (("gradcheck", False), ("gradgradcheck", True)):
        problems = _gradchecks(op, ours_fn, grad_cases, device, second)
        row(check, not problems, limit=limit, detail="; ".join(problems))
    # Rows in the order of CHECKS, whatever order they were made in.
    return sorted(results, key=lambda r: CHECKS.index(r.check))


def _devices(requested: Sequence[str] | None) -> list[str]:
    if requested:
        return list(requested)
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def _device_usable(device: str) -> str | None:
    """Why ``device`` cannot be used, or None."""
    try:
        kind = torch.device(device)
    except RuntimeError as error:
        return str(error)
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            return "torch.cuda.is_available() is False"
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s)"
    elif kind.type != "cpu":
        try:
            torch.empty(1, device=kind)
        except Exception as error:
            return _first_line(error)
    return None


def _is_available(backend: backends.Backend) -> bool:
    try:
        return bool(backend.is_available())
    except Exception:
        return False


def run(
    backend_names: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    quick: bool = False,
    ops: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Result]:
    """Runs the checks; returns one :class:`Result` per op, backend, device and check.

    Args:
        backend_names: backends to validate (default: every registered one);
            those unavailable, or not running on a device, are skipped.
        devices: devices to validate on (default: ``cpu``, and ``cuda`` if
            available).
        quick: gradient checks on each op's first configuration only.
        ops: ops to validate (default: all four).
        log: called with a line of progress per backend and device.
    """
    registry = backends.registered()
    names = list(backend_names) if backend_names else list(registry)
    results: list[Result] = []
    for device in _devices(devices):
        if _device_usable(device) is not None:
            continue
        kind = torch.device(device).type
        for name in names:
            backend = registry[name]
            if kind not in backend.devices or not _is_available(backend):
                continue
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]), backends.use(name):
                torch.manual_seed(0)
                for op in ops or OPS:
                    results.extend(
                        _guarded(
                            lambda: _validate_op(op, name, device, quick),
                            lambda detail: [Result(op, name, device, c, False, detail=detail) for c in checks_of(op)],
                        )
                    )
            if log is not None:
                log(f"validated backend {name!r} on {device} in {time.perf_counter() - start:.1f} s")
    return results


def _format_error(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_table(results: Sequence[Result]) -> str:
    """The results as a fixed-width table, one row per check, details of failures after it."""
    header = ("op", "backend", "device", "check", "result", "max abs err", "scaled err", "limit")
    rows = [
        (r.op, r.backend, r.device, r.check, r.status, _format_error(r.max_abs_error), _format_error(r.max_scaled_error), r.limit)
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    failures = [r for r in results if not r.passed]
    if failures:
        out.append("")
        out.append("Failures:")
        for r in failures:
            out.append(f"  {r.op} / {r.backend} / {r.device} / {r.check}: {r.detail or 'failed'}")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torchconv.validate",
        description="Check torchconv's backends against torch.nn.functional: forward and gradient "
        "agreement in every dtype torch computes, gradcheck and gradgradcheck.",
    )
    parser.add_argument(
        "--backend", action="append", metavar="NAME",
        help="validate this backend only (repeatable); default: every registered backend",
    )
    parser.add_argument(
        "--device", action="append", metavar="DEVICE",
        help="validate on this device only (repeatable), e.g. cpu, cuda, cuda:1; default: cpu, "
        "and cuda if torch.cuda.is_available()",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="run gradcheck and gradgradcheck on the first configuration of each op only",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prints the table and returns the exit code (0 all passed, 1 otherwise)."""
    parser = _parser()
    args = parser.parse_args(argv)
    registry = backends.registered()
    for name in args.backend or []:
        if name not in registry:
            parser.error(f"unknown backend {name!r}; registered backends: {', '.join(sorted(registry))}")
    devices = _devices(args.device)
    unusable = {d: why for d in devices if (why := _device_usable(d)) is not None}

    start = time.perf_counter()
    print(f"torchconv validation: torch {torch.__version__}, devices {', '.join(devices)}"
          f"{' (quick)' if args.quick else ''}", flush=True)
    results = run(args.backend, devices, args.quick, log=lambda text: print(text, flush=True))
    elapsed = time.perf_counter() - start

    print()
    if results:
        print(format_table(results))
        print()
    names = args.backend or list(registry)
    unavailable = [registry[n] for n in names if not _is_available(registry[n])]
    if unavailable:
        print("Registered but unavailable backends (not validated):")
        for backend in unavailable:
            how = backend.how_to_enable or "(no instructions given)"
            why = backend.why_unavailable()
            print(f"  {backend.name} [{', '.join(backend.devices)}]: {why + '. ' if why else ''}{how}")
    for device, why in unusable.items():
        print(f"Device {device} skipped: {why}")
    for device in devices:
        if device in unusable:
            continue
        kind = torch.device(device).type
        missing = [n for n in names if kind not in registry[n].devices]
        if missing and args.backend:
            print(f"Not run on {device}: {', '.join(missing)} (backend does not support {kind})")

    failed = [r for r in results if not r.passed]
    combos = sorted({(r.backend, r.device) for r in results})
    print(
        f"validation: {len(results)} checks on {len(combos)} backend/device pair(s), "
        f"{len(results) - len(failed)} PASS, {len(failed)} FAIL, in {elapsed:.1f} s"
    )
    if not results:
        print("validation: nothing was validated (no requested backend is available on a requested device)")
        return 1
    print("validation: OK" if not failed else "validation: FAILED")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
