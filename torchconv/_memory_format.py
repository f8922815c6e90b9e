"""Memory formats: which one torch gives every result, and how a result gets it.

A *memory format* is the order in which a 4-d tensor's dimensions lie in
memory: ``torch.contiguous_format`` (N, C, H, W) or ``torch.channels_last``
(N, H, W, C). (A ``torch.layout``, strided or sparse, is another thing: every
tensor here is strided.) Torch reads a tensor's memory format off its strides
and gives the result of a convolution or a pooling the memory format of its
operands, with the exact strides of a fresh tensor, size-1 dimensions
included, since the next op reads its own memory format off those. torchconv
gives every result the same memory format and strides; the rules are here:

* :func:`memory_format_of`: the memory format a tensor suggests (ATen's
  ``suggest_memory_format``); pooling results and gradients take their
  operand's;
* :func:`conv_memory_format`: the memory format of a convolution's result
  and of its gradients, from both operands;
* :func:`dense_strides` and :func:`in_memory_format`: the strides of a
  fresh tensor, and a tensor given them.

The op bodies (``torchconv._library``) and the autograd formulas
(``torchconv._autograd``) apply them; a backend whose compiled kernels
apply them already says so (``MEMORY_FORMAT_DTYPES``, see
``torchconv.backends.cpp``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "memory_format_of",
    "conv_memory_format",
    "output_padding_is_big",
    "dense_strides",
    "in_memory_format",
    "with_format_strides",
    "conv_grads_in_memory_format",
]


def memory_format_of(tensor: Tensor) -> torch.memory_format:
    """Python twin of ATen's ``Tensor::suggest_memory_format`` for 4-d tensors.

    Torch gives the output of a convolution or a pooling the memory format
    its input suggests; this is the rule it uses to read one off the strides
    (``is_channels_last_strides_2d_s4`` in c10), ambiguous cases falling back
    to contiguous.
    """
    if tensor.dim() != 4 or tensor.layout != torch.strided:
        return torch.contiguous_format
    n, c, h, w = tensor.shape
    sn, sc, sh, sw = tensor.stride()
    # The dimensions in the order (1, 3, 2, 0), unrolled: each stride at
    # least the extent of the one before, no size zero, and the batch stride
    # not equal to the channel stride's extent (an ambiguous memory format).
    if sc == 0 or c == 0 or w == 0 or h == 0 or n == 0:
        return torch.contiguous_format
    smallest = sc * (c if c > 1 else 1)
    if sw < smallest:
        return torch.contiguous_format
    smallest = sw * (w if w > 1 else 1)
    if sh < smallest:
        return torch.contiguous_format
    smallest = sh * (h if h > 1 else 1)
    if sn < smallest or smallest == sc:
        return torch.contiguous_format
    return torch.channels_last


def conv_memory_format(a: Tensor, b: Tensor, slow_transposed: bool = False) -> torch.memory_format:
    """The memory format torch gives a convolution's output (and gradients)
    for operands ``a``, ``b``.

    Channels_last if either operand is, as torch's CPU kernels and cuDNN do,
    except on CUDA where torch runs float64 contiguously
    (``cudnn_conv_suggest_memory_format``) and a transposed convolution with
    ``output_padding >= stride`` (``slow_transposed``, see
    :func:`output_padding_is_big`) on its contiguous-only fallback kernel.
    """
    if a.device.type == "cuda" and (torch.float64 in (a.dtype, b.dtype) or slow_transposed):
        return torch.contiguous_format
    if memory_format_of(a) == torch.channels_last or memory_format_of(b) == torch.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def output_padding_is_big(stride: Sequence[int], output_padding: Sequence[int]) -> bool:
    """ATen's ``is_output_padding_big``: cuDNN cannot run such a transposed
    convolution, and torch's fallback kernel is contiguous-only."""
    return any(o >= s for o, s in zip(output_padding, stride))


def dense_strides(shape: Sequence[int], memory_format: torch.memory_format) -> tuple[int, ...]:
    """The strides ``torch.empty(shape, memory_format=memory_format)`` gets."""
    if len(shape) == 4:  # every op's tensors: unrolled (runs several times a call)
        n, c, h, w = shape
        if memory_format == torch.channels_last:
            return (h * w * c, 1, w * c, c)
        w = w if w > 1 else 1
        hw = (h if h > 1 else 1) * w
        return (hw * (c if c > 1 else 1), hw, w, 1)
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def in_memory_format(tensor: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``tensor`` with exactly the strides torch gives a fresh tensor in
    ``memory_format`` (size-1 dimensions included, since the next op reads
    its memory format off them); returned as is when it has them already."""
    if tensor.stride() == dense_strides(tensor.shape, memory_format):
        return tensor
    return tensor.clone(memory_format=memory_format)


def with_format_strides(tensor: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``tensor`` viewed with the strides of a fresh tensor in channels_last
    ``memory_format`` when its elements already lie in that order (only the
    strides of size-1 dimensions differ, as a 1x1 weight's do): a view the
    kernels read the format off (:func:`memory_format_of`). A backward's
    incoming gradient may suggest no format (the gradient of a sum is
    expanded, every stride 0), so its kernels learn the format of the
    gradients torch gives from the weight. Otherwise ``tensor`` itself."""
    if memory_format != torch.channels_last or tensor.dim() != 4:
        return tensor
    if not tensor.is_contiguous(memory_format=memory_format):
        return tensor
    strides = dense_strides(tensor.shape, memory_format)
    return tensor if tensor.stride() == strides else tensor.as_strided(tensor.shape, strides, tensor.storage_offset())


def conv_grads_in_memory_format(
    input: Tensor,
    weight: Tensor,
    grad_input: Optional[Tensor],
    grad_weight: Optional[Tensor],
    slow_transposed: bool = False,
    native: bool = False,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """A convolution's input and weight gradients (either may be None) in the
    memory format torch's convolutions give them (:func:`conv_memory_format`
    of the forward's operands), whatever the memory format of the incoming
    gradient. Complex gradients are contiguous whatever the operands: torch
    computes a complex convolution as real ones on ``view_as_real`` views,
    and the gradients leave through that view's backward as fresh
    contiguous tensors (its forward result keeps the operands' format).

    ``native``: torch ran the convolution on a kernel that keeps the
    weight's layout (``_torch_kernels.torch_keeps_weight_layout``): the weight
    gradient then has the weight's own strides when the weight is already
    laid out in that memory format (which a 1x1 weight is in both, whatever
    its strides), where other kernels give the format's fresh strides."""
    if input.is_complex():
        memory_format = torch.contiguous_format
    else:
        memory_format = conv_memory_format(input, weight, slow_transposed)
    grad_input = None if grad_input is None else in_memory_format(grad_input, memory_format)
    if grad_weight is not None:
        if native and not input.is_complex() and weight.is_contiguous(memory_format=memory_format):
            if grad_weight.stride() != weight.stride():
                grad_weight = torch.empty_like(weight, dtype=grad_weight.dtype).copy_(grad_weight)
        else:
            grad_weight = in_memory_format(grad_weight, memory_format)
    return grad_input, grad_weight
