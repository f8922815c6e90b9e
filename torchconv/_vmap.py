"""Batching rules: ``torch.vmap`` over torchconv's ops without a loop.

A convolution or pooling over a batch of examples is already batched over
its leading dimension, and a convolution with ``groups`` is a batch of
independent convolutions side by side in the channels. So every vmapped call
folds the vmapped dimension into one of the two and runs the op once:

* only the input (or pooling's gradient) batched: the vmapped dimension
  joins the batch, (B, N, C, H, W) -> (B N, C, H, W);
* a batched weight: the B filter banks are stacked in the output channels,
  each group's slice next to the same group's slices of the other examples
  (channel order (groups, B, C / groups)), so a shared input keeps its
  ``groups``; a batched input is laid out the same way and ``groups``
  becomes ``B * groups``, one group per (group, example) pair.

Each rule is one function per op, parameterised by ``run``, the callable to
run the folded call with: the op's ``autograd.Function.apply`` for the
Function's ``vmap`` staticmethod (torch's protocol for a Function with
``generate_vmap_rule = False``), or the ``torchconv::`` custom op itself for
its ``register_vmap`` rule. Running the Function again, rather than the bare
op, keeps its backward and jvp formulas on the folded call, so transforms
nested around or inside ``vmap`` (``jacfwd(jacrev(f))``, ``hessian``,
per-sample gradients, vmap of vmap) compose to any order.

Every rule gets ``(info, in_dims, *args)``: ``in_dims`` holds, per argument,
the vmapped dimension of a tensor or None (for an operand that does not vary
over the vmapped dimension, and for non-tensor arguments); ``info.batch_size``
is the vmapped dimension's size. It returns ``(output, out_dims)``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _autograd
from . import _library

# Imported for what it does (attaches torch.vmap batching rules to the ops):
# nothing to import from it.
__all__: list[str] = []


# -------------------------------------------------------------------- helpers


def _batch_first(t: Tensor, dim: Optional[int], batch_size: int) -> Tensor:
    """``t`` with its vmapped dimension first; an operand that does not vary
    over it is expanded (a view) to ``batch_size`` examples."""
    if dim is None:
        return t.expand(batch_size, *t.shape)
    return t.movedim(dim, 0)


def _into_channels(t: Tensor, dim: int, groups: int) -> Tensor:
    """An activation (B, N, C, H, W) with B at ``dim`` -> (N, C'), its channels
    in (groups, B, C / groups) order: each group's channels of all examples
    side by side, the layout in which a grouped convolution sees them as B
    (or B * groups) independent groups."""
    t = t.movedim(dim, 0)
    t = t.unflatten(2, (groups, t.shape[2] // groups))
    return t.permute(1, 2, 0, *range(3, t.dim())).flatten(1, 3)


def _into_rows(t: Tensor, dim: Optional[int], groups: int, batch_size: int) -> Tensor:
    """A weight (B, R, ...) with B at ``dim``, or a bias (B, R) -> (R', ...),
    its rows in (groups, B, R / groups) order, as :func:`_into_channels` does
    for channels. An operand that does not vary over B is repeated."""
    t = _batch_first(t, dim, batch_size)
    rows = t.shape[1]
    return t.unflatten(1, (groups, rows // groups)).transpose(0, 1).flatten(0, 2)


def _out_of_channels(y: Tensor, groups: int, batch_size: int) -> Tensor:
    """The inverse of :func:`_into_channels` for an output: (N, C') with
    channels in (groups, B, C / groups) order -> (B, N, C, ...)."""
    per_group = y.shape[1] // (groups * batch_size)
    y = y.unflatten(1, (groups, batch_size, per_group))
    return y.movedim(2, 0).flatten(2, 3)


def _add_bias(y: Tensor, y_dim: Optional[int], bias: Tensor, bias_dim: int) -> tuple[Tensor, int]:
    """``y`` (vmapped at ``y_dim``, or not at all) plus a bias that varies over
    the vmapped dimension: a per-example bias cannot ride in a convolution
    whose filters are shared, so it is added to the output after."""
    if y_dim is None:
        y = y.unsqueeze(0)
    bias = bias.movedim(bias_dim, 0)
    return y + bias[:, None, :, None, None], 0


def _shared_filters(run: Callable, in_dims, input, weight, bias, *args):
    """A convolution whose filters do not vary over the vmapped dimension:
    the examples are more batch, (B, N, C, H, W) -> (B N, C, H, W), and a
    bias that varies is added after."""
    input_dim, _, bias_dim = in_dims[:3]
    shared_bias = bias if bias_dim is None else None
    if input_dim is None:
        y, y_dim = run(input, weight, shared_bias, *args), None
    else:
        x = input.movedim(input_dim, 0)
        y, y_dim = run(x.flatten(0, 1), weight, shared_bias, *args).unflatten(0, x.shape[:2]), 0
    if bias_dim is not None:
        y, y_dim = _add_bias(y, y_dim, bias, bias_dim)
    return y, y_dim


# ---------------------------------------------------------------------- rules


def conv2d(run: Callable, info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    """Batching rule of :func:`torchconv._library.conv2d` (weight (O, C / g, kH, kW))."""
    input_dim, weight_dim, bias_dim = in_dims[:3]
    batch = info.batch_size
    if weight_dim is None:
        return _shared_filters(run, in_dims, input, weight, bias, stride, padding, dilation, groups)
    # One filter bank per example: stacked in the output channels, group by group.
    w = _into_rows(weight, weight_dim, groups, batch)
    b = None if bias is None else _into_rows(bias, bias_dim, groups, batch)
    if input_dim is None:
        y = run(input, w, b, stride, padding, dilation, groups)
    else:
        y = run(_into_channels(input, input_dim, groups), w, b, stride, padding, dilation, groups * batch)
    return _out_of_channels(y, groups, batch), 0


def conv_transpose2d(
    run: Callable, info, in_dims, input, weight, bias, stride, padding, output_padding, groups, dilation
):
    """Batching rule of :func:`torchconv._library.conv_transpose2d` (weight (C, O / g, kH, kW))."""
    input_dim, weight_dim, bias_dim = in_dims[:3]
    batch = info.batch_size
    args = (stride, padding, output_padding)
    if weight_dim is None:
        return _shared_filters(run, in_dims, input, weight, bias, *args, groups, dilation)
    b = None if bias is None else _into_rows(bias, bias_dim, groups, batch)
    if input_dim is None:
        # A shared input keeps its channels: each input channel's row of
        # filters widens to the B examples' output channels of its group,
        # (C, B, O / g, kH, kW) -> (C, B O / g, kH, kW).
        w = weight.movedim(weight_dim, 1).flatten(1, 2)
        y = run(input, w, b, *args, groups, dilation)
    else:
        # The weight's rows are the input channels: the same order as the input's.
        w = _into_rows(weight, weight_dim, groups, batch)
        y = run(_into_channels(input, input_dim, groups), w, b, *args, groups * batch, dilation)
    return _out_of_channels(y, groups, batch), 0


def conv2d_weight(run: Callable, info, in_dims, input, grad_output, weight_size, stride, padding, dilation, groups):
    """Batching rule of :func:`torchconv._library.conv2d_weight`: the weight
    gradient of the convolution of ``input`` that gave ``grad_output``."""
    input_dim, grad_dim = in_dims[:2]
    batch = info.batch_size
    out_channels, in_per_group, *kernel = weight_size
    args = (stride, padding, dilation)
    if grad_dim is None:
        # Shared output gradient: the B inputs' channels sit side by side in
        # each group, so every filter's row widens to the B examples' slices.
        x = _into_channels(input, input_dim, groups)
        size = [out_channels, batch * in_per_group, *kernel]
        grad_weight = run(x, grad_output, size, *args, groups)  # (O, (B, C / g), kH, kW)
        return grad_weight.unflatten(1, (batch, in_per_group)), 1
    g = _into_channels(grad_output, grad_dim, groups)
    size = [batch * out_channels, in_per_group, *kernel]
    if input_dim is None:
        grad_weight = run(input, g, size, *args, groups)
    else:
        grad_weight = run(_into_channels(input, input_dim, groups), g, size, *args, groups * batch)
    # Rows in (groups, B, O / g) order, as the output channels of conv2d's rule.
    grad_weight = grad_weight.unflatten(0, (groups, batch, out_channels // groups))
    return grad_weight.transpose(0, 1).flatten(1, 2), 0


def max_pool2d(run: Callable, info, in_dims, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Batching rule of :func:`torchconv._library.max_pool2d`: values and
    indices both vmapped at dim 0 (an index is within its own plane, so
    folding examples into the batch leaves it as it is)."""
    x = input.movedim(in_dims[0], 0)
    values, indices = run(x.flatten(0, 1), kernel_size, stride, padding, dilation, ceil_mode)
    shape = x.shape[:2]
    return (values.unflatten(0, shape), indices.unflatten(0, shape)), (0, 0)


def max_pool2d_backward(
    run: Callable, info, in_dims, grad_output, indices, input_size, kernel_size, stride, padding, dilation
):
    """Batching rule of :func:`torchconv._library.max_pool2d_backward`: the
    gradient and the indices vary over the vmapped dimension independently
    (per-example gradients of one pooling, or one gradient through several),
    so both are brought to B examples and folded into the batch."""
    batch = info.batch_size
    grad_dim, indices_dim = in_dims[:2]
    g = _batch_first(grad_output, grad_dim, batch)
    i = _batch_first(indices, indices_dim, batch)
    grad_input = run(
        g.flatten(0, 1), i.flatten(0, 1), input_size, kernel_size, stride, padding, dilation
    )
    return grad_input.unflatten(0, g.shape[:2]), 0


def avg_pool2d(
    run: Callable, info, in_dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    """Batching rule of :func:`torchconv._library.avg_pool2d`."""
    x = input.movedim(in_dims[0], 0)
    y = run(x.flatten(0, 1), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return y.unflatten(0, x.shape[:2]), 0


def avg_pool2d_backward(
    run: Callable,
    info,
    in_dims,
    grad_output,
    input_size,
    kernel_size,
    stride,
    padding,
    ceil_mode,
    count_include_pad,
    divisor_override,
):
    """Batching rule of :func:`torchconv._library.avg_pool2d_backward`."""
    g = grad_output.movedim(in_dims[0], 0)
    pool = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    grad_input = run(g.flatten(0, 1), input_size, *pool)
    return grad_input.unflatten(0, g.shape[:2]), 0


def empty_conv(run: Callable, info, in_dims, input, weight, bias, shape, dtype):
    """Batching rule of the convolution of an empty input: an empty output
    with the vmapped dimension in front. The operands pass as they are (the
    gradient of each is zeros of its own shape)."""
    return run(input, weight, bias, (info.batch_size, *shape), dtype), 0


def gather_at(run: Callable, info, in_dims, values, indices, *backward_args):
    """Batching rule of the gather at max-pool indices: values and indices
    (either may not vary) join the batch."""
    batch = info.batch_size
    v = _batch_first(values, in_dims[0], batch)
    i = _batch_first(indices, in_dims[1], batch)
    out = run(v.flatten(0, 1), i.flatten(0, 1), *backward_args)
    return out.unflatten(0, (batch, v.shape[1])), 0


def tangent_sum(run: Callable, info, in_dims, shape, bias, *terms):
    """Batching rule of the sum of tangent terms: the terms join the batch; a
    bias that varies over the vmapped dimension becomes a term of its own."""
    batch = info.batch_size
    folded = [_batch_first(t, dim, batch).flatten(0, 1) for t, dim in zip(terms, in_dims[2:])]
    if bias is not None and in_dims[1] is not None:
        per_example = bias.movedim(in_dims[1], 0)[:, None, :, None, None]
        folded.append(per_example.expand(batch, *shape).flatten(0, 1))
        bias = None
    out = run((batch * shape[0], *shape[1:]), bias, *folded)
    return out.unflatten(0, (batch, shape[0])), 0


# ------------------------------------------------------------------ register


#: The batching rule of every autograd.Function; an op's rule is its Function's.
_RULES = {
    _autograd.Conv2dFunction: conv2d,
    _autograd.ConvTranspose2dFunction: conv_transpose2d,
    _autograd.Conv2dWeightFunction: conv2d_weight,
    _autograd.MaxPool2dFunction: max_pool2d,
    _autograd.MaxPool2dBackwardFunction: max_pool2d_backward,
    _autograd.AvgPool2dFunction: avg_pool2d,
    _autograd.AvgPool2dBackwardFunction: avg_pool2d_backward,
    _autograd.EmptyConvFunction: empty_conv,
    _autograd.GatherAtFunction: gather_at,
    _autograd.TangentSumFunction: tangent_sum,
}


def _register() -> None:
    """Gives each autograd.Function a ``vmap`` staticmethod running its rule
    with the Function's ``apply``, and each custom op the rule with the op.

    torch's generated rule (``generate_vmap_rule = True``) is off: it runs
    ``forward`` and ``jvp`` under vmap, and cannot line up the tangents with
    these Functions' list arguments (stride, padding, ...) once forward-mode
    AD runs under vmap (``jacfwd(jacrev(f))``, ``hessian``); the custom ops
    would also hit vmap's slow per-example fallback, with its warning.
    """
    for function, rule in _RULES.items():
        function.generate_vmap_rule = False
        function.vmap = staticmethod(functools.partial(rule, function.apply))
    for name, entry in _library.OPS.items():
        rule = _RULES[_autograd.FUNCTIONS[name]]
        entry.custom_op.register_vmap(functools.partial(rule, entry.custom_op))


_register()
