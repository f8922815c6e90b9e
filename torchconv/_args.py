"""Argument normalisation, validation and output shapes, to torch's letter.

Every public op checks its arguments here before any kernel runs, so that a
bad argument fails the same way on every backend: with the exception type
torch raises, and a message that contains torch's own wording (so code and
tests that match torch's messages keep working) and names the argument.

The shape rules mirror ATen's ``ConvUtils.h`` (``check_shape_forward``) and
``Pool.h`` (``pooling_output_shape``, ``pool2d_shape_check``).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

__all__ = [
    "pair",
    "memory_format_of",
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
]


def _is_int(value) -> bool:
    # bool is an int to Python but not to torch's int[] parser, which does
    # take 0-d integer tensors.
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.dtype.is_floating_point and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def as_int(value):
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
        if _is_int(value):
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


def pair(value, name: str, op: str, message: str | None = None) -> list[int]:
    """Expands an int, or a sequence of one or two ints, to a list of two ints.

    Torch accepts ``2``, ``(2,)`` and ``(2, 3)`` for every 2-d size argument;
    anything else is a TypeError (wrong type) or a RuntimeError (wrong length,
    with ``message`` when torch has a specific one for this argument).
    """
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


def dense_strides(shape, memory_format: torch.memory_format) -> tuple[int, ...]:
    """The strides ``torch.empty(shape, memory_format=memory_format)`` gets."""
    if memory_format == torch.channels_last and len(shape) == 4:
        n, c, h, w = shape
        return (h * w * c, 1, w * c, c)
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def in_layout(tensor: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``tensor`` with exactly the strides torch gives a fresh tensor in
    ``memory_format`` (size-1 dimensions included, since the next op reads its
    layout off them); returned as is when it has them already."""
    strides = dense_strides(tensor.shape, memory_format)
    if tensor.stride() == strides:
        return tensor
    return tensor.clone(memory_format=memory_format)


def memory_format_of(tensor: torch.Tensor) -> torch.memory_format:
    """Python twin of ATen's ``Tensor::suggest_memory_format`` for 4-d tensors.

    Torch gives the output of a convolution or a pooling the layout its input
    suggests; this is the rule it uses to read a layout off the strides
    (``is_channels_last_strides_2d_s4`` in c10), ambiguous cases falling back
    to contiguous.
    """
    if tensor.dim() != 4 or tensor.layout != torch.strided:
        return torch.contiguous_format
    sizes, strides = tensor.shape, tensor.stride()
    if strides[1] == 0:
        return torch.contiguous_format
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return torch.contiguous_format
        if d == 0 and smallest == strides[1]:
            return torch.contiguous_format
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return torch.channels_last


def _trunc_div(a: int, b: int) -> int:
    """Integer division rounding toward zero, as C++ does it (ATen's checks rely on it)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# --------------------------------------------------------------------------- conv


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int
) -> int:
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


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


def autocast_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a convolution operand has once autocast has cast it: under
    ``torch.autocast`` for its device, a floating-point tensor other than
    float64 takes autocast's dtype (the cast itself is done by the ops'
    autocast rule, ``torchconv._library``); otherwise its own dtype."""
    dtype = tensor.dtype
    if dtype.is_floating_point and dtype != torch.float64 and torch.is_autocast_enabled(tensor.device.type):
        return torch.get_autocast_dtype(tensor.device.type)
    return dtype


def _check_same_kind(op: str, input: torch.Tensor, name: str, other: torch.Tensor) -> None:
    input_dtype, other_dtype = autocast_dtype(input), autocast_dtype(other)
    if name == "weight" and other_dtype != input_dtype and not (_is_inexact(input_dtype) and _is_inexact(other_dtype)):
        # torch's integer convolution kernels word a weight of another dtype so.
        raise RuntimeError(
            f"{op}: expected scalar type {scalar_name(input_dtype)} but found {scalar_name(other_dtype)}"
        )
    if other_dtype != input_dtype:
        raise RuntimeError(
            f"{op}: Input type ({_short(input_dtype)}) and {name} type ({_short(other_dtype)}) "
            f"should be the same"
        )
    if other.device != input.device:
        raise RuntimeError(
            f"{op}: Input and {name} should be on the same device, but got input on "
            f"{input.device} and {name} on {other.device}"
        )


def _is_inexact(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


# (C++ type name, ScalarType name): how torch's messages name a dtype.
_DTYPE_NAMES = {
    torch.float32: ("float", "Float"),
    torch.float64: ("double", "Double"),
    torch.float16: ("c10::Half", "Half"),
    torch.bfloat16: ("c10::BFloat16", "BFloat16"),
    torch.complex32: ("c10::complex<c10::Half>", "ComplexHalf"),
    torch.complex64: ("c10::complex<float>", "ComplexFloat"),
    torch.complex128: ("c10::complex<double>", "ComplexDouble"),
    torch.uint8: ("unsigned char", "Byte"),
    torch.int8: ("signed char", "Char"),
    torch.int16: ("short int", "Short"),
    torch.int32: ("int", "Int"),
    torch.int64: ("long int", "Long"),
    torch.bool: ("bool", "Bool"),
}


def _short(dtype: torch.dtype) -> str:
    """The name torch's messages give a dtype (its C++ scalar type)."""
    return _DTYPE_NAMES.get(dtype, (str(dtype)[len("torch.") :],))[0]


def scalar_name(dtype: torch.dtype) -> str:
    """torch's ScalarType name of a dtype ("Float", "Long", ...), as its kernels' messages give it."""
    names = _DTYPE_NAMES.get(dtype)
    return names[1] if names else str(dtype)[len("torch.") :]


# ------------------------------------------------------------------------ dtypes
#
# Which dtypes torch's CPU kernels compute, and how they refuse the others
# (NotImplementedError naming the kernel torch picked): floating point and
# complex convolutions everywhere; integer convolutions only where torch
# has an integer kernel (conv2d without dilation for every integer type,
# with dilation and transposed for int64 alone); max pooling of every real
# dtype; average pooling of floating point and int64.


def _not_implemented(kernel: str, dtype: torch.dtype) -> NotImplementedError:
    return NotImplementedError(f'"{kernel}" not implemented for \'{scalar_name(dtype)}\'')


def check_conv_dtype(input, dilation, transposed: bool) -> None:
    """Raises torch's NotImplementedError for a dtype its CPU convolutions do
    not compute. An input without elements is never computed, so never refused."""
    dtype = autocast_dtype(input)
    if _is_inexact(dtype) or dtype == torch.int64 or input.numel() == 0:
        return
    if transposed:
        raise _not_implemented("slow_conv_transpose2d_out_cpu", dtype)
    if dtype == torch.bool:
        raise _not_implemented("slow_conv2d_cpu", dtype)
    if any(d != 1 for d in dilation):
        raise _not_implemented("slow_conv_dilated<>", dtype)


def _check_pool_dtype(op: str, input) -> None:
    dtype = input.dtype
    if dtype == torch.bool or dtype.is_complex:
        raise _not_implemented(op, dtype)
    if op == "avg_pool2d" and not dtype.is_floating_point and dtype != torch.int64:
        raise _not_implemented(op, dtype)


def check_conv_params(op: str, stride, padding, dilation, groups, output_padding=None, input_is_empty=False) -> None:
    """Sign checks on conv arguments, in the order ATen makes them (types were
    checked first, by check_types). Torch lets a zero dilation through when
    the input has no elements (``input_is_empty``): nothing reads it."""
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
    transposed = output_padding is not None
    w_shape = list(weight.shape)
    if weight.shape[0] < groups:
        raise RuntimeError(
            f"{op}: Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {w_shape} instead"
        )
    if weight.shape[0] % groups != 0:
        raise RuntimeError(
            f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size {w_shape} instead"
        )
    in_channels = weight.shape[0] if transposed else weight.shape[1] * groups
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if input.shape[1] != in_channels:
        prefix = "Given transposed=1" if transposed else f"Given groups={groups}"
        raise RuntimeError(
            f"{op}: {prefix}, weight of size {w_shape}, expected input{list(input.shape)} to have "
            f"{in_channels} channels, but got {input.shape[1]} channels instead"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        prefix = "Given transposed=1, weight" if transposed else "Given weight"
        raise RuntimeError(
            f"{op}: {prefix} of size {w_shape}, expected bias to be 1-dimensional with "
            f"{out_channels} elements, but got bias of size {list(bias.shape)} instead"
        )
    kernel = w_shape[2:]
    spatial = list(input.shape[2:])
    if transposed:
        _check_nonempty_planes(op, input)
        # Torch skips these two checks for an input without elements: its
        # output is empty whatever they say, as long as no size is negative.
        empty = input.numel() == 0
        if not empty and any(op_ >= s and op_ >= d for op_, s, d in zip(output_padding, stride, dilation)):
            raise RuntimeError(
                f"{op}: output padding must be smaller than either stride or dilation, but got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
        out = [
            conv_transpose_output_size(n, k, s, p, o, d)
            for n, k, s, p, o, d in zip(spatial, kernel, stride, padding, output_padding, dilation)
        ]
        if any(o < 0 or (o == 0 and not empty) for o in out):
            raise RuntimeError(
                f"{op}: Given input size per channel: ({spatial[0]} x {spatial[1]}). Calculated "
                f"output size per channel: ({out[0]} x {out[1]}). Output size is too small"
            )
    else:
        padded = [n + 2 * p for n, p in zip(spatial, padding)]
        effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        if any(p < e for p, e in zip(padded, effective)):
            raise RuntimeError(
                f"{op}: Calculated padded input size per channel: ({padded[0]} x {padded[1]}). "
                f"Kernel size: ({effective[0]} x {effective[1]}). Kernel size can't be greater "
                f"than actual input size"
            )
        _check_nonempty_planes(op, input)
        out = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)]
    return [input.shape[0], out_channels, *out]


def _check_nonempty_planes(op: str, input) -> None:
    # An empty batch or channel set is fine (an empty result); empty planes are not.
    if input.shape[0] != 0 and input.shape[1] != 0 and 0 in input.shape[2:]:
        raise RuntimeError(
            f"{op}: Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{list(input.shape)}"
        )


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[list[int], list[int]]:
    """Padding for ``padding='same'``: (symmetric part, extra on the bottom/right).

    An even effective kernel needs one more row or column on one side; torch
    puts it at the end, and so do we.
    """
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return [t // 2 for t in total], [t % 2 for t in total]


# --------------------------------------------------------------------------- pool


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """ATen's ``pooling_output_shape``: with ceil_mode, the last window must start
    inside the input or its left padding."""
    if stride == 0:
        raise RuntimeError("stride should not be zero")
    if pad < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    if pad > _trunc_div((kernel - 1) * dilation + 1, 2):
        raise RuntimeError(
            f"pad should be at most half of effective kernel size, but got pad={pad}, "
            f"kernel_size={kernel} and dilation={dilation}"
        )
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_args(op: str, kernel_size, stride, padding, dilation=1):
    """Normalises pooling size arguments; an omitted stride is the kernel size."""
    kernel = pair(kernel_size, "kernel_size", op, f"{op}: kernel_size must either be a single int, or a tuple of two ints")
    if stride is None or (isinstance(stride, Sequence) and len(stride) == 0):
        strides = list(kernel)
    else:
        strides = pair(stride, "stride", op, f"{op}: stride must either be omitted, a single int, or a tuple of two ints")
    pads = pair(padding, "padding", op, f"{op}: padding must either be a single int, or a tuple of two ints")
    dilations = pair(dilation, "dilation", op, f"{op}: dilation must be either a single int, or a tuple of two ints")
    return kernel, strides, pads, dilations


def check_pool(op: str, input, kernel, stride, padding, dilation, ceil_mode) -> list[int]:
    """Pooling checks in ATen's order; returns the output size of a 4-d input."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if op == "avg_pool2d" and input.dim() < 3:
        # torch's avg_pool2d indexes dimension -3 before any check: an IndexError.
        raise IndexError(
            f"{op}: Dimension out of range: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
            f"but got input of size {list(input.shape)}"
        )
    shape_message = (
        f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
        f"but got: {list(input.shape)}"
    )
    if input.dim() not in (3, 4):
        if op == "max_pool2d":  # torch's max_pool2d words a wrong rank so
            raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, but got: {list(input.shape)}")
        raise RuntimeError(shape_message)
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
        raise RuntimeError(shape_message)
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
    _check_pool_dtype(op, input)
    return [*input.shape[:-2], out_h, out_w]
