"""The worked examples of the notes this project grew from, as tests.

(a) A 1-D transposed convolution of [a, b] with the filter [x, y, z] at
    stride 2 is [ax, ay, az + bx, by, bz]: each input element stamps a scaled
    copy of the filter onto the output, the stamps 2 apart, overlapping sums.
(b) A (10, 3, 32, 32) input with one 3-channel 5x5 filter, padding 2, stride 1,
    gives (10, 1, 32, 32): "same" size.
(c) 16 filters of 4x4 at stride 2 on a 28x28 image give 16 maps of 13x13,
    from only 16 * 4 * 4 = 256 weights: (28 - 4) / 2 + 1 = 13.
(d) Transposed convolution is the adjoint of convolution with the same
    weight: <conv2d(x, W), y> = <x, conv_transpose2d(y, W)>; so conv2d's input
    gradient for an output gradient y is conv_transpose2d(y, W).

1-D examples are 2-D ops on 1-pixel-high inputs and filters.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import torchconv

DT = torch.float64


# --------------------------------------------------------------------------- (a)


def _row(values):
    """A 1-D signal as an (N=1, C=1, H=1, W) tensor."""
    return torch.as_tensor(values, dtype=DT).reshape(1, 1, 1, -1)


def transpose_1d(signal, filt, stride=2):
    """conv_transpose of a 1-D signal with a 1-D filter, via conv_transpose2d."""
    return torchconv.conv_transpose2d(_row(signal), _row(filt), stride=stride).flatten()


def test_a_concrete_numbers(backend):
    # a, b = 1, 2; x, y, z = 1, 10, 100 -> [ax, ay, az + bx, by, bz]
    out = transpose_1d([1.0, 2.0], [1.0, 10.0, 100.0])
    assert out.tolist() == [1.0, 10.0, 102.0, 20.0, 200.0]
    # Another set, with nothing special about it.
    a, b, x, y, z = 3.0, -5.0, 7.0, 0.5, -2.0
    out = transpose_1d([a, b], [x, y, z])
    assert out.tolist() == [a * x, a * y, a * z + b * x, b * y, b * z]


def test_a_formula_random(backend):
    a, b, x, y, z = torch.randn(5, dtype=DT).tolist()
    out = transpose_1d([a, b], [x, y, z])
    torch.testing.assert_close(out, torch.tensor([a * x, a * y, a * z + b * x, b * y, b * z], dtype=DT))
    # The same through torch, and with stride given as a pair (1, 2).
    torch.testing.assert_close(out, F.conv_transpose2d(_row([a, b]), _row([x, y, z]), stride=2).flatten())
    torch.testing.assert_close(
        out, torchconv.conv_transpose2d(_row([a, b]), _row([x, y, z]), stride=(1, 2)).flatten()
    )


def test_a_symbolically_by_linearity(backend):
    """The op is bilinear in (signal, filter): its value on basis vectors fixes it.

    Input e_i and filter f_j give the basis vector e_{2i + j} of the output:
    input element i stamps filter tap j at output position 2i + j. By
    bilinearity, out = sum_ij in_i w_j e_{2i+j}, which for in = [a, b] and
    w = [x, y, z] is [ax, ay, az + bx, by, bz] whatever a, b, x, y, z are.
    """
    basis_in, basis_w, basis_out = torch.eye(2, dtype=DT), torch.eye(3, dtype=DT), torch.eye(5, dtype=DT)
    # The coefficient tensor: out[k] = sum_ij T[i, j, k] in[i] w[j].
    T = torch.stack([torch.stack([transpose_1d(basis_in[i], basis_w[j]) for j in range(3)]) for i in range(2)])
    for i, j in itertools.product(range(2), range(3)):
        assert torch.equal(T[i, j], basis_out[2 * i + j]), (i, j, T[i, j])
    # Symbolic read-out: which products a*x, a*y, ... land in each output position.
    names_in, names_w = "ab", "xyz"
    symbolic = [
        " + ".join(names_in[i] + names_w[j] for i in range(2) for j in range(3) if T[i, j, k] == 1)
        for k in range(5)
    ]
    assert symbolic == ["ax", "ay", "az + bx", "by", "bz"]
    # Linearity itself, on random vectors: out(in, w) == sum_ij in_i w_j T[i, j].
    signal, filt = torch.randn(2, dtype=DT), torch.randn(3, dtype=DT)
    torch.testing.assert_close(transpose_1d(signal, filt), torch.einsum("i,j,ijk->k", signal, filt, T))


def test_a_output_length(backend):
    """(n - 1) * stride + k: 2 inputs, 3 taps, stride 2 -> 5 outputs."""
    for n, k, s in [(2, 3, 2), (1, 3, 2), (4, 3, 2), (3, 2, 3), (5, 1, 1)]:
        out = transpose_1d(torch.randn(n).tolist(), torch.randn(k).tolist(), stride=s)
        assert out.numel() == (n - 1) * s + k


# --------------------------------------------------------------------------- (b)


def test_b_same_size_with_padding_2(backend):
    x = torch.randn(10, 3, 32, 32)
    w = torch.randn(1, 3, 5, 5)
    out = torchconv.conv2d(x, w, padding=2, stride=1)
    assert out.shape == (10, 1, 32, 32)
    torch.testing.assert_close(out, F.conv2d(x, w, padding=2, stride=1), rtol=0, atol=1e-5 * max(1, out.abs().max()))
    # padding='same' is the same thing for this odd kernel.
    torch.testing.assert_close(torchconv.conv2d(x, w, padding="same"), out, rtol=0, atol=0)


# --------------------------------------------------------------------------- (c)


def test_c_sixteen_4x4_filters_stride_2(backend):
    image = torch.randn(1, 28, 28)  # unbatched: (C, H, W)
    weight = torch.randn(16, 1, 4, 4)
    assert weight.numel() == 256  # 16 filters * 4 * 4: shared across all 13 * 13 positions
    out = torchconv.conv2d(image, weight, stride=2)
    assert out.shape == (16, 13, 13)  # (28 - 4) // 2 + 1 = 13
    torch.testing.assert_close(out, F.conv2d(image, weight, stride=2), rtol=0, atol=1e-5 * max(1, out.abs().max()))
    # 16 * 13 * 13 = 2704 outputs from 256 weights (a dense layer would need 784 * 2704).
    assert out.numel() == 2704


# --------------------------------------------------------------------------- (d)

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups)
ADJOINT_CASES = [
    (2, 3, 4, 8, 8, (3, 3), 1, 0, 1, 1),
    (2, 3, 4, 9, 7, (3, 3), 2, 1, 1, 1),  # strided: output_padding restores x's size
    (1, 4, 6, 10, 9, (3, 2), (2, 3), (1, 0), (1, 2), 2),
    (3, 2, 2, 7, 7, (5, 5), 1, 2, 1, 1),  # example (b)'s shape of conv, smaller
    (1, 1, 16, 28, 28, (4, 4), 2, 0, 1, 1),  # example (c)
    (2, 4, 4, 6, 6, (1, 1), 3, 0, 1, 4),  # depthwise, 1x1, stride beyond the kernel
    (1, 3, 3, 11, 5, (2, 3), (3, 1), (1, 1), (2, 1), 3),
]


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _adjoint_operands(case):
    n, c_in, c_out, h, w, kernel, stride, padding, dilation, groups = case
    x = torch.randn(n, c_in, h, w, dtype=DT)
    weight = torch.randn(c_out, c_in // groups, *kernel, dtype=DT)
    conv_kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = torch.randn_like(torchconv.conv2d(x, weight, **conv_kwargs))
    # conv2d drops the rows/columns a stride does not reach; output_padding adds them back.
    output_padding = tuple(
        (size + 2 * p - d * (k - 1) - 1) % s
        for size, k, s, p, d in zip((h, w), kernel, _as_pair(stride), _as_pair(padding), _as_pair(dilation))
    )
    return x, weight, y, conv_kwargs, output_padding


def _ids(case):
    n, c_in, c_out, h, w, kernel, stride, padding, dilation, groups = case
    return f"x{n}x{c_in}x{h}x{w}-w{c_out}x{kernel[0]}x{kernel[1]}-s{stride}-p{padding}-d{dilation}-g{groups}".replace(" ", "")


@pytest.mark.parametrize("case", ADJOINT_CASES, ids=_ids)
def test_d_adjoint_identity(backend, case):
    """<conv2d(x, W), y> == <x, conv_transpose2d(y, W)> in float64."""
    x, weight, y, conv_kwargs, output_padding = _adjoint_operands(case)
    transposed = torchconv.conv_transpose2d(y, weight, output_padding=output_padding, **conv_kwargs)
    assert transposed.shape == x.shape
    lhs = (torchconv.conv2d(x, weight, **conv_kwargs) * y).sum()
    rhs = (x * transposed).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ADJOINT_CASES, ids=_ids)
def test_d_input_gradient_is_transposed_conv(backend, case):
    """conv2d's input gradient for output gradient y is conv_transpose2d(y, W) (same weight)."""
    x, weight, y, conv_kwargs, output_padding = _adjoint_operands(case)
    x.requires_grad_()
    (grad_x,) = torch.autograd.grad(torchconv.conv2d(x, weight, **conv_kwargs), x, y)
    expected = torchconv.conv_transpose2d(y, weight, output_padding=output_padding, **conv_kwargs)
    torch.testing.assert_close(grad_x, expected, rtol=1e-12, atol=1e-12)
    # And torch agrees on both.
    (torch_grad_x,) = torch.autograd.grad(F.conv2d(x, weight, **conv_kwargs), x, y)
    torch.testing.assert_close(grad_x, torch_grad_x, rtol=1e-12, atol=1e-12)


def test_d_adjoint_by_explicit_matrices(backend):
    """The identity as matrices: the Jacobian of conv_transpose2d is the transpose of conv2d's."""
    x_shape, weight = (1, 2, 5, 4), torch.randn(3, 2, 3, 2, dtype=DT)
    kwargs = dict(stride=2, padding=1)
    out_shape = torchconv.conv2d(torch.zeros(x_shape, dtype=DT), weight, **kwargs).shape
    output_padding = tuple((n + 2 - k) % 2 for n, k in zip(x_shape[2:], weight.shape[2:]))

    def matrix(fn, in_shape):
        n = torch.Size(in_shape).numel()
        return torch.stack([fn(e.reshape(in_shape)).flatten() for e in torch.eye(n, dtype=DT)], dim=1)

    A = matrix(lambda e: torchconv.conv2d(e, weight, **kwargs), x_shape)
    B = matrix(lambda e: torchconv.conv_transpose2d(e, weight, output_padding=output_padding, **kwargs), out_shape)
    torch.testing.assert_close(B, A.T, rtol=0, atol=1e-14)
