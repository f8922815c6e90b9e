"""Output sizes of the ops, one spatial axis at a time and both at once.

The formulas are ATen's: ``ConvUtils.h`` for the convolutions and
``Pool.h``'s ``pooling_output_shape`` for pooling (whose ceil_mode rule,
that the last window must start inside the input or its left padding, and
whose padding checks live with it, as in ATen). ``csrc/window.h`` holds the
same three formulas for the compiled ops.
"""

from __future__ import annotations

from typing import Sequence

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
    "conv_output_hw",
    "conv_transpose_output_hw",
    "pool_output_hw",
    "same_padding",
]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int
) -> int:
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_output_hw(input_hw, kernel_hw, stride, padding, dilation) -> list[int]:
    """:func:`conv_output_size` along both spatial axes: ``[outH, outW]`` for
    an input of spatial size ``input_hw`` and a kernel of ``kernel_hw``."""
    return [conv_output_size(*axis) for axis in zip(input_hw, kernel_hw, stride, padding, dilation)]


def conv_transpose_output_hw(input_hw, kernel_hw, stride, padding, output_padding, dilation) -> list[int]:
    """:func:`conv_transpose_output_size` along both spatial axes."""
    return [
        conv_transpose_output_size(*axis)
        for axis in zip(input_hw, kernel_hw, stride, padding, output_padding, dilation)
    ]


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[list[int], list[int]]:
    """Padding for ``padding='same'``: (symmetric part, extra on the bottom/right).

    An even effective kernel needs one more row or column on one side; torch
    puts it at the end, and so do we.
    """
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return [t // 2 for t in total], [t % 2 for t in total]


def _trunc_div(a: int, b: int) -> int:
    """Integer division rounding toward zero, as C++ does it (ATen's checks rely on it)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


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


def pool_output_hw(input_hw, kernel, stride, padding, dilation, ceil_mode: bool) -> list[int]:
    """:func:`pool_output_size` along both spatial axes."""
    return [pool_output_size(*axis, ceil_mode) for axis in zip(input_hw, kernel, stride, padding, dilation)]
