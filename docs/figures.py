"""The figures of docs/, drawn from torchconv's own kernels.

Every matrix shown is computed by running a torchconv op on unit basis
tensors: column ``i`` of the matrix of a linear map ``f`` is ``f(e_i)``,
flattened. All basis tensors run as one batch, so each matrix is one call of
the op, on the backend in force (``--backend``, else the fastest available
on the CPU).

==========================  ====================================================
``conv_adjoint.png``        the matrix of ``x -> conv2d(x, W)`` beside the matrix
                            of ``y -> conv_transpose2d(y, W)``: one is the
                            other's transpose (docs/convolution.md)
``im2col.png``              a 4x4 image and its im2col column matrix for a 3x3
                            window with padding 1 (docs/convolution.md)
``pool_adjoint.png``        the matrices of avg_pool2d and of its backward, and
                            max_pool2d's selection matrix at one input and the
                            matrix of its backward (docs/pooling.md)
==========================  ====================================================

Run from the repository root, with torchconv installed and matplotlib (the
``examples`` and ``test`` extras install it)::

    python docs/figures.py                  # writes docs/figures/*.png
    python docs/figures.py --out DIR --backend reference

tests/test_docs.py checks the matrix functions below on every backend.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Sequence

import torch

import torchconv

DTYPE = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))

# The figures' cases. conv2d: one 5x5 plane, a 3x3 weight holding 1..9 (so
# every matrix entry names its tap), stride 2, padding 1: a 3x3 output.
CONV = dict(input_size=(1, 5, 5), stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
CONV_WEIGHT = torch.arange(1.0, 10.0, dtype=DTYPE).reshape(1, 1, 3, 3)
# avg_pool2d: 3x3 windows, stride 2, padding 1, padding not counted:
# windows of 4, 6 and 9 cells. max_pool2d: 2x2 windows at stride 1,
# which overlap, so one pixel can be picked by several windows.
AVG = dict(input_size=(1, 5, 5), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=False,
           count_include_pad=False, divisor_override=None)
MAX = dict(kernel_size=(2, 2), stride=(1, 1), padding=(0, 0), dilation=(1, 1), ceil_mode=False)
MAX_INPUT = torch.tensor([[3.0, 1, 4, 1], [5, 9, 2, 6], [5, 3, 5, 8], [9, 7, 9, 3]], dtype=DTYPE).reshape(1, 1, 4, 4)


def operator_matrix(fn: Callable[[torch.Tensor], torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
    """The matrix of a linear map ``fn`` on tensors of ``input_size`` (no batch dimension).

    ``fn`` takes a batch ``(B, *input_size)`` and maps every sample on its
    own, as convolutions and poolings do. Column ``i`` of the result is
    ``fn(e_i)`` flattened, where ``e_i`` is the ``i``-th unit tensor: all
    ``e_i`` run as one batch of ``numel`` samples.
    """
    numel = math.prod(input_size)
    basis = torch.eye(numel, dtype=DTYPE).reshape(numel, *input_size)
    return fn(basis).reshape(numel, -1).T.contiguous()


def transposed_output_padding(size, input_size, kernel, stride, padding, dilation) -> list[int]:
    """The output_padding that makes conv_transpose2d of a ``size`` grid give ``input_size``."""
    return [
        target - ((n - 1) * s - 2 * p + d * (k - 1) + 1)
        for target, n, k, s, p, d in zip(input_size, size, kernel, stride, padding, dilation)
    ]


def conv_matrices(weight: torch.Tensor, input_size, stride, padding, dilation, groups):
    """``(A, B)``: the matrix ``A`` of ``x -> torchconv.conv2d(x, weight)`` on inputs of
    ``input_size`` = (C, H, W), and the matrix ``B`` of ``y -> torchconv.conv_transpose2d(y, weight)``
    on conv2d's output size, with the output_padding that gives back (H, W).

    conv_transpose2d takes conv2d's weight as it is: its ``(C_out, C_in / groups, kH, kW)``
    is conv_transpose2d's ``(in_channels, out_channels / groups, kH, kW)``. ``B == A.T``.
    """
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    a = operator_matrix(lambda x: torchconv.conv2d(x, weight, **conv), input_size)
    out = torchconv.conv2d(torch.zeros(1, *input_size, dtype=DTYPE), weight, **conv).shape[1:]
    output_padding = transposed_output_padding(out[1:], input_size[1:], weight.shape[2:], stride, padding, dilation)
    b = operator_matrix(lambda y: torchconv.conv_transpose2d(y, weight, output_padding=output_padding, **conv), out)
    return a, b


def column_matrix(image: torch.Tensor, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1)) -> torch.Tensor:
    """im2col of one image ``(C, H, W)``: the ``(C kH kW, outH outW)`` column matrix.

    Computed with ``torchconv.conv2d`` and one-hot filters, one per (channel,
    tap): filter ``r = (c kH + i) kW + j`` reads tap (i, j) of channel c, so
    output channel r is row r of the column matrix.
    """
    channels = image.shape[0]
    rows = channels * kernel_size[0] * kernel_size[1]
    one_hot = torch.eye(rows, dtype=image.dtype, device=image.device).reshape(rows, channels, *kernel_size)
    out = torchconv.conv2d(image.unsqueeze(0), one_hot, stride=stride, padding=padding, dilation=dilation)
    return out.reshape(rows, -1)


def avg_pool_matrices(input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """``(A, B)``: the matrix of ``x -> torchconv.avg_pool2d(x, ...)`` on inputs of
    ``input_size`` = (C, H, W), and the matrix of its backward,
    ``g -> torch.ops.torchconv.avg_pool2d_backward(g, (H, W), ...)``. ``B == A.T``."""
    pool = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    a = operator_matrix(lambda x: torchconv.avg_pool2d(x, *pool), input_size)
    out = torchconv.avg_pool2d(torch.zeros(1, *input_size, dtype=DTYPE), *pool).shape[1:]
    backward = torch.ops.torchconv.avg_pool2d_backward
    b = operator_matrix(lambda g: backward(g, list(input_size[1:]), *pool), out)
    return a, b


def max_pool_matrices(input: torch.Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    """``(P, B)`` at one input ``(1, C, H, W)``: the 0/1 selection matrix ``P``
    (row ``o`` picks the input pixel max_pool2d's index names, so
    ``values = P x``), and the matrix of max_pool2d's backward at those indices,
    ``g -> torch.ops.torchconv.max_pool2d_backward(g, indices, ...)``. ``B == P.T``."""
    window = (kernel_size, stride, padding, dilation)
    values, indices = torchconv.max_pool2d(input, *window, ceil_mode, return_indices=True)
    channels, height, width = input.shape[1:]
    plane = height * width
    # Flat index over (C, H, W) of every output's pick.
    picked = (indices + plane * torch.arange(channels, device=input.device).view(1, -1, 1, 1)).flatten()
    p = torch.nn.functional.one_hot(picked, channels * plane).to(DTYPE)
    backward = torch.ops.torchconv.max_pool2d_backward

    def scatter(g):
        return backward(g, indices.expand(g.shape[0], -1, -1, -1), [height, width], *window)

    b = operator_matrix(scatter, values.shape[1:])
    return p, b


# ---------------------------------------------------------------- plotting


def _show(ax, matrix, title, labels=None, cmap="Blues", fontsize=None):
    """``matrix`` as cells, zeros white, nonzero cells labelled (``labels(value)``)."""
    import numpy as np

    m = matrix.detach().cpu().numpy()
    shown = np.ma.masked_where(m == 0, m)
    ax.imshow(shown, cmap=cmap, vmin=0, vmax=max(float(m.max()) * 1.15, 1e-12), interpolation="nearest")
    rows, cols = m.shape
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelsize=6)
    ax.set_xticks(range(0, cols, 2 if cols > 12 else 1))
    ax.set_yticks(range(0, rows, 2 if rows > 12 else 1))
    if labels is not None:
        size = fontsize or (6 if max(rows, cols) > 12 else 8)
        for (i, j), value in np.ndenumerate(m):
            if value != 0:
                ax.text(j, i, labels(value), ha="center", va="center", fontsize=size)
    ax.set_title(title, fontsize=9)


def _integer(value) -> str:
    return f"{value:.0f}"


def _reciprocal(value) -> str:
    return f"1/{1 / value:.0f}"


def draw_conv_adjoint(path: str) -> None:
    import matplotlib.pyplot as plt

    a, b = conv_matrices(CONV_WEIGHT, **CONV)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5.2), gridspec_kw=dict(width_ratios=[25, 9]))
    _show(left, a, "A: x -> conv2d(x, W)\n(9 outputs x 25 inputs)", _integer)
    _show(right, b, "B: y -> conv_transpose2d(y, W)\n(25 x 9) = A^T", _integer)
    left.set_xlabel("input pixel (h * 5 + w)", fontsize=8)
    left.set_ylabel("output pixel (h * 3 + w)", fontsize=8)
    right.set_xlabel("input pixel of conv_transpose2d", fontsize=8)
    fig.suptitle(
        "conv2d and conv_transpose2d with the same 3x3 weight (taps 1..9), 5x5 image, stride 2, padding 1",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def draw_im2col(path: str) -> None:
    import matplotlib.pyplot as plt

    image = torch.arange(1.0, 17.0, dtype=DTYPE).reshape(1, 4, 4)
    columns = column_matrix(image, (3, 3), padding=(1, 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw=dict(width_ratios=[4, 16]))
    _show(left, image[0], "image (4x4), pixels 1..16", _integer, cmap="Oranges")
    _show(right, columns, "im2col: 9 taps x 16 window positions (blank: padding)", _integer, cmap="Oranges")
    right.set_xlabel("window position (y * 4 + x)", fontsize=8)
    right.set_ylabel("tap (i * 3 + j)", fontsize=8)
    fig.suptitle("conv2d(x, W) = W (1 x 9) times this matrix (9 x 16); col2im adds the columns back", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def draw_pool_adjoint(path: str) -> None:
    import matplotlib.pyplot as plt

    avg, avg_backward = avg_pool_matrices(**AVG)
    p, max_backward = max_pool_matrices(MAX_INPUT, **MAX)
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), gridspec_kw=dict(width_ratios=[25, 9]))
    _show(axes[0, 0], avg, "avg_pool2d: 3x3, stride 2, padding 1,\ncount_include_pad=False (9 x 25)",
          _reciprocal, cmap="Greens")
    _show(axes[0, 1], avg_backward, "avg_pool2d_backward\n(25 x 9) = transpose", _reciprocal, cmap="Greens",
          fontsize=4.5)
    _show(axes[1, 0], p, "max_pool2d 2x2, stride 1, at one 4x4 input:\nselection P (9 x 16)", _integer,
          cmap="Purples")
    _show(axes[1, 1], max_backward, "max_pool2d_backward\n(16 x 9) = P^T", _integer, cmap="Purples")
    fig.suptitle("Pooling backward passes are the transposes of the forward maps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


FIGURES = {
    "conv_adjoint.png": draw_conv_adjoint,
    "im2col.png": draw_im2col,
    "pool_adjoint.png": draw_pool_adjoint,
}


def main(argv=None) -> list[str]:
    """Writes every figure; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory of the PNGs (default: docs/figures)")
    parser.add_argument("--backend", default=None, help="torchconv backend (default: the fastest available on the CPU)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    os.makedirs(args.out, exist_ok=True)
    backend = args.backend or torchconv.backends.current("cpu")
    paths = []
    with torchconv.backends.use(backend):
        for name, draw in FIGURES.items():
            path = os.path.join(args.out, name)
            draw(path)
            paths.append(path)
            print(f"wrote {path} (backend {backend})")
    return paths


if __name__ == "__main__":
    main()
