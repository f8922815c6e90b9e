"""Argument normalisation and validation, to torch's letter.

Every public op checks its arguments here before any kernel runs, so that a
bad argument fails the same way on every backend: with the exception type
torch raises, and a message that contains torch's own wording (so code and
tests that match torch's messages keep working) and names the argument.

The checks are ATen's, in ATen's order: ``ConvUtils.h``
(``check_shape_forward``) for the convolutions, ``Pool.h``
(``pool2d_shape_check``) for pooling. Output sizes are
``torchconv._output_size``'s, dtype rules ``torchconv._dtypes``'.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from ._dtypes import autocast_dtype, c10_name, check_pool_dtype, is_inexact, scalar_name
from ._output_size import conv_output_size, conv_transpose_output_size, pool_output_size
from ._torch_kernels import torch_cpu_convolves_with_onednn

__all__ = [
    "as_int",
    "check_types",
    "pair",
    "check_tensors",
    "check_conv_params",
    "check_conv_shapes",
    "pool_args",
    "check_pool",
]


def _is_int(value) -> bool:
    # bool is an int to Python but not to torch's int[] parser, which does
    # take 0-d integer tensors. A plain int is answered first: the ABC check
    # of numbers.Integral is slow, and this runs several times a call
    # (benchmarks/bench_overhead.py measures the Python path's overhead).
    if type(value) is int:
        return True
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.dtype.is_floating_point and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def as_int(value):
    """A 0-d integer tensor as a Python int; anything else as it is."""
    return int(value) if isinstance(value, torch.Tensor) else value


def check_types(op: str, ints=(), int_lists=(), bools=(), optional_ints=()) -> None:
    """Rejects wrongly typed arguments first, as torch's argument parser does.

    Each group holds (name, value) pairs: ``ints`` must be ints, ``int_lists``
    ints or sequences of ints (of any length: lengths are checked later, with
    torch's RuntimeErrors), ``bools`` bools, ``optional_ints`` ints or None.
    """
    for name, value in ints:
        if not _is_int(value):
            raise TypeError(f"{op}(): argument '{name}' must be int, not {type(value).__name__}")
    for name, value in optional_ints:
        if value is not None and not _is_int(value):
            raise TypeError(f"{op}(): argument '{name}' must be int or None, not {type(value).__name__}")
    for name, value in bools:
        if not isinstance(value, bool):
            raise TypeError(f"{op}(): argument '{name}' must be bool, not {type(value).__name__}")
    for name, value in int_lists:
        if _is_int(value) or _plain_pair(value) is not None:
            continue
        if isinstance(value, (str, torch.Tensor)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{op}(): argument '{name}' must be an int or a tuple of ints, but got {type(value).__name__}"
            )
        for item in value:
            if not _is_int(item):
                raise TypeError(
                    f"{op}(): argument '{name}' must be an int or a tuple of ints, "
                    f"but got an element of type {type(item).__name__}: {value!r}"
                )


def _plain_pair(value):
    """[a, b] for a plain int or a tuple or list of two plain ints (the common
    spellings of a size argument, taken without the general checks), else None."""
    kind = type(value)
    if kind is int:
        return [value, value]
    if (kind is tuple or kind is list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return [value[0], value[1]]
    return None


def pair(value, name: str, op: str, message: str | None = None) -> list[int]:
    """Expands an int, or a sequence of one or two ints, to a list of two ints.

    Torch accepts ``2``, ``(2,)`` and ``(2, 3)`` for every 2-d size argument;
    anything else is a TypeError (wrong type) or a RuntimeError (wrong length,
    with ``message`` when torch has a specific one for this argument).
    """
    plain = _plain_pair(value)
    if plain is not None:
        return plain
    if _is_int(value):
        return [as_int(value)] * 2
    if isinstance(value, torch.Tensor) or not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            f"{op}(): argument '{name}' must be an int or a tuple of two ints, "
            f"but got {type(value).__name__}"
        )
    items = [as_int(item) for item in value]
    for item in items:
        if not _is_int(item):
            raise TypeError(
                f"{op}(): argument '{name}' must be an int or a tuple of two ints, "
                f"but got an element of type {type(item).__name__}: {value!r}"
            )
    if len(items) == 1:
        return items * 2
    if len(items) != 2:
        raise RuntimeError(
            message
            or f"{op}: expected {name} to be a single integer value or a list of 2 values "
            f"to match the convolution dimensions, but got {name}={items}"
        )
    return items


def check_tensors(op: str, input, weight, bias) -> None:
    """Types, dtypes and devices of conv inputs; dimensions of input and weight."""
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(t).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{op}(): argument 'bias' must be Tensor or None, not {type(bias).__name__}")
    if weight.dim() != 4:
        raise RuntimeError(
            f"{op}: expected a 4-dimensional weight, but got weight of size {list(weight.shape)} "
            f"(Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight "
            f"{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
            f"{list(input.shape)} instead)"
        )
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to {op}, "
            f"but got input of size: {list(input.shape)}"
        )
    _check_same_kind(op, input, "weight", weight)
    if bias is not None:
        _check_same_kind(op, input, "bias", bias)


def _check_same_kind(op: str, input: torch.Tensor, name: str, other: torch.Tensor) -> None:
    if other.dtype == input.dtype and other.device == input.device:
        return  # the common case: autocast maps equal dtypes on one device alike
    input_dtype, other_dtype = autocast_dtype(input), autocast_dtype(other)
    if name == "weight" and other_dtype != input_dtype and not (is_inexact(input_dtype) and is_inexact(other_dtype)):
        # torch's integer convolution kernels word a weight of another dtype so.
        raise RuntimeError(
            f"{op}: expected scalar type {scalar_name(input_dtype)} but found {scalar_name(other_dtype)}"
        )
    if other_dtype != input_dtype:
        raise RuntimeError(
            f"{op}: Input type ({c10_name(input_dtype)}) and {name} type ({c10_name(other_dtype)}) "
            f"should be the same"
        )
    if other.device != input.device:
        raise RuntimeError(
            f"{op}: Input and {name} should be on the same device, but got input on "
            f"{input.device} and {name} on {other.device}"
        )


def check_conv_params(op: str, stride, padding, dilation, groups, output_padding=None, input_is_empty=False) -> None:
    """Sign checks on conv arguments, in the order ATen makes them (types were
    checked first, by check_types). Torch lets a zero dilation through when
    the input has no elements (``input_is_empty``): nothing reads it."""
    if (
        groups > 0 and min(padding) >= 0 and min(stride) > 0 and min(dilation) > 0
        and (output_padding is None or min(output_padding) >= 0)
    ):
        return  # all fine: the checks below only say what is wrong, in ATen's order
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported, but got groups={groups}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"{op}: negative padding is not supported, but got padding={padding}")
    if output_padding is not None and any(p < 0 for p in output_padding):
        raise RuntimeError(
            f"{op}: negative output_padding is not supported, but got output_padding={output_padding}"
        )
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{op}: non-positive stride is not supported, but got stride={stride}")
    if any(d < 0 or (d == 0 and not input_is_empty) for d in dilation):
        raise RuntimeError(
            f"{op}: dilation should be greater than zero, but got dilation={dilation}"
        )


def check_conv_shapes(
    op: str, input, weight, bias, stride, padding, dilation, groups, output_padding=None
) -> list[int]:
    """Channel, group, bias and size checks; returns the output size (N, C, H, W).

    ``output_padding`` is None for conv2d and a pair for conv_transpose2d.
    ``input`` is 4-d here (unbatched inputs are given a batch dimension first).
    """
    # Unrolled over the two spatial axes, the messages' lists built only on
    # failure: this runs at every call of the Python path.
    transposed = output_padding is not None
    w0, w1, kh, kw = weight.shape
    n, c, h, w = input.shape
    if w0 < groups:
        raise RuntimeError(
            f"{op}: Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {list(weight.shape)} instead"
        )
    if w0 % groups != 0:
        raise RuntimeError(
            f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size {list(weight.shape)} instead"
        )
    in_channels = w0 if transposed else w1 * groups
    out_channels = w1 * groups if transposed else w0
    if c != in_channels:
        prefix = "Given transposed=1" if transposed else f"Given groups={groups}"
        raise RuntimeError(
            f"{op}: {prefix}, weight of size {list(weight.shape)}, expected input{list(input.shape)} to have "
            f"{in_channels} channels, but got {c} channels instead"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        prefix = "Given transposed=1, weight" if transposed else "Given weight"
        raise RuntimeError(
            f"{op}: {prefix} of size {list(weight.shape)}, expected bias to be 1-dimensional with "
            f"{out_channels} elements, but got bias of size {list(bias.shape)} instead"
        )
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    if transposed:
        _check_nonempty_planes(op, input)
        # Torch skips these two checks for an input without elements: its
        # output is empty whatever they say, as long as no size is negative.
        empty = n == 0 or c == 0 or h == 0 or w == 0
        oh, ow = output_padding
        if not empty and ((oh >= sh and oh >= dh) or (ow >= sw and ow >= dw)):
            raise RuntimeError(
                f"{op}: output padding must be smaller than either stride or dilation, but got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
        out_h = conv_transpose_output_size(h, kh, sh, ph, oh, dh)
        out_w = conv_transpose_output_size(w, kw, sw, pw, ow, dw)
        zero_size = not empty and (out_h == 0 or out_w == 0)
        if out_h < 0 or out_w < 0 or (zero_size and not torch_cpu_convolves_with_onednn(
                input, weight, stride, dilation, groups, output_padding)):
            raise RuntimeError(
                f"{op}: Given input size per channel: ({h} x {w}). Calculated "
                f"output size per channel: ({out_h} x {out_w}). Output size is too small"
            )
    else:
        padded_h, padded_w = h + 2 * ph, w + 2 * pw
        effective_h, effective_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if padded_h < effective_h or padded_w < effective_w:
            raise RuntimeError(
                f"{op}: Calculated padded input size per channel: ({padded_h} x {padded_w}). "
                f"Kernel size: ({effective_h} x {effective_w}). Kernel size can't be greater "
                f"than actual input size"
            )
        _check_nonempty_planes(op, input)
        out_h = conv_output_size(h, kh, sh, ph, dh)
        out_w = conv_output_size(w, kw, sw, pw, dw)
    return [n, out_channels, out_h, out_w]


def _check_nonempty_planes(op: str, input) -> None:
    # An empty batch or channel set is fine (an empty result); empty planes are not.
    if input.shape[0] != 0 and input.shape[1] != 0 and 0 in input.shape[2:]:
        raise RuntimeError(
            f"{op}: Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{list(input.shape)}"
        )


# torch's wording of a pooling size argument of the wrong length.
_POOL_LENGTH_MESSAGES = {
    "kernel_size": "{op}: kernel_size must either be a single int, or a tuple of two ints",
    "stride": "{op}: stride must either be omitted, a single int, or a tuple of two ints",
    "padding": "{op}: padding must either be a single int, or a tuple of two ints",
    "dilation": "{op}: dilation must be either a single int, or a tuple of two ints",
}


def _pool_pair(value, name: str, op: str) -> list[int]:
    # Plain ints and pairs first: the message is only formatted for the others.
    plain = _plain_pair(value)
    if plain is not None:
        return plain
    return pair(value, name, op, _POOL_LENGTH_MESSAGES[name].format(op=op))


def pool_args(op: str, kernel_size, stride, padding, dilation=1):
    """Normalises pooling size arguments; an omitted stride is the kernel size."""
    kernel = _pool_pair(kernel_size, "kernel_size", op)
    if stride is None or (type(stride) is not int and isinstance(stride, Sequence) and len(stride) == 0):
        strides = list(kernel)
    else:
        strides = _pool_pair(stride, "stride", op)
    pads = _pool_pair(padding, "padding", op)
    dilations = _pool_pair(dilation, "dilation", op)
    return kernel, strides, pads, dilations


def check_pool(op: str, input, kernel, stride, padding, dilation, ceil_mode) -> None:
    """Pooling checks in ATen's order."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if op == "avg_pool2d" and input.dim() < 3:
        # torch's avg_pool2d indexes dimension -3 before any check: an IndexError.
        raise IndexError(
            f"{op}: Dimension out of range: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
            f"but got input of size {list(input.shape)}"
        )
    def shape_error() -> RuntimeError:
        return RuntimeError(
            f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
            f"but got: {list(input.shape)}"
        )

    if input.dim() not in (3, 4):
        if op == "max_pool2d":  # torch's max_pool2d words a wrong rank so
            raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, but got: {list(input.shape)}")
        raise shape_error()
    height, width = input.shape[-2:]
    out_h = pool_output_size(height, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    out_w = pool_output_size(width, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if kernel[0] <= 0 or kernel[1] <= 0:
        raise RuntimeError(
            f"{op}: kernel size should be greater than zero, but got kH: {kernel[0]} kW: {kernel[1]}"
        )
    if stride[0] <= 0 or stride[1] <= 0:
        raise RuntimeError(
            f"{op}: stride should be greater than zero, but got dH: {stride[0]} dW: {stride[1]}"
        )
    if dilation[0] <= 0 or dilation[1] <= 0:
        raise RuntimeError(
            f"{op}: dilation should be greater than zero, but got dilationH: {dilation[0]} "
            f"dilationW: {dilation[1]}"
        )
    if 0 in input.shape[-3:]:
        raise shape_error()
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise RuntimeError(
            f"{op}: pad should be smaller than or equal to half of kernel size, but got "
            f"padW = {padding[1]}, padH = {padding[0]}, kW = {kernel[1]}, kH = {kernel[0]}"
        )
    if out_h < 1 or out_w < 1:
        channels = input.shape[-3]
        raise RuntimeError(
            f"{op}: Given input size: ({channels}x{height}x{width}). Calculated output size: "
            f"({channels}x{out_h}x{out_w}). Output size is too small"
        )
    check_pool_dtype(op, input)
