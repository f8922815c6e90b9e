"""The ``torchconv::`` custom ops: schemas, backend dispatch and fake kernels.

Seven ops carry all the arithmetic of the package:

==========================  ==============================================
``conv2d``                  im2col + GEMM
``conv_transpose2d``        GEMM + col2im (also conv2d's input gradient)
``conv2d_weight``           weight gradient of both convolutions
``max_pool2d``              window maxima and their flat indices
``max_pool2d_backward``     scatter of gradients to those indices
``avg_pool2d``              window means
``avg_pool2d_backward``     adjoint of the window means
==========================  ==============================================

Each op runs the kernel of the backend in force (``torchconv.backends``),
then gives its output the layout torch would (channels_last in, channels_last
out). Each has a fake kernel so that ``torch.compile`` and ``torch.export``
trace through it without running it. Autograd formulas live in
``torchconv._autograd``. The ops take 4-d tensors and validated arguments: the
public functions in ``torchconv.functional`` check and normalise first.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import backends
from ._args import conv_output_size, conv_transpose_output_size, in_layout, memory_format_of, pool_output_size

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "conv2d_weight",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


def conv_layout(a: Tensor, b: Tensor, slow_transposed: bool = False) -> torch.memory_format:
    """The layout torch gives a convolution's output (and gradients) for operands ``a``, ``b``.

    Channels_last if either operand is, as torch's CPU kernels and cuDNN do,
    except on CUDA where torch runs float64 contiguously
    (``cudnn_conv_suggest_memory_format``) and a transposed convolution with
    ``output_padding >= stride`` (``slow_transposed``) on its contiguous-only
    fallback kernel.
    """
    if a.device.type == "cuda" and (torch.float64 in (a.dtype, b.dtype) or slow_transposed):
        return torch.contiguous_format
    if torch.channels_last in (memory_format_of(a), memory_format_of(b)):
        return torch.channels_last
    return torch.contiguous_format


def output_padding_is_big(stride, output_padding) -> bool:
    """ATen's ``is_output_padding_big``: cuDNN cannot run such a transposed convolution."""
    return any(o >= s for o, s in zip(output_padding, stride))


def _empty(like: Tensor, shape, memory_format, dtype=None) -> Tensor:
    return torch.empty(
        shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format
    )


# ----------------------------------------------------------------------- conv


@torch.library.custom_op("torchconv::conv2d", mutates_args=())
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    out = backends.kernels(input.device).conv2d(input, weight, bias, stride, padding, dilation, groups)
    return in_layout(out, conv_layout(input, weight))


@conv2d.register_fake
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    spatial = [
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    ]
    return _empty(input, (input.shape[0], weight.shape[0], *spatial), conv_layout(input, weight))


@torch.library.custom_op("torchconv::conv_transpose2d", mutates_args=())
def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
    dilation: Sequence[int],
) -> Tensor:
    out = backends.kernels(input.device).conv_transpose2d(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return in_layout(out, conv_layout(input, weight, output_padding_is_big(stride, output_padding)))


@conv_transpose2d.register_fake
def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    spatial = [
        conv_transpose_output_size(n, k, s, p, o, d)
        for n, k, s, p, o, d in zip(input.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    ]
    layout = conv_layout(input, weight, output_padding_is_big(stride, output_padding))
    return _empty(input, (input.shape[0], weight.shape[1] * groups, *spatial), layout)


@torch.library.custom_op("torchconv::conv2d_weight", mutates_args=())
def conv2d_weight(
    input: Tensor,
    grad_output: Tensor,
    weight_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """Gradient of ``conv2d(input, W)`` with respect to W, for ``grad_output``."""
    out = backends.kernels(input.device).conv2d_weight(
        input, grad_output, list(weight_size), stride, padding, dilation, groups
    )
    return in_layout(out, conv_layout(input, grad_output))


@conv2d_weight.register_fake
def _conv2d_weight_fake(input, grad_output, weight_size, stride, padding, dilation, groups):
    return _empty(input, weight_size, conv_layout(input, grad_output))


# ----------------------------------------------------------------------- pool


def _pool_spatial(input_size, kernel_size, stride, padding, dilation, ceil_mode):
    return [
        pool_output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(input_size, kernel_size, stride, padding, dilation)
    ]


@torch.library.custom_op("torchconv::max_pool2d", mutates_args=())
def max_pool2d(
    input: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[Tensor, Tensor]:
    values, indices = backends.kernels(input.device).max_pool2d(
        input, kernel_size, stride, padding, dilation, ceil_mode
    )
    layout = memory_format_of(input)
    return in_layout(values, layout), in_layout(indices, layout)


@max_pool2d.register_fake
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    spatial = _pool_spatial(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    shape, layout = (*input.shape[:2], *spatial), memory_format_of(input)
    return _empty(input, shape, layout), _empty(input, shape, layout, dtype=torch.int64)


@torch.library.custom_op("torchconv::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(
    grad_output: Tensor,
    indices: Tensor,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Gradient of max_pool2d's values: ``input_size`` is the input's (H, W);
    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are the
    forward's window, as in ``aten::max_pool2d_with_indices_backward``. The
    CPU kernels scatter to ``indices`` and need no window; a GPU kernel
    gathers per input pixel over the windows that can contain it
    (deterministic, no atomics), which needs it."""
    out = backends.kernels(grad_output.device).max_pool2d_backward(
        grad_output, indices, list(input_size), kernel_size, stride, padding, dilation
    )
    return in_layout(out, memory_format_of(grad_output))


@max_pool2d_backward.register_fake
def _max_pool2d_backward_fake(grad_output, indices, input_size, kernel_size, stride, padding, dilation):
    return _empty(grad_output, (*grad_output.shape[:2], *input_size), memory_format_of(grad_output))


@torch.library.custom_op("torchconv::avg_pool2d", mutates_args=())
def avg_pool2d(
    input: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Optional[int],
) -> Tensor:
    out = backends.kernels(input.device).avg_pool2d(
        input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return in_layout(out, memory_format_of(input))


@avg_pool2d.register_fake
def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    spatial = _pool_spatial(input.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    return _empty(input, (*input.shape[:2], *spatial), memory_format_of(input))


@torch.library.custom_op("torchconv::avg_pool2d_backward", mutates_args=())
def avg_pool2d_backward(
    grad_output: Tensor,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Optional[int],
) -> Tensor:
    """Gradient of avg_pool2d: ``input_size`` is the input's (H, W)."""
    out = backends.kernels(grad_output.device).avg_pool2d_backward(
        grad_output, list(input_size), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return in_layout(out, memory_format_of(grad_output))


@avg_pool2d_backward.register_fake
def _avg_pool2d_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty(grad_output, (*grad_output.shape[:2], *input_size), memory_format_of(grad_output))


def _register_compiled_fakes() -> None:
    """Gives the compiled ``torchconv_cpp::`` ops (csrc/ops.cpp) the same fake
    kernels: one definition of every output's shape and layout for both."""
    if not backends.cpp.is_available():
        return
    for name in __all__:
        torch.library.register_fake(f"torchconv_cpp::{name}")(globals()[f"_{name}_fake"])


_register_compiled_fakes()
