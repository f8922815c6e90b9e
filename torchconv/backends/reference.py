"""The reference backend: every kernel in plain PyTorch tensor arithmetic.

This file is where the math is spelled out. Convolution is im2col + GEMM:

* ``im2col`` is a strided *view* (``as_strided``) of the zero-padded input
  with shape (N, C, kH, kW, outH, outW): element (n, c, i, j, y, x) is the
  input pixel that kernel tap (i, j) sees at output position (y, x);
* ``col2im`` is its adjoint: it adds every column entry back onto the pixel
  it was read from (one strided slice-add per kernel tap);
* a grouped GEMM (``torch.matmul``) contracts channels and taps.

The six computations of conv2d and conv_transpose2d are three kernels here:
``conv2d`` (im2col, GEMM), ``conv_transpose2d`` (GEMM, col2im) and
``conv2d_weight`` (im2col, GEMM against the output gradient).

Pooling reads windows through the same strided view; max pooling records the
flat index (``h * W + w``) of each window's maximum, as torch does, and its
backward scatters gradients to those indices.

Kernels take 4-d tensors whose arguments were already validated and
normalised to pairs (see ``torchconv._args``); they may return any memory
format (the ops give the result torch's, ``torchconv._memory_format``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._output_size import conv_output_hw, conv_transpose_output_hw, pool_output_hw

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "conv2d_weight",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


# ------------------------------------------------------------------ dtypes

_HALF = (torch.float16, torch.bfloat16)


def _computed_wide(kernel):
    """Runs ``kernel`` on widened copies of half-precision and integer inputs.

    float16 and bfloat16 accumulate in float32 and are rounded once at the
    end, as torch's CPU kernels do (a float16 sum of large values would
    overflow where the mean is finite). Integer convolutions run in int64
    and wrap back to their dtype: integer arithmetic modulo 2^bits is the
    same whatever the width it is carried out in, so the result is torch's
    bit for bit. Every tensor argument has the first one's dtype.
    """

    def widened(first, *args):
        dtype = first.dtype
        if dtype in _HALF:
            wide = torch.float32
        elif not (dtype.is_floating_point or dtype.is_complex or dtype == torch.int64):
            wide = torch.int64
        else:
            return kernel(first, *args)
        args = [a.to(wide) if isinstance(a, torch.Tensor) else a for a in args]
        return kernel(first.to(wide), *args).to(dtype)

    widened.__name__, widened.__qualname__, widened.__doc__ = kernel.__name__, kernel.__qualname__, kernel.__doc__
    return widened


# ------------------------------------------------------------------ im2col / col2im


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> torch.Tensor:
    """Pads the last two dimensions (constant padding: plain data movement, not a conv op)."""
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _windows(padded: torch.Tensor, kernel, stride, dilation, out_size) -> torch.Tensor:
    """im2col as a view: (N, C, H, W) -> (N, C, kH, kW, outH, outW), no copy."""
    n, c, _, _ = padded.shape
    padded = padded.contiguous()
    s_n, s_c, s_h, s_w = padded.stride()
    return padded.as_strided(
        (n, c, kernel[0], kernel[1], out_size[0], out_size[1]),
        (s_n, s_c, s_h * dilation[0], s_w * dilation[1], s_h * stride[0], s_w * stride[1]),
    )


def _im2col(x, kernel, stride, padding, dilation, out_size) -> torch.Tensor:
    """(N, C, H, W) -> view (N, C, kH, kW, outH, outW) of the zero-padded input."""
    padded = _pad(x, padding[0], padding[0], padding[1], padding[1])
    return _windows(padded, kernel, stride, dilation, out_size)


def _col2im(cols, image_size, stride, padding, dilation) -> torch.Tensor:
    """Adjoint of ``_im2col``: (N, C, kH, kW, inH, inW) -> (N, C, H, W).

    Each column entry is added back onto the pixel it was read from. The sum
    runs on a canvas that includes the padding, which is then cut away.
    """
    n, c, k_h, k_w, in_h, in_w = cols.shape
    canvas = cols.new_zeros(n, c, image_size[0] + 2 * padding[0], image_size[1] + 2 * padding[1])
    for i in range(k_h):
        for j in range(k_w):
            top, left = i * dilation[0], j * dilation[1]
            canvas[
                :, :,
                top : top + stride[0] * (in_h - 1) + 1 : stride[0],
                left : left + stride[1] * (in_w - 1) + 1 : stride[1],
            ] += cols[:, :, i, j]
    return canvas[:, :, padding[0] : padding[0] + image_size[0], padding[1] : padding[1] + image_size[1]]


# ----------------------------------------------------------------------- conv


@_computed_wide
def conv2d(input, weight, bias, stride, padding, dilation, groups):
    """y[n, g, o] = W[g, o, :] . cols[n, g, :] (+ b): one GEMM per group."""
    n, c_in, h, w = input.shape
    c_out, _, k_h, k_w = weight.shape
    out_h, out_w = conv_output_hw((h, w), (k_h, k_w), stride, padding, dilation)
    cols = _im2col(input, (k_h, k_w), stride, padding, dilation, (out_h, out_w))
    # (N, G, C/G * kH * kW, L): the copy that makes the view GEMM-ready.
    cols = cols.reshape(n, groups, (c_in // groups) * k_h * k_w, out_h * out_w)
    kernels = weight.reshape(groups, c_out // groups, (c_in // groups) * k_h * k_w)
    out = torch.matmul(kernels, cols).reshape(n, c_out, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


@_computed_wide
def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    """cols = W^T . x per group, then col2im: conv2d's input gradient, as a forward."""
    n, c_in, h, w = input.shape
    _, c_out_g, k_h, k_w = weight.shape
    out_size = conv_transpose_output_hw((h, w), (k_h, k_w), stride, padding, output_padding, dilation)
    kernels_t = weight.reshape(groups, c_in // groups, c_out_g * k_h * k_w).transpose(1, 2)
    x = input.reshape(n, groups, c_in // groups, h * w)
    cols = torch.matmul(kernels_t, x).reshape(n, groups * c_out_g, k_h, k_w, h, w)
    out = _col2im(cols, out_size, stride, padding, dilation)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


@_computed_wide
def conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups):
    """dL/dW = sum over the batch of gy . im2col(x)^T, one GEMM per group.

    The output positions are read off ``grad_output`` (not recomputed from the
    input), so the same kernel serves conv_transpose2d, whose weight gradient
    is this with input and output gradient swapped.
    """
    n, c_in, _, _ = input.shape
    c_out, _, k_h, k_w = weight_size
    out_h, out_w = grad_output.shape[2:]
    cols = _im2col(input, (k_h, k_w), stride, padding, dilation, (out_h, out_w))
    cols = cols.reshape(n, groups, (c_in // groups) * k_h * k_w, out_h * out_w)
    gy = grad_output.reshape(n, groups, c_out // groups, out_h * out_w)
    grad = torch.matmul(gy, cols.transpose(2, 3)).sum(0)
    return grad.reshape(weight_size)


# ----------------------------------------------------------------------- pool


def _span(out_size, kernel, stride, dilation) -> list[int]:
    """(H, W) that ``out_size`` windows read, from the first window's first
    tap to the last window's last: the padded canvas a pooling needs."""
    return [(o - 1) * s + d * (k - 1) + 1 for o, k, s, d in zip(out_size, kernel, stride, dilation)]


def _pool_windows(input, kernel, stride, padding, dilation, out_size, fill):
    """Windows (N, C, outH, outW, kH, kW) over the input padded with ``fill``.

    With ceil_mode the last window may hang over the bottom/right padding, so
    the canvas is extended far enough for every window to be read.
    """
    _, _, h, w = input.shape
    need_h, need_w = _span(out_size, kernel, stride, dilation)
    bottom = max(need_h - h - padding[0], 0)
    right = max(need_w - w - padding[1], 0)
    padded = _pad(input, padding[0], bottom, padding[1], right, fill)
    windows = _windows(padded, kernel, stride, dilation, out_size)
    return windows.permute(0, 1, 4, 5, 2, 3)


def _tap_positions(out_len, kernel, stride, pad, dilation, device):
    """(out_len, kernel) input coordinates read by each window along one axis."""
    starts = torch.arange(out_len, device=device) * stride - pad
    return starts[:, None] + torch.arange(kernel, device=device)[None, :] * dilation


def max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    """Window maxima and the flat index ``h * W + w`` of each (first on ties)."""
    n, c, h, w = input.shape
    out_size = pool_output_hw(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    lowest = float("-inf") if input.dtype.is_floating_point else torch.iinfo(input.dtype).min
    windows = _pool_windows(input, kernel_size, stride, padding, dilation, out_size, lowest)
    taps = kernel_size[0] * kernel_size[1]
    if n * c == 0:  # max() cannot reduce an empty batch; nothing to compute
        empty = input.new_empty(n, c, *out_size)
        return empty, empty.long()
    windows = windows.reshape(n, c, out_size[0], out_size[1], taps)
    values, tap = windows.max(dim=-1)
    if input.dtype.is_floating_point:
        # torch scans a window in order and takes a tap if it is greater than
        # the maximum so far or NaN: a window with NaNs reports its last NaN.
        nan = windows.isnan()
        last_nan = (taps - 1) - nan.flip(-1).to(torch.uint8).argmax(-1)
        tap = torch.where(nan.any(-1), last_nan, tap)

    rows = _tap_positions(out_size[0], kernel_size[0], stride[0], padding[0], dilation[0], input.device)
    cols = _tap_positions(out_size[1], kernel_size[1], stride[1], padding[1], dilation[1], input.device)
    # Flat input index of every tap of every window: (outH, outW, kH * kW).
    flat = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(out_size[0], out_size[1], taps)
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[None, :, None, :]
    inside = inside.reshape(out_size[0], out_size[1], taps)
    # A window whose inputs are all -inf ties with its padding; torch then
    # reports the window's start clamped into the plane (its first row and
    # column >= 0): the first in-bounds tap, or, for a window that sees no
    # input at all, a position past the plane, which the backward skips.
    first_row = rows.gather(1, (rows >= 0).to(torch.uint8).argmax(1, keepdim=True))
    first_col = cols.gather(1, (cols >= 0).to(torch.uint8).argmax(1, keepdim=True))
    first_inside = first_row * w + first_col.reshape(1, -1)
    chosen = flat.expand(n, c, -1, -1, -1).gather(-1, tap.unsqueeze(-1)).squeeze(-1)
    chosen_inside = inside.expand(n, c, -1, -1, -1).gather(-1, tap.unsqueeze(-1)).squeeze(-1)
    indices = torch.where(chosen_inside, chosen, first_inside)
    return values, indices


def max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation):
    """Each output gradient goes to the input pixel its window's maximum came from.

    The window (``kernel_size``, ``stride``, ``padding``, ``dilation``: the
    forward's) is part of the kernel contract for backends that gather per
    input pixel over the windows that can contain it (a GPU kernel, with no
    atomics); this scatter to ``indices`` does not need it.
    """
    n, c = grad_output.shape[:2]
    in_plane, out_plane = input_size[0] * input_size[1], grad_output.shape[2] * grad_output.shape[3]
    indices = indices.reshape(n, c, out_plane)
    # A window that saw no input reports an index past the plane (torch's
    # rule); its gradient goes nowhere, here into one spare slot.
    spare = int(indices.numel() > 0 and bool(indices.max() >= in_plane))
    grad = grad_output.new_zeros(n, c, in_plane + spare)
    grad.scatter_add_(2, indices.clamp(max=in_plane) if spare else indices, grad_output.reshape(n, c, out_plane))
    return grad[:, :, :in_plane].reshape(n, c, input_size[0], input_size[1])


def _avg_divisors(in_size, out_size, kernel, stride, padding, count_include_pad, divisor_override, like):
    """(outH, outW) divisor of every window, ATen's rule.

    Without ``divisor_override``, a window counts the cells it covers inside
    the padded input (count_include_pad) or inside the input alone; windows
    cut by ceil_mode never count cells beyond the padded input. The count is
    a product of a row count and a column count.
    """
    if divisor_override is not None:
        return like.new_full(out_size, float(divisor_override))
    counts = []
    for size, out_len, k, s, p in zip(in_size, out_size, kernel, stride, padding):
        start = torch.arange(out_len, device=like.device) * s - p
        end = torch.clamp(start + k, max=size + p)
        if not count_include_pad:
            start, end = start.clamp(min=0), end.clamp(max=size)
        counts.append((end - start).clamp(min=1))
    return (counts[0][:, None] * counts[1][None, :]).to(like.dtype)


@_computed_wide
def avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Window sums over the zero-padded input, divided by each window's divisor."""
    out_size = pool_output_hw(input.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    windows = _pool_windows(input, kernel_size, stride, padding, (1, 1), out_size, 0.0)
    sums = windows.sum(dim=(-2, -1))
    divisors = _avg_divisors(
        input.shape[2:], out_size, kernel_size, stride, padding, count_include_pad, divisor_override, input
    )
    if not input.dtype.is_floating_point:  # int64: C++ integer division, toward zero
        return torch.div(sums, divisors, rounding_mode="trunc")
    return sums / divisors


@_computed_wide
def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Adjoint of avg_pool2d: each gradient, over its divisor, spread on its window."""
    n, c, out_h, out_w = grad_output.shape
    divisors = _avg_divisors(
        input_size, (out_h, out_w), kernel_size, stride, padding, count_include_pad, divisor_override, grad_output
    )
    share = grad_output / divisors
    # Every tap of a window receives the window's share: the col2im of a
    # kernel of ones. The canvas spans every window, padding and ceil_mode
    # overhang included, and is cut back to the input.
    cols = share[:, :, None, None].expand(n, c, kernel_size[0], kernel_size[1], out_h, out_w)
    span = _span((out_h, out_w), kernel_size, stride, (1, 1))
    canvas = _col2im(cols, span, stride, (0, 0), (1, 1))
    canvas = _pad(canvas, 0, max(0, input_size[0] + padding[0] - span[0]), 0, max(0, input_size[1] + padding[1] - span[1]))
    return canvas[:, :, padding[0] : padding[0] + input_size[0], padding[1] : padding[1] + input_size[1]]
