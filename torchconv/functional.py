"""The public functional ops, with ``torch.nn.functional``'s signatures.

Each function first offers the call to its compiled entry
(``torchconv._C``, when ``torchconv._eager.entries()`` allows it), which
takes the ordinary eager call of the cpp backend whole: checks, kernel and,
when an input requires grad, the C++ autograd Function. Every other call
takes the Python path: the function checks its arguments as torch does
(same exception types, torch's wording, the offending argument named),
normalises them, gives unbatched (C, H, W) inputs a batch dimension, and
calls the ``torchconv::`` op that does the work. Gradients flow through the
ops' autograd formulas (``torchconv._autograd``, or their C++ twins), to any
order. docs/architecture.md traces both paths.

Like torch's functions, each takes part in the ``__torch_function__``
protocol: a tensor-like argument that overrides it (``torch.fx.Proxy`` while
``torch.fx.symbolic_trace`` runs, a user's tensor subclass) gets the call,
so a trace records ``torchconv.conv2d`` as one node.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import _args, _dtypes, _library, _output_size
from ._eager import entries
from ._memory_format import conv_memory_format, in_memory_format
from ._autograd import (
    AvgPool2dFunction,
    Conv2dFunction,
    ConvTranspose2dFunction,
    EmptyConvFunction,
    MaxPool2dFunction,
)

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d"]


def _run(function, op, *args):
    """Runs an op through its autograd.Function in eager mode, and as the bare
    custom op under torch.compile.

    Both carry the same formulas (``torchconv._autograd``): the Function adds
    forward-mode AD and the torch.func transforms, which Dynamo cannot trace
    (it rejects Functions with a custom jvp); the custom op, with the same
    backward registered, is what a compiled graph holds as one opaque node,
    and what ``torch.jit.trace`` records (a Python Function cannot be saved
    in a TorchScript file; a dispatcher op can).
    Under torch.autocast the convolutions' operands are cast by the same rule
    the custom ops carry on their Autocast dispatch keys
    (``_library.AUTOCAST_OPS``), before the Function, so that autograd sees
    the casts, as it sees torch's own.
    """
    if torch.compiler.is_compiling():
        return op(*args)
    if torch.jit.is_tracing():
        # Sizes read off tensors while tracing are traced values; the op's
        # int[] arguments take the numbers (constants in the graph, as the
        # arguments of torch's own convolutions are).
        return op(*(_as_ints(a) if isinstance(a, (list, tuple)) else a for a in args))
    if op in _AUTOCAST_OPS and torch.is_autocast_enabled(args[0].device.type):
        args = _library.autocast_operands(args)
    return function.apply(*args)


def _as_ints(values):
    return [int(v) for v in values]


def _traceable(function):
    """``function``, quiet under ``torch.jit.trace``.

    While tracing, every size read off a tensor is a traced 0-d tensor, and
    the argument checks' comparisons of sizes would each warn that they
    cannot be traced. The checks hold for the traced shapes, as torch's own
    (C++) checks do, so those warnings say nothing to the user.
    """

    @functools.wraps(function)
    def traceable(*args, **kwargs):
        if not torch._C._get_tracing_state():
            return function(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return function(*args, **kwargs)

    return traceable


_AUTOCAST_OPS = _library.AUTOCAST_OPS  # a global of this module: _run reads it at every call


def _empty_conv(shape, input: Tensor, weight: Tensor, bias) -> Tensor:
    """The output of a convolution of an input without elements (nothing to
    compute; torch skips some checks for it too)."""
    return EmptyConvFunction.apply(input, weight, bias, shape, _dtypes.autocast_dtype(input))


def _batched(input: Tensor) -> tuple[Tensor, bool]:
    if input.dim() == 3:
        return input.unsqueeze(0), True
    return input, False


@_traceable
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    r"""2-d convolution over an input of several planes, as :func:`torch.nn.functional.conv2d`.

    Args:
        input: :math:`(N, C_{in}, H, W)` or unbatched :math:`(C_{in}, H, W)`.
        weight: :math:`(C_{out}, C_{in} / groups, kH, kW)`.
        bias: optional :math:`(C_{out})`.
        stride (int or tuple): stride of the kernel. Default: 1.
        padding (int, tuple, 'valid' or 'same'): implicit zero padding on both
            sides; 'same' (stride 1 only) keeps the input size, adding any odd
            extra row or column at the bottom/right as torch does. Default: 0.
        dilation (int or tuple): spacing between kernel taps. Default: 1.
        groups (int): split input and output channels into this many groups.

    Returns:
        :math:`(N, C_{out}, H_{out}, W_{out})`, with
        :math:`H_{out} = \lfloor (H + 2p - d (kH - 1) - 1) / s \rfloor + 1`;
        channels_last if input or weight is.

    Examples::

        >>> x = torch.randn(10, 3, 32, 32)
        >>> torchconv.conv2d(x, torch.randn(1, 3, 5, 5), padding=2).shape
        torch.Size([10, 1, 32, 32])
    """
    compiled = entries()
    if compiled is not None:
        out = compiled.conv2d(input, weight, bias, stride, padding, dilation, groups)
        if out is not NotImplemented:
            return out
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(
            conv2d, (input, weight, bias), input, weight, bias, stride, padding, dilation, groups
        )
    op = "conv2d"
    sizes = [("stride", stride), ("dilation", dilation)] + ([] if isinstance(padding, str) else [("padding", padding)])
    _args.check_types(op, int_lists=sizes, ints=[("groups", groups)])
    groups = _args.as_int(groups)
    _args.check_tensors(op, input, weight, bias)
    stride = _args.pair(stride, "stride", op)
    dilation = _args.pair(dilation, "dilation", op)
    extra = None
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
            padding, extra = _output_size.same_padding(weight.shape[2:], dilation)
        else:
            raise RuntimeError(f"{op}: Invalid padding string: '{padding}' (expected 'same', 'valid', an int or a pair)")
    else:
        padding = _args.pair(padding, "padding", op)
    _args.check_conv_params(op, stride, padding, dilation, groups, input_is_empty=input.numel() == 0)
    x, unbatched = _batched(input)
    if extra is not None and any(extra):
        # Even effective kernel: the odd row/column of padding goes last.
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    shape = _args.check_conv_shapes(op, x, weight, bias, stride, padding, dilation, groups)
    _dtypes.check_conv_dtype(x, dilation, transposed=False)
    if x.numel() == 0:
        if x.shape[1] == 0:  # no input channels: torch's output has none either
            shape[1] = 0
        y = _empty_conv(shape, x, weight, bias)
    else:
        y = _run(Conv2dFunction, _library.conv2d, x, weight, bias, stride, padding, dilation, groups)
    return y.squeeze(0) if unbatched else y


@_traceable
def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
) -> Tensor:
    r"""2-d transposed convolution, as :func:`torch.nn.functional.conv_transpose2d`.

    The adjoint of :func:`conv2d` with the same weight: it maps conv2d's
    output shape back to its input shape ("deconvolution").

    Args:
        input: :math:`(N, C_{in}, H, W)` or unbatched :math:`(C_{in}, H, W)`.
        weight: :math:`(C_{in}, C_{out} / groups, kH, kW)`.
        bias: optional :math:`(C_{out})`.
        stride (int or tuple): Default: 1.
        padding (int or tuple): ``dilation * (k - 1) - padding`` zeros are
            added to both sides of the input, in effect. Default: 0.
        output_padding (int or tuple): extra size added to one side of the
            output; smaller than stride or dilation. Default: 0.
        groups (int): Default: 1.
        dilation (int or tuple): Default: 1.

    Returns:
        :math:`(N, C_{out}, H_{out}, W_{out})`, with
        :math:`H_{out} = (H - 1) s - 2p + d (kH - 1) + output\_padding + 1`.

    Examples::

        >>> # 1-d in spirit: [a, b] with filter [x, y, z] at stride 2
        >>> torchconv.conv_transpose2d(torch.tensor([[[[1., 2.]]]]),
        ...                            torch.tensor([[[[1., 10., 100.]]]]), stride=2)
        tensor([[[[  1.,  10., 102.,  20., 200.]]]])
    """
    compiled = entries()
    if compiled is not None:
        out = compiled.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        if out is not NotImplemented:
            return out
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(
            conv_transpose2d, (input, weight, bias), input, weight, bias, stride, padding, output_padding, groups,
            dilation,
        )
    op = "conv_transpose2d"
    if isinstance(padding, str):
        raise TypeError(f"{op}(): argument 'padding' must be tuple of ints, not str")
    sizes = [("stride", stride), ("padding", padding), ("output_padding", output_padding), ("dilation", dilation)]
    _args.check_types(op, int_lists=sizes, ints=[("groups", groups)])
    groups = _args.as_int(groups)
    _args.check_tensors(op, input, weight, bias)
    stride = _args.pair(stride, "stride", op)
    padding = _args.pair(padding, "padding", op)
    output_padding = _args.pair(output_padding, "output_padding", op)
    dilation = _args.pair(dilation, "dilation", op)
    _args.check_conv_params(op, stride, padding, dilation, groups, output_padding, input_is_empty=input.numel() == 0)
    x, unbatched = _batched(input)
    shape = _args.check_conv_shapes(op, x, weight, bias, stride, padding, dilation, groups, output_padding)
    _dtypes.check_conv_dtype(x, dilation, transposed=True)
    if x.numel() == 0:
        y = _empty_conv(shape, x, weight, bias)
    elif 0 in shape[2:]:
        # An output side of size 0 that torch's oneDNN kernel returns empty
        # (its other kernels raise, and so did check_conv_shapes then). Its
        # result and its input and weight gradients come in the operands'
        # convolution memory format (complex ones contiguous): the operands
        # are given it first, so that their zero gradients have it too.
        memory_format = torch.contiguous_format if x.is_complex() else conv_memory_format(x, weight)
        operands = in_memory_format(x, memory_format), in_memory_format(weight, memory_format)
        y = in_memory_format(_empty_conv(shape, *operands, bias), memory_format)
    else:
        y = _run(
            ConvTranspose2dFunction, _library.conv_transpose2d, x, weight, bias, stride, padding, output_padding, groups,
            dilation,
        )
    return y.squeeze(0) if unbatched else y


@_traceable
def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    r"""2-d max pooling, as :func:`torch.nn.functional.max_pool2d`.

    Args:
        input: :math:`(N, C, H, W)` or unbatched :math:`(C, H, W)`.
        kernel_size (int or tuple): window size.
        stride (int or tuple, optional): Default: ``kernel_size``.
        padding (int or tuple): implicit -inf padding, at most half the
            effective kernel. Default: 0.
        dilation (int or tuple): spacing between window taps. Default: 1.
        ceil_mode (bool): round the output size up; a last window must still
            start inside the input or its left padding. Default: False.
        return_indices (bool): also return the flat index ``h * W + w`` of
            each maximum within its input plane. Default: False.

    Returns:
        :math:`(N, C, H_{out}, W_{out})`, and int64 indices of the same shape
        if ``return_indices``.

    Examples::

        >>> torchconv.max_pool2d(torch.randn(64, 32, 28, 28), 2).shape
        torch.Size([64, 32, 14, 14])
    """
    compiled = entries()
    if compiled is not None:
        out = compiled.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        if out is not NotImplemented:
            return out
    if has_torch_function_variadic(input):
        return handle_torch_function(
            max_pool2d, (input,), input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
        )
    op = "max_pool2d"
    sizes = [("kernel_size", kernel_size), ("padding", padding), ("dilation", dilation)]
    _args.check_types(op, int_lists=sizes + ([] if stride is None else [("stride", stride)]), bools=[("ceil_mode", ceil_mode)])
    kernel, stride, padding, dilation = _args.pool_args(op, kernel_size, stride, padding, dilation)
    _args.check_pool(op, input, kernel, stride, padding, dilation, ceil_mode)
    x, unbatched = _batched(input)
    values, indices = _run(MaxPool2dFunction, _library.max_pool2d, x, kernel, stride, padding, dilation, ceil_mode)
    if unbatched:
        values, indices = values.squeeze(0), indices.squeeze(0)
    return (values, indices) if return_indices else values


def max_pool2d_with_indices(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    r""":func:`max_pool2d` returning ``(values, indices)`` whatever ``return_indices``
    says, as :func:`torch.nn.functional.max_pool2d_with_indices`.

    Examples::

        >>> values, indices = torchconv.functional.max_pool2d_with_indices(torch.randn(1, 1, 4, 4), 2)
        >>> indices.shape
        torch.Size([1, 1, 2, 2])
    """
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


@_traceable
def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
) -> Tensor:
    r"""2-d average pooling, as :func:`torch.nn.functional.avg_pool2d`.

    Args:
        input: :math:`(N, C, H, W)` or unbatched :math:`(C, H, W)`.
        kernel_size (int or tuple): window size.
        stride (int or tuple, optional): Default: ``kernel_size``.
        padding (int or tuple): implicit zero padding, at most half the
            kernel. Default: 0.
        ceil_mode (bool): round the output size up. Default: False.
        count_include_pad (bool): count padding cells in the divisor.
            Default: True.
        divisor_override (int, optional): divide every window sum by this.

    Returns:
        :math:`(N, C, H_{out}, W_{out})`.

    Examples::

        >>> torchconv.avg_pool2d(torch.randn(32, 64, 28, 28), 2).shape
        torch.Size([32, 64, 14, 14])
    """
    compiled = entries()
    if compiled is not None:
        out = compiled.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        if out is not NotImplemented:
            return out
    if has_torch_function_variadic(input):
        return handle_torch_function(
            avg_pool2d, (input,), input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )
    op = "avg_pool2d"
    sizes = [("kernel_size", kernel_size), ("padding", padding)] + ([] if stride is None else [("stride", stride)])
    _args.check_types(
        op,
        int_lists=sizes,
        bools=[("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)],
        optional_ints=[("divisor_override", divisor_override)],
    )
    kernel, stride, padding, _ = _args.pool_args(op, kernel_size, stride, padding)
    if divisor_override is not None:
        divisor_override = int(divisor_override)
        if divisor_override == 0:
            raise RuntimeError(f"{op}: divisor must be not zero (divisor_override=0)")
    _args.check_pool(op, input, kernel, stride, padding, [1, 1], ceil_mode)
    x, unbatched = _batched(input)
    y = _run(
        AvgPool2dFunction, _library.avg_pool2d, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return y.squeeze(0) if unbatched else y
