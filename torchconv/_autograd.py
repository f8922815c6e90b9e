"""Autograd for the ``torchconv::`` ops: one ``torch.autograd.Function`` per op.

Every backward is written with the package's own ops, which are themselves
differentiable, so gradients of gradients (double backward) need nothing more.
The derivations, for y = conv2d(x, W) with stride s, padding p, dilation d:

* conv2d is linear in x: y = A_W x, where A_W is im2col followed by a GEMM
  with W. Its adjoint A_W^T (GEMM with W^T, then col2im) is by definition
  conv_transpose2d(., W), so dL/dx = conv_transpose2d(dL/dy, W), with the
  output_padding that restores x's size (strided convs drop trailing rows).
* conv2d is linear in W too: y[n,o,:] = sum W[o,:] . cols(x)[n,:], so
  dL/dW = sum_n dL/dy[n] . cols(x)[n]^T: the ``conv2d_weight`` op.
* conv_transpose2d(x, W) = A_W^T x, so dL/dx = A_W dL/dy = conv2d(dL/dy, W),
  and dL/dW = conv2d_weight(dL/dy, x): the same GEMM with the roles of
  input and output gradient exchanged.
* conv2d_weight(x, g) is bilinear; its gradients are conv_transpose2d(g, .)
  with respect to x and conv2d(x, .) with respect to g.
* dL/db = sum of dL/dy over batch and space, for both convolutions.
* Complex operands: autograd's gradient is the adjoint (conjugate
  transpose), so each operand that appears as a coefficient of the
  adjoint is conjugated: dL/dx = conv_transpose2d(dL/dy, conj(W)),
  dL/dW = conv2d_weight(conj(x), dL/dy), and so on. For real tensors
  ``conj()`` is the tensor itself. Forward-mode tangents take no conjugate.
* max_pool2d routes each window's maximum: the backward scatters dL/dy to the
  recorded indices, and the backward of that scatter gathers from them.
* avg_pool2d is linear: the backward spreads dL/dy over each window with the
  forward's divisor, and the backward of that is avg_pool2d again.

The public functions call these classes' ``apply``; each ``forward`` runs one
``torchconv::`` custom op (its body directly, ``_library.call``, when nothing
watches the dispatcher), and backward and forward-mode (``jvp``) formulas
call ``apply`` again, so gradients of any order, forward-mode AD and the
``torch.func`` transforms (grad, jacrev, jacfwd, hessian, and vmap through
the batching rules of ``torchconv._vmap``) all go through this file, nested
to any order. A jvp formula is made of Functions only (the sum of its terms
is :class:`TangentSumFunction`, max pooling's gather :class:`GatherAtFunction`):
torch runs it with forward-mode AD off, so an enclosing forward-mode level
sees nothing else. The ``setup_context`` form lets the very same functions
also serve as the custom ops' ``torch.library.register_autograd`` formulas,
for code that calls ``torch.ops.torchconv.*`` directly.
"""

from __future__ import annotations

import functools

import torch

from . import _library
from . import backends
from ._output_size import conv_transpose_output_size
from ._torch_kernels import torch_keeps_weight_layout
from ._memory_format import (
    conv_grads_in_memory_format,
    conv_memory_format,
    in_memory_format,
    memory_format_of,
    output_padding_is_big,
    with_format_strides,
)

__all__ = [
    "Conv2dFunction",
    "ConvTranspose2dFunction",
    "Conv2dWeightFunction",
    "MaxPool2dFunction",
    "MaxPool2dBackwardFunction",
    "AvgPool2dFunction",
    "AvgPool2dBackwardFunction",
    "EmptyConvFunction",
    "GatherAtFunction",
    "TangentSumFunction",
    "FUNCTIONS",
]


def _conv2d_sized(x, weight, size, stride, padding, dilation, groups):
    """conv2d(x, weight), cut to spatial ``size``.

    As an adjoint of conv_transpose2d, conv2d may compute rows past ``size``
    (when output_padding >= stride, allowed if it is below dilation); they
    are no part of the adjoint.
    """
    y = Conv2dFunction.apply(x, weight, None, stride, padding, dilation, groups)
    if tuple(y.shape[2:]) != tuple(size):
        y = y[:, :, : size[0], : size[1]]
    return y


def _conv_transpose2d_sized(x, weight, size, stride, padding, dilation, groups):
    """conv_transpose2d(x, weight) with the output_padding that yields spatial ``size``."""
    output_padding = [
        target - conv_transpose_output_size(n, k, s, p, 0, d)
        for target, n, k, s, p, d in zip(size, x.shape[2:], weight.shape[2:], stride, padding, dilation)
    ]
    return ConvTranspose2dFunction.apply(x, weight, None, stride, padding, output_padding, groups, dilation)


def _bias_grad(grad_output):
    if grad_output.dtype == torch.complex32:
        # torch's CPU sum has no ComplexHalf kernel: sum in complex64, round once.
        return grad_output.to(torch.complex64).sum((0, 2, 3)).to(torch.complex32)
    return grad_output.sum((0, 2, 3))


def _tangent(ctx, terms, bias_t=None):
    """Sum of the tangent terms that exist (forward-mode AD), plus a bias
    tangent ``bias_t`` broadcast over (N, H, W): a None tangent means that
    input is held constant, and an all-None sum is zero.

    torch runs a Function's ``jvp`` with forward-mode AD off, so an enclosing
    forward-mode level (``jvp`` of ``jvp``, ``jacfwd`` of ``jacfwd``) sees
    only the Functions a formula applies, not plain tensor ops: the sum is a
    Function of its own (:class:`TangentSumFunction`) whenever there is one.
    """
    terms = [t for t in terms if t is not None]
    if bias_t is None and len(terms) == 1:
        return terms[0]
    if bias_t is None and not terms:
        return torch.zeros(ctx.output_shape, dtype=ctx.output_dtype, device=ctx.output_device)
    return TangentSumFunction.apply(ctx.output_shape, bias_t, *terms)


def _remember_output(ctx, output):
    ctx.output_shape, ctx.output_dtype, ctx.output_device = output.shape, output.dtype, output.device


def _save_bilinear(ctx, a, b, output):
    """setup_context of a Function bilinear in its tensors ``a`` and ``b``
    (the three convolutions): each gradient and tangent needs the other."""
    ctx.save_for_backward(a, b)
    ctx.save_for_forward(a, b)
    _remember_output(ctx, output)


def _bilinear_tangent(ctx, function, a_t, b_t, rest, bias_t=None):
    """Tangent of ``function.apply(a, b, *rest)`` (+ a bias), bilinear in the
    ``a`` and ``b`` that :func:`_save_bilinear` saved:
    d(f(a, b) + c) = f(da, b) + f(a, db) + dc."""
    a, b = ctx.saved_tensors
    return _tangent(ctx, [
        None if a_t is None else function.apply(a_t, b, *rest),
        None if b_t is None else function.apply(a, b_t, *rest),
    ], bias_t)


def _recording_backend(setup_context):
    """``setup_context`` that also records the backend chosen with
    ``backends.use()`` around the forward (see :func:`_on_forward_backend`)."""

    @functools.wraps(setup_context)
    def recording_backend(ctx, inputs, output):
        ctx.backend = backends.chosen()
        return setup_context(ctx, inputs, output)

    return recording_backend


def _on_forward_backend(backward):
    """``backward`` run on the backend its forward ran on, when that was chosen
    with ``backends.use()``: the choice is a context variable, and autograd may
    run a backward on a thread of its own, or after the block has closed."""

    @functools.wraps(backward)
    def on_forward_backend(ctx, *grads):
        if ctx.backend is None:
            return backward(ctx, *grads)
        with backends.use(ctx.backend):
            return backward(ctx, *grads)

    return on_forward_backend


def _gather_at(values, indices):
    """values[n, c].flatten()[indices[n, c]]: the adjoint of max pooling's scatter."""
    n, c, out_h, out_w = indices.shape
    plane = values.shape[2] * values.shape[3]
    flat_indices = indices.reshape(n, c, out_h * out_w)
    # An index past the plane marks a window that saw no input: it gathers 0.
    outside = flat_indices >= plane
    gathered = values.reshape(n, c, plane).gather(2, flat_indices.clamp(max=max(plane - 1, 0)))
    return gathered.masked_fill(outside, 0).reshape(indices.shape)


def _at_saved_indices(function, ctx, tensor):
    """``function.apply(tensor, ...)`` for max pooling's scatter
    (MaxPool2dBackwardFunction) or gather (GatherAtFunction), each linear in
    ``tensor`` and the other's adjoint, at the indices, input size and window
    that ``ctx`` saved (MaxPool2dFunction, _AtPoolIndices)."""
    (indices,) = ctx.saved_tensors
    return function.apply(tensor, indices, ctx.input_size, *ctx.window)


class _Function(torch.autograd.Function):
    """``torch.autograd.Function`` without the per-call argument binding.

    For a Function with ``setup_context``, torch's ``apply`` binds the
    arguments to ``forward``'s signature with ``inspect.signature`` on every
    call, a large part of a small convolution's whole call
    (``benchmarks/bench_overhead.py`` measures it), only to fill in
    defaults. These forwards have none and are always called with
    every argument positionally, so outside functorch transforms ``apply``
    goes straight to the autograd engine's entry, as torch's does after
    binding; under ``torch.func`` transforms it is torch's own ``apply``.

    Each subclass's backward also runs on the backend its forward was chosen
    for with ``backends.use()`` (``_recording_backend``,
    ``_on_forward_backend``).
    """

    def __init_subclass__(cls, **kwargs):
        # Every Function's backward runs on its forward's backend choice;
        # each method is wrapped once, in the class that defines it.
        super().__init_subclass__(**kwargs)
        if "setup_context" in vars(cls):
            cls.setup_context = staticmethod(_recording_backend(cls.setup_context))
        if "backward" in vars(cls):
            cls.backward = staticmethod(_on_forward_backend(cls.backward))

    @classmethod
    def apply(cls, *args):
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        args = torch._functorch.utils.unwrap_dead_wrappers(args)
        return super(torch.autograd.Function, cls).apply(*args)


class Conv2dFunction(_Function):
    """y = conv2d(x, W, b); backward: conv_transpose2d, conv2d_weight, a sum."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups):
        return _library.call(_library.conv2d, input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _, stride, padding, dilation, groups = inputs
        _save_bilinear(ctx, input, weight, output)
        ctx.conv = (stride, padding, dilation, groups)

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        # Bilinear in (x, W), affine in b: d(x * W + b) = dx * W + x * dW + db.
        return _bilinear_tangent(ctx, Conv2dFunction, input_t, weight_t, (None, *ctx.conv), bias_t)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input:
            kernel = with_format_strides(weight.conj(), conv_memory_format(input, weight))
            grad_input = _conv_transpose2d_sized(grad_output, kernel, input.shape[2:], stride, padding, dilation, groups)
        if need_weight:
            grad_weight = Conv2dWeightFunction.apply(
                input.conj(), grad_output, weight.shape, stride, padding, dilation, groups
            )
        if need_bias:
            grad_bias = _bias_grad(grad_output)
        native = torch_keeps_weight_layout(input, weight, stride, dilation, groups)
        grads = conv_grads_in_memory_format(input, weight, grad_input, grad_weight, native=native)
        return (*grads, grad_bias, None, None, None, None)


class ConvTranspose2dFunction(_Function):
    """y = conv_transpose2d(x, W, b); backward: conv2d, conv2d_weight, a sum."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, output_padding, groups, dilation):
        return _library.call(_library.conv_transpose2d, input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _, stride, padding, output_padding, groups, dilation = inputs
        _save_bilinear(ctx, input, weight, output)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.transposed = (stride, padding, output_padding, groups, dilation)

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        return _bilinear_tangent(ctx, ConvTranspose2dFunction, input_t, weight_t, (None, *ctx.transposed), bias_t)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        output_padding = ctx.transposed[2]
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        slow = output_padding_is_big(stride, output_padding)
        if need_input and need_weight and conv_memory_format(input, weight, slow) == torch.channels_last:
            # Both gradients read grad_output as the plane their windows lie
            # on, which the channels_last kernels read dense: made dense once
            # here, not once by each (as csrc/autograd/functions.cpp does).
            grad_output = grad_output.contiguous(memory_format=torch.channels_last)
        grad_input = grad_weight = grad_bias = None
        if need_input:
            kernel = with_format_strides(weight.conj(), conv_memory_format(input, weight, slow))
            grad_input = _conv2d_sized(grad_output, kernel, input.shape[2:], stride, padding, dilation, groups)
        if need_weight:
            grad_weight = Conv2dWeightFunction.apply(
                grad_output, input.conj(), weight.shape, stride, padding, dilation, groups
            )
        if need_bias:
            grad_bias = _bias_grad(grad_output)
        native = torch_keeps_weight_layout(input, weight, stride, dilation, groups, output_padding)
        grads = conv_grads_in_memory_format(input, weight, grad_input, grad_weight, slow, native)
        return (*grads, grad_bias, None, None, None, None, None)


class Conv2dWeightFunction(_Function):
    """G = conv2d_weight(x, g): bilinear, so each gradient is a convolution with dL/dG."""

    @staticmethod
    def forward(input, grad_output, weight_size, stride, padding, dilation, groups):
        return _library.call(_library.conv2d_weight, input, grad_output, weight_size, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, grad_output, weight_size, stride, padding, dilation, groups = inputs
        _save_bilinear(ctx, input, grad_output, output)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.weight_size = weight_size

    @staticmethod
    def jvp(ctx, input_t, grad_output_t, *_):
        return _bilinear_tangent(ctx, Conv2dWeightFunction, input_t, grad_output_t, (ctx.weight_size, *ctx.conv))

    @staticmethod
    def backward(ctx, grad_grad_weight):
        input, grad_output = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad_input = grad_grad_output = None
        if ctx.needs_input_grad[0]:
            grad_input = _conv_transpose2d_sized(
                grad_output.conj(), grad_grad_weight, input.shape[2:], stride, padding, dilation, groups
            )
        if ctx.needs_input_grad[1]:
            grad_grad_output = _conv2d_sized(
                input.conj(), grad_grad_weight, grad_output.shape[2:], stride, padding, dilation, groups
            )
        return grad_input, grad_grad_output, None, None, None, None, None


class MaxPool2dFunction(_Function):
    """(y, idx) = max_pool2d(x); backward: scatter dL/dy to idx."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, dilation, ceil_mode):
        return _library.call(_library.max_pool2d, input, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.save_for_forward(output[1])
        ctx.input_size = inputs[0].shape[2:]
        ctx.input_memory_format = memory_format_of(inputs[0])
        # (kernel_size, stride, padding, dilation): max_pool2d_backward takes
        # the window too (a GPU kernel gathers per input pixel over it).
        ctx.window = inputs[1:5]

    @staticmethod
    def jvp(ctx, input_t, *_):
        return _at_saved_indices(GatherAtFunction, ctx, input_t), None

    @staticmethod
    def backward(ctx, grad_output, _grad_indices):
        grad_input = _at_saved_indices(MaxPool2dBackwardFunction, ctx, grad_output)
        return in_memory_format(grad_input, ctx.input_memory_format), None, None, None, None, None


class _AtPoolIndices(_Function):
    """Base of the two Functions that move values by max pooling's indices,
    MaxPool2dBackwardFunction (the scatter) and GatherAtFunction (the
    gather): each is linear in its first argument, so its own tangent, and
    the other's adjoint. Both take max_pool2d_backward's arguments:
    ``(tensor, indices, input_size, kernel_size, stride, padding, dilation)``."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])
        ctx.input_size = inputs[2]
        ctx.window = inputs[3:7]


class MaxPool2dBackwardFunction(_AtPoolIndices):
    """gx = scatter(g, idx); it is linear in g, its adjoint a gather at idx.

    The window (kernel_size, stride, padding, dilation) rides along for the
    op, whose GPU kernel gathers per input pixel over the windows."""

    @staticmethod
    def forward(grad_output, indices, input_size, kernel_size, stride, padding, dilation):
        return _library.call(_library.max_pool2d_backward, grad_output, indices, input_size, kernel_size, stride, padding, dilation)

    @staticmethod
    def jvp(ctx, grad_output_t, *_):
        return _at_saved_indices(MaxPool2dBackwardFunction, ctx, grad_output_t)

    @staticmethod
    def backward(ctx, grad_grad_input):
        return _at_saved_indices(GatherAtFunction, ctx, grad_grad_input), None, None, None, None, None, None


class GatherAtFunction(_AtPoolIndices):
    """y = values gathered at max_pool2d's indices (``_gather_at``): linear in
    the values, the adjoint of max_pool2d_backward's scatter. It is max
    pooling's tangent and max_pool2d_backward's backward; a Function so that
    enclosing transforms of any order see it. The arguments after ``indices``
    are max_pool2d_backward's, for the backward."""

    @staticmethod
    def forward(values, indices, input_size, kernel_size, stride, padding, dilation):
        return _gather_at(values, indices)

    @staticmethod
    def jvp(ctx, values_t, *_):
        return _at_saved_indices(GatherAtFunction, ctx, values_t)

    @staticmethod
    def backward(ctx, grad_output):
        return _at_saved_indices(MaxPool2dBackwardFunction, ctx, grad_output), None, None, None, None, None, None


class AvgPool2dFunction(_Function):
    """y = avg_pool2d(x): linear; backward spreads dL/dy over the windows."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return _library.call(_library.avg_pool2d, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.input_size = inputs[0].shape[2:]
        ctx.input_memory_format = memory_format_of(inputs[0])
        ctx.pool = inputs[1:]

    @staticmethod
    def jvp(ctx, input_t, *_):
        return AvgPool2dFunction.apply(input_t, *ctx.pool)

    @staticmethod
    def backward(ctx, grad_output):
        grad_input = AvgPool2dBackwardFunction.apply(grad_output, ctx.input_size, *ctx.pool)
        return in_memory_format(grad_input, ctx.input_memory_format), None, None, None, None, None, None


class AvgPool2dBackwardFunction(_Function):
    """gx = avg_pool2d_backward(g): linear in g; its adjoint is avg_pool2d."""

    @staticmethod
    def forward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return _library.call(_library.avg_pool2d_backward,
            grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.input_size = inputs[1]
        ctx.pool = inputs[2:]

    @staticmethod
    def jvp(ctx, grad_output_t, *_):
        return AvgPool2dBackwardFunction.apply(grad_output_t, ctx.input_size, *ctx.pool)

    @staticmethod
    def backward(ctx, grad_grad_input):
        grad_grad_output = AvgPool2dFunction.apply(grad_grad_input, *ctx.pool)
        return grad_grad_output, None, None, None, None, None, None, None


class EmptyConvFunction(_Function):
    """A convolution of an input without elements: no arithmetic, an empty
    output of ``shape`` (contiguous, as torch's), and a zero gradient for
    every operand in the operand's own memory format, as torch gives."""

    @staticmethod
    def forward(input, weight, bias, shape, dtype):
        return input.new_empty(shape, dtype=dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.operands = [None if t is None else torch.zeros_like(t, memory_format=torch.preserve_format)
                        for t in inputs[:3]]
        _remember_output(ctx, output)

    @staticmethod
    def jvp(ctx, *_):
        return _tangent(ctx, [])

    @staticmethod
    def backward(ctx, _grad_output):
        return (*ctx.operands, None, None)


class TangentSumFunction(_Function):
    """t = sum(terms) + bias broadcast over (N, H, W), of ``shape``: the sum of
    a Function's tangent terms (see ``_tangent``). Linear: its gradient is
    the incoming gradient for every term and its sum over (N, H, W) for the
    bias; its tangent is the sum of the tangents."""

    @staticmethod
    def forward(shape, bias, *terms):
        total = None if bias is None else bias.view(1, -1, 1, 1).expand(shape)
        for term in terms:
            total = term if total is None else total + term
        return total.clone() if total._is_view() or any(total is t for t in terms) else total

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.terms = len(inputs) - 2
        _remember_output(ctx, output)

    @staticmethod
    def jvp(ctx, _shape_t, bias_t, *terms_t):
        return _tangent(ctx, terms_t, bias_t)

    @staticmethod
    def backward(ctx, grad_output):
        grad_bias = _bias_grad(grad_output) if ctx.needs_input_grad[1] else None
        return (None, grad_bias, *(grad_output if needed else None for needed in ctx.needs_input_grad[2:]))


#: The autograd.Function of every op of ``_library.OPS``, by the op's name. (The
#: other Functions, EmptyConvFunction, GatherAtFunction and
#: TangentSumFunction, run no op.)
FUNCTIONS: dict[str, type[_Function]] = {
    "conv2d": Conv2dFunction,
    "conv_transpose2d": ConvTranspose2dFunction,
    "conv2d_weight": Conv2dWeightFunction,
    "max_pool2d": MaxPool2dFunction,
    "max_pool2d_backward": MaxPool2dBackwardFunction,
    "avg_pool2d": AvgPool2dFunction,
    "avg_pool2d_backward": AvgPool2dBackwardFunction,
}


def _register() -> None:
    """The ops' autograd formulas are their Functions' (see the module's docstring)."""
    for name, entry in _library.OPS.items():
        function = FUNCTIONS[name]
        entry.custom_op.register_autograd(function.backward, setup_context=function.setup_context)


_register()
