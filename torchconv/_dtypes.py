"""Dtype rules: how torch names a dtype in its messages, the dtype autocast
gives a convolution operand, and which dtypes torch's CPU kernels compute.

Torch's CPU kernels compute floating point and complex convolutions
everywhere; integer convolutions only where torch has an integer kernel
(conv2d without dilation for every integer type, with dilation and
transposed for int64 alone); max pooling of every real dtype; average
pooling of floating point and int64. They refuse the others with a
NotImplementedError naming the kernel torch picked, and so do we.
"""

from __future__ import annotations

import torch

__all__ = [
    "autocast_dtype",
    "is_inexact",
    "c10_name",
    "scalar_name",
    "check_conv_dtype",
    "check_pool_dtype",
]


def autocast_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a convolution operand has once autocast has cast it: under
    ``torch.autocast`` for its device, a floating-point tensor other than
    float64 takes autocast's dtype (the cast itself is done by the ops'
    autocast rule, ``torchconv._library``); otherwise its own dtype."""
    dtype = tensor.dtype
    if dtype.is_floating_point and dtype != torch.float64 and torch.is_autocast_enabled(tensor.device.type):
        return torch.get_autocast_dtype(tensor.device.type)
    return dtype


def is_inexact(dtype: torch.dtype) -> bool:
    """Floating point or complex."""
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


def c10_name(dtype: torch.dtype) -> str:
    """torch's C++ type name of a dtype ("float", "c10::Half", ...), as its
    convolutions' dtype-mismatch messages give it."""
    return _DTYPE_NAMES.get(dtype, (str(dtype)[len("torch.") :],))[0]


def scalar_name(dtype: torch.dtype) -> str:
    """torch's ScalarType name of a dtype ("Float", "Long", ...), as its kernels' messages give it."""
    names = _DTYPE_NAMES.get(dtype)
    return names[1] if names else str(dtype)[len("torch.") :]


def _not_implemented(kernel: str, dtype: torch.dtype) -> NotImplementedError:
    return NotImplementedError(f'"{kernel}" not implemented for \'{scalar_name(dtype)}\'')


def check_conv_dtype(input, dilation, transposed: bool) -> None:
    """Raises torch's NotImplementedError for a dtype its CPU convolutions do
    not compute. An input without elements is never computed, so never refused."""
    dtype = input.dtype
    if dtype.is_floating_point or dtype.is_complex:
        return  # computed (autocast only maps floating point to floating point)
    dtype = autocast_dtype(input)
    if is_inexact(dtype) or dtype == torch.int64 or input.numel() == 0:
        return
    if transposed:
        raise _not_implemented("slow_conv_transpose2d_out_cpu", dtype)
    if dtype == torch.bool:
        raise _not_implemented("slow_conv2d_cpu", dtype)
    if any(d != 1 for d in dilation):
        raise _not_implemented("slow_conv_dilated<>", dtype)


def check_pool_dtype(op: str, input) -> None:
    """Raises torch's NotImplementedError for a dtype its pooling kernel ``op`` does not compute."""
    dtype = input.dtype
    if dtype == torch.bool or dtype.is_complex:
        raise _not_implemented(op, dtype)
    if op == "avg_pool2d" and not dtype.is_floating_point and dtype != torch.int64:
        raise _not_implemented(op, dtype)
