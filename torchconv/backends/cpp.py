"""The C++ CPU backend: kernels compiled from csrc/ into ``torchconv._C``.

Importing ``torchconv._C`` registers the ``torchconv_cpp::`` ops (schemas in
csrc/ops.cpp, CPU kernels in csrc/cpu/). If the extension was not built, or
fails to load, this backend reports itself unavailable and the reference
backend runs instead; ``import torchconv`` never fails because of it.

The compiled kernels take float32 and float64; other floating dtypes
(float16, bfloat16) run on the reference kernels.
"""

from __future__ import annotations

import torch

from . import reference

try:
    from .. import _C  # noqa: F401  (loads the library that registers the ops)

    LOAD_ERROR: Exception | None = None
except (ImportError, OSError) as error:  # not built, or built against another torch
    LOAD_ERROR = error

HOW_TO_ENABLE = (
    "Build it with `pip install --no-build-isolation -e .` from the repository root "
    "(needs g++ and torch==2.13.0)."
)
_COMPILED_DTYPES = (torch.float32, torch.float64)


def is_available() -> bool:
    return LOAD_ERROR is None


def _ops():
    return torch.ops.torchconv_cpp


def conv2d(input, weight, bias, stride, padding, dilation, groups):
    if input.dtype not in _COMPILED_DTYPES:
        return reference.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return _ops().conv2d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    if input.dtype not in _COMPILED_DTYPES:
        return reference.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _ops().conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups):
    if input.dtype not in _COMPILED_DTYPES:
        return reference.conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups)
    return _ops().conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups)


def max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    if input.dtype not in _COMPILED_DTYPES:
        return reference.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _ops().max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_backward(grad_output, indices, input_size):
    if grad_output.dtype not in _COMPILED_DTYPES:
        return reference.max_pool2d_backward(grad_output, indices, input_size)
    return _ops().max_pool2d_backward(grad_output, indices, input_size)


def avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if input.dtype not in _COMPILED_DTYPES:
        return reference.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _ops().avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if grad_output.dtype not in _COMPILED_DTYPES:
        return reference.avg_pool2d_backward(
            grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )
    return _ops().avg_pool2d_backward(
        grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
