"""Comparing a result with torch's: the tolerances torchconv is held to, and one assertion.

``python -m torchconv.validate`` and torchconv's tests compare every output
and gradient with ``torch.nn.functional``'s through this module, and an op of
your own can be held to the same standard.

**The rule.** A floating-point or complex result passes when

.. code-block:: text

    max|actual - expected| <= c(dtype) * max(1, max|expected|)

with ``c`` from :data:`TOLERANCES` (``rtol=0``). The left side divided by
``max(1, max|expected|)`` is the *scaled error* (:func:`scaled_error`). An
element-wise relative tolerance is not used: outputs and gradients have
elements near zero, where any difference in summation order is a large
relative error, while the error of a sum is bounded by the scale of the
whole result. Integer results (max_pool2d's indices, integer convolutions)
must be equal.

The table's values are those the measurements in docs/tolerances.md
support: float32 and complex64 ``1e-5`` (reductions up to ~10^5 terms),
float64 and complex128 ``1e-13``; float16 and bfloat16 two units in the last
place of the scale (``2 * 2**-10`` and ``2 * 2**-7``), for a result computed
in float32 and rounded once, compared with torch's float64 result rounded to
the dtype.

**Memory format.** torch's convolutions and pools return channels_last
results for channels_last operands, and gradients in the layout of their
forward operands; :func:`assert_close_to_torch` checks that the result has
torch's memory format (:func:`memory_format_flags`) and, for a tensor with
elements, torch's strides.

Validating an op of your own
----------------------------

An im2col convolution, checked against ``torch.nn.functional.conv2d`` in
float32 and float64::

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torchconv.testing import assert_close_to_torch
    >>> def my_conv2d(x, w):
    ...     n, _, h, width = x.shape
    ...     o, _, kh, kw = w.shape
    ...     columns = F.unfold(x, (kh, kw))  # (n, c * kh * kw, positions)
    ...     return (w.flatten(1) @ columns).view(n, o, h - kh + 1, width - kw + 1)
    >>> for dtype in (torch.float32, torch.float64):
    ...     x, w = torch.randn(2, 3, 8, 8, dtype=dtype), torch.randn(4, 3, 3, 3, dtype=dtype)
    ...     assert_close_to_torch(my_conv2d(x, w), F.conv2d(x, w))

On a channels_last input torch returns a channels_last output, and
``my_conv2d`` does not; the assertion says so::

    >>> x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    >>> assert_close_to_torch(my_conv2d(x, w.float()), F.conv2d(x, w.float()), msg="my_conv2d")
    Traceback (most recent call last):
        ...
    AssertionError: my_conv2d: memory format (is_contiguous, is_channels_last) (True, False) differs from torch's (False, True); strides (144, 36, 6, 1) vs torch's (144, 1, 24, 4)

Pass ``check_memory_format=False`` to compare values only, and ``atol`` /
``rtol`` to hold a result to another tolerance (e.g. a half-precision result
against torch's own half-precision one, which rounds differently).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

__all__ = [
    "TOLERANCES",
    "MEMORY_FORMATS",
    "tolerance",
    "error_scale",
    "scaled_error",
    "memory_format_flags",
    "assert_close_to_torch",
]

#: ``c(dtype)``: the largest scaled error ``max|actual - expected| / max(1, max|expected|)``
#: accepted, per floating-point and complex dtype. Integer dtypes: equality.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float16: 2 * 2**-10,
    torch.bfloat16: 2 * 2**-7,
    torch.float32: 1e-5,
    torch.float64: 1e-13,
    torch.complex64: 1e-5,
    torch.complex128: 1e-13,
}

#: The memory formats torch's 4-d convolutions and pools produce.
MEMORY_FORMATS: tuple[torch.memory_format, ...] = (torch.contiguous_format, torch.channels_last)

TensorOrSequence = Union[torch.Tensor, Sequence[Union[torch.Tensor, None]], None]


def _is_exact(dtype: torch.dtype) -> bool:
    """Integer and bool dtypes: compared for equality."""
    return not (dtype.is_floating_point or dtype.is_complex)


def tolerance(dtype: torch.dtype) -> float:
    r"""The scaled-error tolerance ``c(dtype)`` of :data:`TOLERANCES`; 0 for integer dtypes.

    Args:
        dtype (torch.dtype): the dtype of the result.

    Raises:
        ValueError: for a floating-point dtype the table has no entry for
            (e.g. the float8 dtypes): pass ``atol`` to :func:`assert_close_to_torch`.

    Example::

        >>> tolerance(torch.float32)
        1e-05
        >>> tolerance(torch.int64)
        0.0
    """
    if _is_exact(dtype):
        return 0.0
    if dtype not in TOLERANCES:
        raise ValueError(f"no tolerance for {dtype} in torchconv.testing.TOLERANCES; pass atol explicitly")
    return TOLERANCES[dtype]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 (complex128 if complex): differences computed without rounding."""
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def error_scale(expected: torch.Tensor) -> float:
    r"""``max(1, max|expected|)`` over the finite elements of ``expected``.

    The scale the tolerances of :data:`TOLERANCES` are relative to: a result
    of magnitude below 1 is held to an absolute error of ``c(dtype)``, a
    larger one to ``c(dtype)`` of its largest element.

    Args:
        expected (Tensor): torch's result.

    Example::

        >>> error_scale(torch.tensor([0.5, -4.0, float("inf")]))
        4.0
    """
    magnitude = _wide(expected.detach()).abs()
    magnitude = magnitude[torch.isfinite(magnitude)]
    return max(1.0, magnitude.max().item()) if magnitude.numel() else 1.0


def _differences(actual: torch.Tensor, expected: torch.Tensor, equal_nan: bool = True) -> torch.Tensor:
    """``|actual - expected|`` in float64: 0 where they are equal (infinities
    included) or both NaN (if ``equal_nan``), inf where only one is NaN."""
    a, e = _wide(actual.detach()), _wide(expected.detach())
    difference = (a - e).abs()
    agree = a == e
    if equal_nan:
        agree |= torch.isnan(a) & torch.isnan(e)
    difference = torch.where(agree, torch.zeros_like(difference), difference)
    return torch.where(torch.isnan(difference), torch.full_like(difference, math.inf), difference)


def scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    r"""``max|actual - expected| / max(1, max|expected|)``, computed in float64.

    Elements that are equal (infinities included) or NaN in both count as
    no error; a NaN in one of them only, as an infinite one. The result is
    what :data:`TOLERANCES` bounds.

    Args:
        actual (Tensor): the result under test.
        expected (Tensor): torch's result, of the same shape.

    Example::

        >>> scaled_error(torch.tensor([0.5, -19.75]), torch.tensor([0.5, -20.0]))  # 0.25 / 20
        0.0125
    """
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} and {tuple(expected.shape)}")
    if expected.numel() == 0:
        return 0.0
    return _differences(actual, expected).max().item() / error_scale(expected)


def memory_format_flags(t: torch.Tensor) -> tuple[bool, bool]:
    r"""``(is_contiguous, is_channels_last)`` of ``t``: its memory format as torch reports it.

    ``is_channels_last`` is ``t.is_contiguous(memory_format=torch.channels_last)``
    for a 4-d tensor, False otherwise. Both can be True at once (one channel,
    or 1x1 planes), and both False (a strided slice).

    Args:
        t (Tensor): any tensor.

    Example::

        >>> memory_format_flags(torch.empty(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
        (False, True)
        >>> memory_format_flags(torch.empty(2, 1, 4, 5))
        (True, True)
    """
    return t.is_contiguous(), t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def _prefixed(what: str, text: str) -> str:
    return f"{what}: {text}" if what else text


def _value_problem(actual, expected, rtol, atol, equal_nan) -> str | None:
    """What differs between the values, or None."""
    if _is_exact(expected.dtype):
        if torch.equal(actual, expected):
            return None
        differ = (actual != expected).flatten()
        first = int(differ.nonzero()[0].item())
        index = _index(first, expected.shape)
        return (
            f"{int(differ.sum().item())} of {expected.numel()} elements differ from torch's (integers must be equal); "
            f"the first at index {index}: {actual[index].item()} vs torch's {expected[index].item()}"
        )
    scale = error_scale(expected)
    if atol is None:
        atol = tolerance(expected.dtype) * scale
        allowed = (
            f"atol {atol:.3g} = {tolerance(expected.dtype):g} ({expected.dtype} tolerance) "
            f"* {scale:.3g} (max(1, max|expected|))"
        )
    else:
        allowed = f"atol {atol:.3g}"
    rtol = 0.0 if rtol is None else rtol
    if rtol:
        allowed += f", rtol {rtol:.3g}"
    difference = _differences(actual, expected, equal_nan)
    magnitude = _wide(expected.detach()).abs()
    # Where torch's value is not finite only equality passes (a difference of 0 above).
    bound = torch.where(torch.isfinite(magnitude), atol + rtol * magnitude, torch.zeros_like(magnitude))
    mismatched = difference > bound
    count = int(mismatched.sum().item())
    if not count:
        return None
    worst = int(torch.where(mismatched, difference, torch.zeros_like(difference)).flatten().argmax().item())
    index = _index(worst, expected.shape)
    return (
        f"values not close to torch's: {count} of {expected.numel()} elements ({100 * count / expected.numel():.1f}%) "
        f"differ by more than {allowed}; the greatest difference is {difference.flatten()[worst].item():.3g} "
        f"at index {index} ({actual[index].item()} vs torch's {expected[index].item()}); "
        f"scaled error {difference.max().item() / scale:.3g}"
    )


def _tensor_problem(actual, expected, rtol, atol, equal_nan, check_memory_format, check_strides) -> str | None:
    """The first thing that differs between two tensors (or Nones), or None."""
    if expected is None or actual is None:
        if actual is expected:
            return None
        return "None, torch's is a tensor" if actual is None else "a tensor, torch's is None"
    if not isinstance(actual, torch.Tensor):
        return f"a {type(actual).__name__}, torch's is a tensor"
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} differs from torch's {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} differs from torch's {expected.dtype}"
    if actual.device != expected.device:
        return f"device {actual.device} differs from torch's {expected.device}"
    problem = _value_problem(actual, expected, rtol, atol, equal_nan)
    if problem:
        return problem
    if check_memory_format and memory_format_flags(actual) != memory_format_flags(expected):
        return (
            f"memory format (is_contiguous, is_channels_last) {memory_format_flags(actual)} differs from torch's "
            f"{memory_format_flags(expected)}; strides {actual.stride()} vs torch's {expected.stride()}"
        )
    # An empty tensor's strides carry no meaning: torch's own vary with the path taken.
    if check_strides and expected.numel() and actual.stride() != expected.stride():
        return f"strides {actual.stride()} differ from torch's {expected.stride()}"
    return None


def assert_close_to_torch(
    actual: TensorOrSequence,
    expected: TensorOrSequence,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = True,
    check_memory_format: bool = True,
    check_strides: bool = True,
    msg: str | None = None,
) -> None:
    r"""Asserts that ``actual`` is torch's result ``expected``, to torchconv's tolerances.

    For each tensor, in this order: the shape, dtype and device are equal;
    integer (and bool) tensors are equal element for element (max_pool2d's
    indices); floating-point and complex values satisfy
    ``|actual - expected| <= atol + rtol * |expected|`` element-wise, by
    default with ``rtol=0`` and ``atol = c(dtype) * max(1, max|expected|)``
    (:data:`TOLERANCES`; infinities must be equal, and NaN where torch has
    NaN is equal if ``equal_nan``); the memory format flags are equal
    (:func:`memory_format_flags`); and, unless the tensor has no elements,
    the strides are equal.

    Args:
        actual (Tensor or sequence of Tensors): the result under test; a
            tuple or list (e.g. max_pool2d's ``(values, indices)``, or a
            list of gradients, where ``None`` matches ``None``) is compared
            element by element with ``expected``.
        expected (Tensor or sequence of Tensors): torch's result.
        rtol (float, optional): relative tolerance. Default: 0.
        atol (float, optional): absolute tolerance. Default:
            ``tolerance(dtype) * error_scale(expected)``.
        equal_nan (bool): NaN in both counts as equal. Default: True.
        check_memory_format (bool): compare the memory format flags. Default: True.
        check_strides (bool): compare the strides of tensors with elements. Default: True.
        msg (str, optional): what is compared (e.g. ``"grad weight"``); starts
            every error message.

    Raises:
        AssertionError: naming what differs (the element index, both values
            and the allowed difference for values; both flags and strides
            for a memory format).

    Example::

        >>> x = torch.randn(1, 2, 6, 6)
        >>> expected = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
        >>> values, indices = expected[0].clone(), expected[1].clone()
        >>> assert_close_to_torch((values, indices), expected)
        >>> indices[0, 1, 2, 0] += 1
        >>> assert_close_to_torch((values, indices), expected, msg="max_pool2d")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        AssertionError: max_pool2d[1]: 1 of 18 elements differ from torch's (integers must be equal); the first at index (0, 1, 2, 0): ...
    """
    what = msg or ""
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            kind = f"a {type(actual).__name__}, torch's is a {type(expected).__name__} of {len(expected)}"
            raise AssertionError(_prefixed(what, kind))
        if len(actual) != len(expected):
            raise AssertionError(_prefixed(what, f"{len(actual)} results, torch gives {len(expected)}"))
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert_close_to_torch(
                a, e, rtol=rtol, atol=atol, equal_nan=equal_nan, check_memory_format=check_memory_format,
                check_strides=check_strides, msg=f"{what}[{k}]",
            )
        return
    problem = _tensor_problem(actual, expected, rtol, atol, equal_nan, check_memory_format, check_strides)
    if problem:
        raise AssertionError(_prefixed(what, problem))
