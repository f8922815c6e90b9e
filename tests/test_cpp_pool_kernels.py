"""The compiled CPU pooling kernels against torch's own, in both layouts.

The kernels run natively in channels_last (NHWC) when the input (forward) or
grad_output (backward) suggests it, and split small batches of planes into
bands of input rows (NCHW backward) or blocks of channels (NHWC backward);
these tests call the compiled ops directly so that each path is exercised,
and compare values, indices, gradients and strides with ATen's kernels
(:func:`torchconv.testing.assert_close_to_torch`; half-precision results with
ATen's float32 result rounded to the dtype).
"""

import itertools

import pytest
import torch

import torchconv
from torchconv.testing import assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

OPS = torch.ops.torchconv_cpp
ATEN = torch.ops.aten
CL = torch.channels_last

# (kernel, stride, padding, dilation, ceil_mode): the common cases, overlapping
# windows, ceil_mode's partial windows, and dilations with windows that see
# no input at all (index past the plane, no gradient).
WINDOWS = [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 3), (1, 1), (1, 1), (1, 1), False),
    ((3, 2), (2, 3), (1, 0), (1, 1), True),
    ((2, 3), (3, 1), (0, 1), (2, 1), True),
    ((2, 2), (1, 1), (1, 1), (3, 3), False),
    ((1, 1), (4, 4), (0, 0), (1, 1), True),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(2, 5, 9, 11), (1, 2, 33, 17), (3, 17, 6, 7)]


def _wide(t):
    """A half tensor as float32: the reference for kernels that accumulate
    halves in float32 and round once (torch's round in the dtype as they go)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _input(shape, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    x[..., ::4, 1::3] = x[..., ::4, :1]  # ties along rows: the first maximum must win
    return x.contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_max_pool2d_matches_torch(window, shape, dtype, layout):
    k, s, p, d, ceil = window
    x = _input(shape, dtype, layout)
    y, idx = OPS.max_pool2d(x, k, s, p, d, ceil)
    y_t, idx_t = ATEN.max_pool2d_with_indices(x, k, s, p, d, ceil)
    assert_close_to_torch((y, idx), (y_t, idx_t), atol=0, msg="max_pool2d")  # selected: exact
    for g_layout in (torch.contiguous_format, layout):
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype).contiguous(memory_format=g_layout)
        gx = OPS.max_pool2d_backward(g, idx, shape[2:], k, s, p, d)
        gx_t = ATEN.max_pool2d_with_indices_backward(
            _wide(g), _wide(x).contiguous(memory_format=g_layout), k, s, p, d, ceil, idx_t).to(dtype)
        assert_close_to_torch(gx, gx_t, msg=f"grad input, grad_output in {g_layout}")


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("window", [w for w in WINDOWS if w[3] == (1, 1)], ids=str)
@pytest.mark.parametrize("count_include_pad,divisor", [(True, None), (False, None), (True, 3)])
def test_avg_pool2d_matches_torch(window, shape, dtype, layout, count_include_pad, divisor):
    k, s, p, _, ceil = window
    x = _input(shape, dtype, layout)
    y = OPS.avg_pool2d(x, k, s, p, ceil, count_include_pad, divisor)
    y_t = ATEN.avg_pool2d(_wide(x), k, s, p, ceil, count_include_pad, divisor).to(dtype)
    assert_close_to_torch(y, y_t, msg="avg_pool2d")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype).contiguous(memory_format=layout)
    gx = OPS.avg_pool2d_backward(g, shape[2:], k, s, p, ceil, count_include_pad, divisor)
    gx_t = ATEN.avg_pool2d_backward(_wide(g), _wide(x), k, s, p, ceil, count_include_pad, divisor).to(dtype)
    assert_close_to_torch(gx, gx_t, msg="grad input")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_is_bitwise_the_contiguous_result(dtype):
    """Both layouts visit each window's taps in the same order: same bits."""
    x = _input((2, 19, 15, 13), dtype, torch.contiguous_format)
    xc = x.contiguous(memory_format=CL)
    for k, s, p, d, ceil in WINDOWS:
        a, ia = OPS.max_pool2d(x, k, s, p, d, ceil)
        b, ib = OPS.max_pool2d(xc, k, s, p, d, ceil)
        assert torch.equal(a, b) and torch.equal(ia, ib)
        if d == (1, 1):
            for cip, div in [(True, None), (False, None), (False, 5)]:
                assert torch.equal(OPS.avg_pool2d(x, k, s, p, ceil, cip, div), OPS.avg_pool2d(xc, k, s, p, ceil, cip, div))


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_max_pool2d_nan_and_ties(layout, dtype):
    """ATen's rule in both layouts: the last NaN of a window wins, else the first maximum."""
    x = torch.zeros(1, 3, 4, 4, dtype=dtype)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = float("nan")  # two NaNs: (1, 0) is the later tap
    x[0, 1] = 7  # all tied: the first tap
    x[0, 2, 1, 1] = float("-inf")
    x[0, 2] = float("-inf")  # all -inf: the first tap, value -inf
    x = x.contiguous(memory_format=layout)
    y, idx = OPS.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    y_t, idx_t = ATEN.max_pool2d_with_indices(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert_close_to_torch((y, idx), (y_t, idx_t), atol=0, msg="max_pool2d")  # NaN where torch has NaN
    assert idx[0, 0, 0, 0] == 4 and idx[0, 1, 0, 0] == 0 and idx[0, 2, 1, 1] == 10


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("planes", [(1, 1), (1, 2), (1, 3), (2, 1), (1, 40)])
def test_few_planes_split_over_threads(planes, dtype, layout):
    """A batch of few planes is split into bands of rows (NCHW) or channel
    blocks (NHWC) across threads: the same result as torch, and the same bits
    whatever the thread count (every cell takes its terms in serial order)."""
    x = _input((*planes, 61, 45), dtype, layout)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in sorted({1, 2, 3, max(threads, 1)}):
            torch.set_num_threads(n)
            out = []
            for k, s, p, d, ceil in WINDOWS[:4]:
                y, idx = OPS.max_pool2d(x, k, s, p, d, ceil)
                g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
                g = g.contiguous(memory_format=layout)
                out += [y, idx, OPS.max_pool2d_backward(g, idx, x.shape[2:], k, s, p, d)]
                out += [OPS.avg_pool2d(x, k, s, p, ceil, True, None),
                        OPS.avg_pool2d_backward(g, x.shape[2:], k, s, p, ceil, False, None)]
                y_t, idx_t = ATEN.max_pool2d_with_indices(x, k, s, p, d, ceil)
                assert_close_to_torch(idx, idx_t, msg="indices")
                gx_t = ATEN.max_pool2d_with_indices_backward(_wide(g), _wide(x), k, s, p, d, ceil, idx_t).to(dtype)
                assert_close_to_torch(out[-3], gx_t, msg="max_pool2d grad input")
                avg_gx_t = ATEN.avg_pool2d_backward(_wide(g), _wide(x), k, s, p, ceil, False, None).to(dtype)
                assert_close_to_torch(out[-1], avg_gx_t, msg="avg_pool2d grad input")
            results.append(out)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("planes", [(1, 1), (4, 8)])
def test_max_pool2d_backward_scatters_any_index(planes, layout):
    """Indices a caller makes up (outside their window, even in rows whose
    windows see no input) are scattered where they point, as torch does;
    the banded path must notice them and not drop any."""
    n, c = planes
    in_h, in_w = 24, 10
    k, s, p, d = (2, 2), (2, 2), (1, 1), (3, 1)  # rows of windows that see no input exist
    x = torch.randn(n, c, in_h, in_w).contiguous(memory_format=layout)
    y, _ = OPS.max_pool2d(x, k, s, p, d, True)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, in_h * in_w, y.shape, generator=gen).contiguous(memory_format=layout)
    g = torch.randn(y.shape, generator=gen).contiguous(memory_format=layout)
    gx = OPS.max_pool2d_backward(g, idx, (in_h, in_w), k, s, p, d)
    expected = torch.zeros(n * c, in_h * in_w).index_put_(
        (torch.arange(n * c).repeat_interleave(y.shape[2] * y.shape[3]), idx.reshape(n * c, -1).flatten()),
        g.reshape(n * c, -1).flatten(), accumulate=True,
    ).reshape(n, c, in_h, in_w)
    # The scatter, written with index_put: its values are the reference, not its (contiguous) layout.
    assert_close_to_torch(gx, expected, check_memory_format=False, check_strides=False)
    bad = idx.clone()
    bad[0, 0, 1, 1] = in_h * in_w + 5  # past the plane, in a window that sees input
    with pytest.raises(RuntimeError, match="outside the input plane"):
        OPS.max_pool2d_backward(g, bad, (in_h, in_w), k, s, p, d)
    bad[0, 0, 1, 1] = -1
    with pytest.raises(RuntimeError, match="outside the input plane"):
        OPS.max_pool2d_backward(g, bad, (in_h, in_w), k, s, p, d)


@pytest.mark.parametrize("op", ["max", "avg"])
def test_channels_last_through_torchconv_needs_no_copy(op):
    """Public functions on a channels_last input give channels_last outputs
    and gradients, equal to torch's."""
    x = _input((2, 8, 14, 14), torch.float32, CL).requires_grad_()
    fn, fn_t = (torchconv.max_pool2d, torch.nn.functional.max_pool2d) if op == "max" else (
        torchconv.avg_pool2d, torch.nn.functional.avg_pool2d)
    with torchconv.backends.use("cpp"):
        y = fn(x, 3, 2, 1)
        (gx,) = torch.autograd.grad(y.relu().sum(), x)
    y_t = fn_t(x, 3, 2, 1)
    (gx_t,) = torch.autograd.grad(y_t.relu().sum(), x)
    assert_close_to_torch((y, gx), (y_t, gx_t), msg="(output, grad input)")
    assert y.is_contiguous(memory_format=CL)
