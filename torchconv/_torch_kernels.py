"""Which of torch's own kernels would run a convolution, where that changes
what torch returns.

Torch picks among several CPU kernels (oneDNN, its native slow_conv2d and
slow_conv_transpose2d, the dilated native one) by ATen's rules, and the
kernels differ in corners a drop-in must match: oneDNN returns an empty
output for a transposed convolution with a 0-size output side where the
others raise, and only the native kernels give a weight gradient the
weight's own strides. ``csrc/autograd/functions.cpp`` holds the C++ twins
of both rules for the compiled path.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["torch_cpu_convolves_with_onednn", "torch_keeps_weight_layout"]


def torch_cpu_convolves_with_onednn(input, weight, stride, dilation, groups, output_padding=None) -> bool:
    """Whether torch runs this CPU convolution with oneDNN (ATen's
    ``ConvParams::use_mkldnn``).

    The rule is ATen's, heuristics included: float32 (complex64 runs as
    float32 convolutions) unless the call is a tiny single-threaded one,
    bfloat16 and float16 where oneDNN has them on this CPU, nothing else;
    never a transposed convolution whose output_padding reaches its stride.
    ``output_padding`` is None for conv2d.
    """
    if input.device.type != "cpu" or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if output_padding is not None and any(o >= s for o, s in zip(output_padding, stride)):
        return False
    dtype = input.dtype
    if dtype in (torch.bfloat16, torch.float16):
        return _onednn_has(dtype)
    if dtype not in (torch.float32, torch.complex64):
        return False
    n, c, h, w = input.shape
    kh, kw = weight.shape[2:]
    strided_or_dilated = any(s != 1 for s in stride) or any(d != 1 for d in dilation)
    worth_it = strided_or_dilated or n >= 16 or kh != 1 or kw != 1 or torch.get_num_threads() > 1
    native_faster = not (groups > 1 or (kh > 3 and kw > 3) or n > 1 or n * c * h * w > 20480)
    return worth_it and not native_faster


@functools.cache
def _onednn_has(dtype: torch.dtype) -> bool:
    """Whether torch's oneDNN computes in half dtype ``dtype`` on this CPU (torch's own answer, asked once)."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def torch_keeps_weight_layout(input, weight, stride, dilation, groups, output_padding=None) -> bool:
    """Whether torch's kernel for this convolution gives the weight gradient
    the weight's own layout (its strides, where the weight is already laid
    out in the gradients' memory format): torch's native CPU kernels of the
    undilated conv2d (slow_conv2d) and of conv_transpose2d do; the dilated
    native conv2d, oneDNN and the other devices give fresh strides.
    ``output_padding`` is None for conv2d."""
    if input.device.type != "cpu" or (output_padding is None and any(d != 1 for d in dilation)):
        return False
    return not torch_cpu_convolves_with_onednn(input, weight, stride, dilation, groups, output_padding)
