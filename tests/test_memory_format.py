"""The memory-format rules of ``torchconv._memory_format`` against torch's own.

Torch does not expose ``suggest_memory_format`` to Python, but its CPU
max pooling gives its output exactly the strides of a fresh tensor in the
memory format its input suggests, so a 1x1 window shows the rule at work on
any input. The end-to-end memory formats of the ops are tested in
tests/test_layouts.py; these are the rules alone, on the awkward cases
(size-1 and size-0 dimensions, expanded, sliced and permuted tensors).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchconv._memory_format import (
    conv_grads_in_memory_format,
    conv_memory_format,
    dense_strides,
    in_memory_format,
    memory_format_of,
    output_padding_is_big,
    with_format_strides,
)

CL = torch.channels_last
FORMATS = (torch.contiguous_format, CL)


def _tensors():
    """(id, 4-d tensor) pairs covering the cases the stride rule distinguishes."""
    base = torch.randn(2, 3, 4, 5)
    yield "contiguous", base
    yield "channels_last", base.contiguous(memory_format=CL)
    for shape in [(1, 3, 1, 1), (2, 1, 4, 5), (2, 3, 1, 5), (2, 3, 4, 1), (1, 1, 1, 1), (3, 1, 1, 1), (1, 4, 1, 3)]:
        for memory_format in FORMATS:
            name = "x".join(map(str, shape))
            yield f"{name}-{memory_format}", torch.randn(shape).contiguous(memory_format=memory_format)
    yield "permuted-hw", base.permute(0, 1, 3, 2)
    yield "permuted-nc", base.permute(1, 0, 2, 3)
    yield "sliced-w", base[..., ::2]
    yield "sliced-channels_last", base.contiguous(memory_format=CL)[:, 1:]
    yield "expanded-channels", torch.randn(2, 1, 4, 5).expand(2, 3, 4, 5)
    yield "expanded-batch", torch.randn(1, 3, 4, 5).contiguous(memory_format=CL).expand(2, 3, 4, 5)
    yield "1c1w-transposed", torch.randn(1, 5, 1, 3).transpose(1, 3)


_CASES = list(_tensors())


@pytest.mark.parametrize("x", [t for _, t in _CASES], ids=[name for name, _ in _CASES])
def test_memory_format_of_is_torchs_suggestion(x):
    suggested = F.max_pool2d(x, 1).stride()
    assert dense_strides(x.shape, memory_format_of(x)) == suggested


def test_memory_format_of_other_tensors_is_contiguous():
    assert memory_format_of(torch.randn(2, 3, 4)) == torch.contiguous_format
    assert memory_format_of(torch.randn(0, 3, 4, 5).contiguous(memory_format=CL)) == torch.contiguous_format
    assert memory_format_of(torch.randn(2, 3, 4, 5).to_sparse()) == torch.contiguous_format


_SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (0, 3, 2, 2), (2, 0, 1, 3), (3, 1, 4, 1)]


@pytest.mark.parametrize(
    "shape, memory_format",
    [(shape, f) for shape in _SHAPES for f in FORMATS] + [((2, 3), torch.contiguous_format), ((4, 0, 2), torch.contiguous_format)],
    ids=str,
)
def test_dense_strides_are_a_fresh_tensors(shape, memory_format):
    assert dense_strides(shape, memory_format) == torch.empty(shape, memory_format=memory_format).stride()


def test_in_memory_format_copies_only_when_strides_differ():
    x = torch.randn(1, 3, 1, 1)  # contiguous and channels_last alike to is_contiguous, not by strides
    assert in_memory_format(x, torch.contiguous_format) is x
    y = in_memory_format(x, CL)
    assert y.stride() == dense_strides(x.shape, CL) and torch.equal(y, x)
    assert in_memory_format(y, CL) is y
    z = in_memory_format(torch.randn(2, 3, 4, 5).permute(0, 1, 3, 2), torch.contiguous_format)
    assert z.stride() == dense_strides(z.shape, torch.contiguous_format)


def test_with_format_strides_views_a_1x1_weight_as_channels_last():
    w = torch.randn(8, 4, 1, 1)  # in channels_last order already, with contiguous strides
    view = with_format_strides(w, CL)
    assert view.stride() == dense_strides(w.shape, CL) and memory_format_of(view) == CL
    assert view.data_ptr() == w.data_ptr() and torch.equal(view, w)
    assert with_format_strides(view, CL) is view
    assert with_format_strides(w, torch.contiguous_format) is w
    wide = torch.randn(8, 4, 3, 3)  # not in channels_last order: left as it is
    assert with_format_strides(wide, CL) is wide


@pytest.mark.parametrize("path", ["python_autograd", "compiled_entry"])
def test_expanded_gradient_of_a_channels_last_1x1_layer(path):
    """y.sum()'s gradient suggests no memory format and a 1x1 weight's
    strides read contiguous: the input gradient still comes out
    channels_last, as torch's, and equal to it."""
    import torchconv
    from torch.profiler import profile

    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(16, 8, 1, 1).contiguous(memory_format=CL).requires_grad_()
    expected = torch.autograd.grad(F.conv2d(x, w).sum(), (x, w))
    with torchconv.backends.use("cpp"):
        if path == "python_autograd":  # the profiler sends the call down the Python path
            with profile():
                ours = torch.autograd.grad(torchconv.conv2d(x, w).sum(), (x, w))
        else:
            ours = torch.autograd.grad(torchconv.conv2d(x, w).sum(), (x, w))
    for got, want in zip(ours, expected):
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("weight_format", FORMATS, ids=str)
@pytest.mark.parametrize("input_format", FORMATS, ids=str)
def test_conv_memory_format_and_gradients_are_torchs(input_format, weight_format):
    x = torch.randn(2, 3, 6, 6).contiguous(memory_format=input_format).requires_grad_()
    w = torch.randn(4, 3, 3, 3).contiguous(memory_format=weight_format).requires_grad_()
    y = F.conv2d(x, w)
    assert y.stride() == dense_strides(y.shape, conv_memory_format(x, w))
    # An incoming gradient in the other memory format does not change the gradients'.
    other = torch.contiguous_format if conv_memory_format(x, w) == CL else CL
    grad_output = torch.randn(y.shape).contiguous(memory_format=other)
    expected = torch.autograd.grad(y, (x, w), grad_output)
    ours = conv_grads_in_memory_format(x, w, grad_output.new_ones(x.shape), grad_output.new_ones(w.shape))
    assert [g.stride() for g in ours] == [g.stride() for g in expected]
    assert conv_grads_in_memory_format(x, w, None, None) == (None, None)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize("weight_format", FORMATS, ids=str)
@pytest.mark.parametrize("input_format", FORMATS, ids=str)
def test_complex_gradients_are_contiguous_as_torchs(input_format, weight_format, dtype):
    x = torch.randn(2, 3, 6, 6, dtype=dtype).contiguous(memory_format=input_format).requires_grad_()
    w = torch.randn(4, 3, 3, 3, dtype=dtype).contiguous(memory_format=weight_format).requires_grad_()
    y = F.conv2d(x, w)
    expected = torch.autograd.grad(y, (x, w), torch.randn_like(y))
    ours = conv_grads_in_memory_format(x, w, torch.ones_like(x), torch.ones_like(w))
    assert [g.stride() for g in ours] == [g.stride() for g in expected]
    assert all(g.is_contiguous() for g in expected)


def test_output_padding_is_big():
    assert output_padding_is_big([2, 2], [1, 2]) and output_padding_is_big([1, 3], [1, 0])
    assert not output_padding_is_big([2, 2], [1, 1])
