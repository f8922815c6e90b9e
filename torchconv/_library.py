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
then gives its output the memory format torch would
(``torchconv._memory_format``: channels_last in, channels_last out). Each has
a fake kernel so that ``torch.compile`` and ``torch.export`` trace through it
without running it. :data:`OPS` is the one table of the ops: each one's fake
kernel, and whether autocast casts its operands; whatever is done for every
op (fake kernels here and for the compiled ``torchconv_cpp::`` ops, autograd
formulas in ``torchconv._autograd``, batching rules in ``torchconv._vmap``)
starts from it. The ops take 4-d tensors and validated arguments: the public
functions in ``torchconv.functional`` check and normalise first.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from . import backends
from ._dtypes import autocast_dtype
from ._output_size import conv_output_hw, conv_transpose_output_hw, pool_output_hw
from ._memory_format import conv_memory_format, in_memory_format, memory_format_of, output_padding_is_big

__all__ = [
    "Op",
    "OPS",
    "AUTOCAST_OPS",
    "autocast_operands",
    "call",
    # the ops themselves (torchconv::<name>)
    "conv2d",
    "conv_transpose2d",
    "conv2d_weight",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


def _owned(out: Tensor) -> Tensor:
    """``out`` as a tensor of its own, never a view.

    A kernel may return a view of a buffer it made (a reshape of a GEMM's
    result, a slice of col2im's padded canvas). Autograd treats an op's view
    output as aliasing that buffer and then refuses in-place ops on it
    ("Output 0 of ... is a view and is being modified inplace"), which breaks
    ``nn.ReLU(inplace=True)`` after a layer. ``detach()`` drops the view
    relation without copying; the buffer is referenced by nothing else.
    """
    return out.detach() if out._is_view() else out


# ------------------------------------------------------------------ dispatch
#
# An eager call on plain tensors needs nothing from the dispatcher that the op's
# Python body does not do itself, and the dispatcher's Python custom-op path
# is a large part of a small call's time (benchmarks/bench_overhead.py
# measures the overhead), and its first call imports torch._dynamo. So the
# autograd Functions call the body directly (``call``), and
# go through the op whenever something is watching the dispatcher: a
# TorchDispatchMode (FlopCounterMode, FakeTensorMode, ...), a tensor subclass,
# a torch.func transform, a meta tensor, or the profiler (whose tables then
# name torchconv::conv2d and the other ops).

_BODIES: dict = {}
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def _custom_op(name: str):
    """``torch.library.custom_op(name)``, remembering the op's Python body for :func:`call`."""

    def define(body):
        op = torch.library.custom_op(name, body, mutates_args=())
        _BODIES[op] = body
        return op

    return define


def _dispatcher_watched() -> bool:
    """Whether a dispatch mode, a torch.func transform or the profiler is active."""
    return bool(
        torch._C._len_torch_dispatch_stack()
        or torch._C._are_functorch_transforms_active()
        or torch._C._autograd._profiler_enabled()
    )


def _plain(args) -> bool:
    """Whether every tensor in ``args`` is an ordinary CPU or CUDA tensor and no
    dispatch mode, torch.func transform or profiler is active."""
    if _dispatcher_watched():
        return False
    for a in args:
        if isinstance(a, Tensor) and (type(a) not in _PLAIN_TYPES or a.is_meta):
            return False
    return True


def call(op, *args):
    """``op(*args)``: its body run directly when nothing needs the dispatcher (see above)."""
    if _plain(args):
        return _BODIES[op](*args)
    return op(*args)


def _formatted_by(kernels, first: Tensor) -> bool:
    """Whether the outputs of ``kernels`` for operands like ``first`` come
    in the memory format torch gives them already, strides included (a
    backend's ``MEMORY_FORMAT_DTYPES``: the dtypes its compiled kernels take,
    which choose the memory format as torch does), so that the
    ``in_memory_format`` pass, a third of a tiny call's Python time, can be
    skipped."""
    return first.dtype in getattr(kernels, "MEMORY_FORMAT_DTYPES", ())


def _empty(like: Tensor, shape, memory_format, dtype=None) -> Tensor:
    return torch.empty(
        shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format
    )


# ----------------------------------------------------------------------- conv
#
# The convolution kernels are real. Each convolution is bilinear in its two
# tensor operands, so a complex one is three real ones (Gauss's trick, as
# ATen's complex convolution does): with a = ar + i ai and b = br + i bi,
#   k1 = f(ar + ai, br),  k2 = f(ar, bi - br),  k3 = f(ai, br + bi),
#   f(a, b) = (k1 - k3) + i (k1 + k2).


def _bilinear(product, a: Tensor, b: Tensor) -> Tensor:
    """``product(a, b)`` for a real-bilinear ``product``, real or complex operands."""
    if not a.is_complex():
        return product(a, b)
    a, b = a.resolve_conj(), b.resolve_conj()
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    k1 = product(ar + ai, br)
    k2 = product(ar, bi - br)
    k3 = product(ai, br + bi)
    return torch.complex(k1 - k3, k1 + k2)


def _conv_with_bias(kernel, input, weight, bias, *args) -> Tensor:
    """``kernel(input, weight, bias, *args)``; complex operands through ``_bilinear``, the bias added after."""
    if not input.is_complex():
        return kernel(input, weight, bias, *args)
    out = _bilinear(lambda x, w: kernel(x, w, None, *args), input, weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


@_custom_op("torchconv::conv2d")
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    kernels = backends.kernels(input.device)
    if _formatted_by(kernels, input):
        return _owned(kernels.conv2d(input, weight, bias, stride, padding, dilation, groups))
    out = _conv_with_bias(kernels.conv2d, input, weight, bias, stride, padding, dilation, groups)
    return _owned(in_memory_format(out, conv_memory_format(input, weight)))


def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    spatial = conv_output_hw(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _empty(input, (input.shape[0], weight.shape[0], *spatial), conv_memory_format(input, weight))


@_custom_op("torchconv::conv_transpose2d")
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
    kernels = backends.kernels(input.device)
    if _formatted_by(kernels, input):
        return _owned(kernels.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation))
    out = _conv_with_bias(
        kernels.conv_transpose2d, input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return _owned(in_memory_format(out, conv_memory_format(input, weight, output_padding_is_big(stride, output_padding))))


def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    spatial = conv_transpose_output_hw(input.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    memory_format = conv_memory_format(input, weight, output_padding_is_big(stride, output_padding))
    return _empty(input, (input.shape[0], weight.shape[1] * groups, *spatial), memory_format)


@_custom_op("torchconv::conv2d_weight")
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
    kernels = backends.kernels(input.device)
    size = list(weight_size)
    if _formatted_by(kernels, input):
        return _owned(kernels.conv2d_weight(input, grad_output, size, stride, padding, dilation, groups))
    out = _bilinear(lambda x, g: kernels.conv2d_weight(x, g, size, stride, padding, dilation, groups), input, grad_output)
    return _owned(in_memory_format(out, conv_memory_format(input, grad_output)))


def _conv2d_weight_fake(input, grad_output, weight_size, stride, padding, dilation, groups):
    return _empty(input, weight_size, conv_memory_format(input, grad_output))


# ----------------------------------------------------------------------- pool


def _pool_result(kernels, operand: Tensor, out: Tensor) -> Tensor:
    """A pooling kernel's ``out`` as the op returns it: never a view, and in
    the memory format of ``operand`` (the input, or the incoming gradient),
    as torch's poolings and their gradients are."""
    if _formatted_by(kernels, operand):
        return _owned(out)
    return _owned(in_memory_format(out, memory_format_of(operand)))


@_custom_op("torchconv::max_pool2d")
def max_pool2d(
    input: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[Tensor, Tensor]:
    kernels = backends.kernels(input.device)
    values, indices = kernels.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if _formatted_by(kernels, input):
        return _owned(values), _owned(indices)
    memory_format = memory_format_of(input)
    return _owned(in_memory_format(values, memory_format)), _owned(in_memory_format(indices, memory_format))


def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    spatial = pool_output_hw(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    shape, memory_format = (*input.shape[:2], *spatial), memory_format_of(input)
    return _empty(input, shape, memory_format), _empty(input, shape, memory_format, dtype=torch.int64)


@_custom_op("torchconv::max_pool2d_backward")
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
    kernels = backends.kernels(grad_output.device)
    out = kernels.max_pool2d_backward(grad_output, indices, list(input_size), kernel_size, stride, padding, dilation)
    return _pool_result(kernels, grad_output, out)


def _max_pool2d_backward_fake(grad_output, indices, input_size, kernel_size, stride, padding, dilation):
    return _empty(grad_output, (*grad_output.shape[:2], *input_size), memory_format_of(grad_output))


@_custom_op("torchconv::avg_pool2d")
def avg_pool2d(
    input: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Optional[int],
) -> Tensor:
    kernels = backends.kernels(input.device)
    out = kernels.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _pool_result(kernels, input, out)


def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    spatial = pool_output_hw(input.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    return _empty(input, (*input.shape[:2], *spatial), memory_format_of(input))


@_custom_op("torchconv::avg_pool2d_backward")
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
    kernels = backends.kernels(grad_output.device)
    out = kernels.avg_pool2d_backward(
        grad_output, list(input_size), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return _pool_result(kernels, grad_output, out)


def _avg_pool2d_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty(grad_output, (*grad_output.shape[:2], *input_size), memory_format_of(grad_output))


# ---------------------------------------------------------------------- table


class Op(NamedTuple):
    """One ``torchconv::`` op: a row of :data:`OPS`."""

    custom_op: torch._library.custom_ops.CustomOpDef
    #: Its output's shape, dtype and memory format, without running it; also
    #: the fake kernel of the compiled ``torchconv_cpp::`` op of the same name.
    fake: Callable
    #: Whether torch.autocast casts its operands (see :func:`autocast_operands`).
    autocast: bool = False


#: The ``torchconv::`` ops by name (the name of the backends' kernel each one
#: runs, too): the one list of them.
OPS: dict[str, Op] = {
    "conv2d": Op(conv2d, _conv2d_fake, autocast=True),
    "conv_transpose2d": Op(conv_transpose2d, _conv_transpose2d_fake, autocast=True),
    "conv2d_weight": Op(conv2d_weight, _conv2d_weight_fake),
    "max_pool2d": Op(max_pool2d, _max_pool2d_fake),
    "max_pool2d_backward": Op(max_pool2d_backward, _max_pool2d_backward_fake),
    "avg_pool2d": Op(avg_pool2d, _avg_pool2d_fake),
    "avg_pool2d_backward": Op(avg_pool2d_backward, _avg_pool2d_backward_fake),
}


def _register_fakes() -> None:
    """Gives every op its fake kernel, and the compiled ``torchconv_cpp::``
    ops (csrc/ops.cpp) the same ones: one definition of every output's shape
    and memory format for both."""
    compiled = backends.cpp.is_available()
    for name, entry in OPS.items():
        entry.custom_op.register_fake(entry.fake)
        if compiled:
            torch.library.register_fake(f"torchconv_cpp::{name}")(entry.fake)


# --------------------------------------------------------------------- autocast

# torch.autocast runs convolutions in its lower-precision dtype (they are on
# autocast's lower-precision list for CPU and CUDA) and pooling in the input's
# dtype (no rule: the dispatcher falls through). torch.library's own
# ``register_autocast`` fixes one target dtype per device, but autocast's dtype
# is the user's choice (bfloat16 or float16 on either device), so the rule is
# registered on the Autocast dispatch keys directly and reads it per call.

#: The ops whose operands autocast casts (``Op.autocast``).
AUTOCAST_OPS = frozenset(entry.custom_op for entry in OPS.values() if entry.autocast)


def autocast_operands(args) -> tuple:
    """``args`` as autocast gives them to a convolution: each tensor in the
    dtype ``_dtypes.autocast_dtype`` gives it (floating point but float64, on a
    device where autocast is on: autocast's dtype), everything else as is.
    ``.to`` is differentiable, so gradients come back in each operand's own
    dtype."""
    return tuple(a.to(autocast_dtype(a)) if isinstance(a, Tensor) else a for a in args)


def _autocast_rule(op, device_type: str):
    """The Autocast<device> kernel of ``op``: its operands cast
    (:func:`autocast_operands`), then ``op`` run with autocast off."""
    key = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, _autocast_key(device_type)))

    def rule(*args):
        args = autocast_operands(args)  # before the guard: it turns autocast off
        with torch._C._ExcludeDispatchKeyGuard(key):
            return op(*args)

    return rule


def _autocast_key(device_type: str) -> str:
    return "Autocast" + torch._C._dispatch_key_for_device(device_type)


def _register_autocast() -> None:
    for name, entry in OPS.items():
        if entry.autocast:
            for device_type in ("cpu", "cuda"):
                rule = _autocast_rule(entry.custom_op, device_type)
                torch.library.impl(f"torchconv::{name}", _autocast_key(device_type), rule)


_register_fakes()
_register_autocast()
