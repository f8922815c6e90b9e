"""The C++ CPU convolution kernels' blocked, threaded and channels_last paths
(csrc/cpu/conv/), against torch in float64.

The kernels cut each sample's windows (output) rows into blocks of about 2 MiB
of column scratch, hand (sample, block) tasks to the threads, and, when a
sample has fewer tasks than there are threads, share one sample's blocks
among them (col2im of a transposed convolution then runs even blocks, then
odd ones). Channels_last operands are read and written in place. The shapes
here are chosen so that those paths run: several blocks per image with
boundaries inside it, batch 1 and 2 with 2 and 3 threads, and both layouts of
input and weight.
"""

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

CL = torch.channels_last


def _leaf(shape, dtype, layout=torch.contiguous_format):
    torch.manual_seed(sum(shape))
    return torch.randn(shape, dtype=dtype).contiguous(memory_format=layout).requires_grad_()


def _both(torchconv_op, torch_op, tensors, kwargs):
    """Output and all gradients of torchconv's cpp kernels and of torch, the
    latter computed in float64 from the same values (operands in the same
    layouts, the same output gradient)."""
    dtype = tensors[0].dtype

    def run(op, leaves):
        out = op(*leaves, **kwargs)
        torch.manual_seed(7)
        probe = torch.randn(out.shape, dtype=torch.float64).to(dtype).to(out.dtype)
        grads = torch.autograd.grad((out * probe).sum(), leaves)
        return out, grads

    with torchconv.backends.use("cpp"):
        ours = run(torchconv_op, tensors)
    wide = [t.detach().double().requires_grad_() for t in tensors]  # .double() keeps the layout
    theirs = run(torch_op, wide)
    return ours, theirs


def _check(ours, theirs, check_strides=True):
    """Output and gradients against torch's float64 ones rounded to their dtype,
    at torchconv.testing's tolerances, in torch's layout (the kernels produce it directly)."""
    (out, grads), (ref_out, ref_grads) = ours, theirs
    expected = tuple(t.to(out.dtype) for t in (ref_out, *ref_grads))
    assert_close_to_torch((out, *grads), expected, check_strides=check_strides, msg="(output, *grads)")


def _strides_comparable(case):
    """False for a 1x1 kernel: after a channels_last input torch's float64 weight
    gradient keeps the weight's strides, torchconv's does not
    (tests/test_layouts.py::test_pointwise_weight_grad_strides)."""
    return case["k"] != 1


# 64 channels of a 3x3 kernel: 576 column rows, 147 KiB a windows row of 64 at
# float32, so a 2 MiB block holds 14 rows: a 64-row image has 5 blocks, the
# last one short.
CONV_CASES = [
    dict(n=1, c=64, h=64, w=64, o=32, k=3, kw=dict(padding=1)),
    dict(n=2, c=64, h=61, w=64, o=16, k=3, kw=dict(stride=2, padding=1)),
    dict(n=1, c=64, h=50, w=72, o=24, k=3, kw=dict(padding=2, dilation=2)),
    dict(n=3, c=32, h=40, w=96, o=8, k=5, kw=dict(padding=2)),
    dict(n=1, c=8, h=23, w=5, o=6, k=3, kw=dict(padding=1, groups=2)),
    dict(n=1, c=96, h=70, w=64, o=32, k=1, kw=dict()),  # pointwise: the image is its own columns
    dict(n=2, c=6, h=9, w=11, o=4, k=1, kw=dict(stride=2, groups=2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c['n']}x{c['c']}x{c['h']}x{c['w']}-k{c['k']}-{c['kw']}")
@pytest.mark.parametrize("layouts", ["nchw", "nhwc", "nhwc-input", "nhwc-weight"])
def test_conv2d_blocks_threads_layouts(case, layouts, threads):
    x_layout = CL if layouts in ("nhwc", "nhwc-input") else torch.contiguous_format
    w_layout = CL if layouts in ("nhwc", "nhwc-weight") else torch.contiguous_format
    groups = case["kw"].get("groups", 1)
    x = _leaf((case["n"], case["c"], case["h"], case["w"]), torch.float64, x_layout)
    w = _leaf((case["o"], case["c"] // groups, case["k"], case["k"]), torch.float64, w_layout)
    b = _leaf((case["o"],), torch.float64)
    _check(*_both(torchconv.conv2d, F.conv2d, (x, w, b), case["kw"]), _strides_comparable(case))


# A 4x4 stride-2 transposed convolution to 64 channels: 1024 column rows, so
# a 40 x 64 windows side is cut into blocks of at most 8 rows, and with one sample
# per two threads into an even count, whose col2im runs in two passes.
CONV_T_CASES = [
    dict(n=1, c=32, h=40, w=64, o=64, k=4, kw=dict(stride=2, padding=1)),
    dict(n=2, c=16, h=33, w=40, o=64, k=3, kw=dict(stride=1, padding=1, dilation=3)),
    dict(n=1, c=16, h=37, w=50, o=64, k=5, kw=dict(stride=3, padding=2, output_padding=1)),
    dict(n=1, c=6, h=13, w=7, o=8, k=3, kw=dict(stride=2, padding=1, groups=2)),
    dict(n=1, c=64, h=64, w=40, o=48, k=1, kw=dict()),  # pointwise: GEMM straight into the image
]


@pytest.mark.parametrize("case", CONV_T_CASES, ids=lambda c: f"{c['n']}x{c['c']}x{c['h']}x{c['w']}-k{c['k']}-{c['kw']}")
@pytest.mark.parametrize("layouts", ["nchw", "nhwc", "nhwc-input", "nhwc-weight"])
def test_conv_transpose2d_blocks_threads_layouts(case, layouts, threads):
    x_layout = CL if layouts in ("nhwc", "nhwc-input") else torch.contiguous_format
    w_layout = CL if layouts in ("nhwc", "nhwc-weight") else torch.contiguous_format
    groups = case["kw"].get("groups", 1)
    x = _leaf((case["n"], case["c"], case["h"], case["w"]), torch.float64, x_layout)
    w = _leaf((case["c"], case["o"] // groups, case["k"], case["k"]), torch.float64, w_layout)
    b = _leaf((case["o"],), torch.float64)
    _check(*_both(torchconv.conv_transpose2d, F.conv_transpose2d, (x, w, b), case["kw"]), _strides_comparable(case))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
def test_blocked_kernels_in_every_dtype(dtype, layout, threads):
    """Half dtypes widen each block into float32 scratch and round each result
    once; compared with torch in float64 on the same (rounded) values, rounded
    to the dtype."""
    x = _leaf((1, 64, 48, 64), dtype, layout)
    w = _leaf((32, 64, 3, 3), dtype, layout)
    b = _leaf((32,), dtype)
    _check(*_both(torchconv.conv2d, F.conv2d, (x, w, b), dict(padding=1)))
    wt = _leaf((64, 64, 4, 4), dtype, layout)
    xt = _leaf((1, 64, 40, 32), dtype, layout)
    bt = _leaf((64,), dtype)
    _check(*_both(torchconv.conv_transpose2d, F.conv_transpose2d, (xt, wt, bt), dict(stride=2, padding=1)))


def test_weight_gradient_is_deterministic(threads):
    """Per-thread partial sums added in a fixed order: the same call gives the
    same bits every time."""
    x = _leaf((1, 64, 64, 64), torch.float32)
    dy = _leaf((1, 32, 64, 64), torch.float32)
    first = torch.ops.torchconv_cpp.conv2d_weight(x, dy, [32, 64, 3, 3], [1, 1], [1, 1], [1, 1], 1)
    for _ in range(3):
        assert torch.equal(torch.ops.torchconv_cpp.conv2d_weight(x, dy, [32, 64, 3, 3], [1, 1], [1, 1], [1, 1], 1), first)


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("batch", [2, 64], ids=["one-block", "blocks"])
def test_weight_gradient_summed_in_turn(layout, batch, threads):
    """A weight gradient at least 2048 times its reduction (256 x 2304 values
    over batch x 4 window positions) runs its blocks in turn into one sum,
    each GEMM on the threads: in one block, or in several of folded samples
    added one after the other; the same bits every time."""
    x = _leaf((batch, 256, 2, 2), torch.float64, layout)
    dy = _leaf((batch, 256, 2, 2), torch.float64, layout)
    args = ([256, 256, 3, 3], [1, 1], [1, 1], [1, 1], 1)
    got = torch.ops.torchconv_cpp.conv2d_weight(x, dy, *args)
    assert_close_to_torch(got, torch.nn.grad.conv2d_weight(x, [256, 256, 3, 3], dy, padding=1),
                          check_memory_format=False, check_strides=False)
    for _ in range(2):
        assert torch.equal(torch.ops.torchconv_cpp.conv2d_weight(x.float(), dy.float(), *args),
                           torch.ops.torchconv_cpp.conv2d_weight(x.float(), dy.float(), *args))


def test_channels_last_operands_are_not_copied_to_contiguous():
    """The channels_last kernels return channels_last results straight away
    (torch.ops.torchconv_cpp, below the Python layer that would fix a layout)."""
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=CL)
    w = torch.randn(8, 16, 3, 3).contiguous(memory_format=CL)
    out = torch.ops.torchconv_cpp.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    assert out.is_contiguous(memory_format=CL)
    assert_close_to_torch(out, F.conv2d(x, w, padding=1))
    gx = torch.ops.torchconv_cpp.conv_transpose2d(out, w, None, [1, 1], [1, 1], [0, 0], 1, [1, 1])
    assert gx.is_contiguous(memory_format=CL)
    gw = torch.ops.torchconv_cpp.conv2d_weight(x, out, [8, 16, 3, 3], [1, 1], [1, 1], [1, 1], 1)
    assert gw.is_contiguous(memory_format=CL)
    assert_close_to_torch(gw, torch.nn.grad.conv2d_weight(x, w.shape, out, padding=1))


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "nhwc"])
def test_strided_and_expanded_windows_operands(layout, threads):
    """A transposed convolution's input and the weight gradient's grad_output
    are read through their strides, a block at a time: the gradient of a sum
    (all strides 0) and strided slices, in both layouts."""
    x = _leaf((2, 16, 20, 24), torch.float64, layout)
    w = _leaf((8, 16, 3, 3), torch.float64, layout)
    with torchconv.backends.use("cpp"):
        torchconv.conv2d(x, w, padding=1).sum().backward()
    xr, wr = (t.detach().clone().requires_grad_() for t in (x, w))
    F.conv2d(xr, wr, padding=1).sum().backward()
    assert_close_to_torch((x.grad, w.grad), (xr.grad, wr.grad), msg="(grad input, grad weight)")

    sliced = torch.randn(2, 40, 20, 48, dtype=torch.float64).contiguous(memory_format=layout)[:, 3:19, :, ::2]
    wt = torch.randn(16, 8, 4, 4, dtype=torch.float64).contiguous(memory_format=layout)
    got = torch.ops.torchconv_cpp.conv_transpose2d(sliced, wt, None, [2, 2], [1, 1], [0, 0], 1, [1, 1])
    # torch's results here are of contiguous copies: their values, not their layout, are the reference.
    values_only = dict(check_memory_format=False, check_strides=False)
    assert_close_to_torch(got, F.conv_transpose2d(sliced.contiguous(), wt, stride=2, padding=1), **values_only)
    dy = torch.randn(2, 40, 20, 48, dtype=torch.float64).contiguous(memory_format=layout)[:, 5:13, :, 1::2]
    got = torch.ops.torchconv_cpp.conv2d_weight(x.detach(), dy, [8, 16, 3, 3], [1, 1], [1, 1], [1, 1], 1)
    assert_close_to_torch(got, torch.nn.grad.conv2d_weight(x.detach(), (8, 16, 3, 3), dy.contiguous(), padding=1),
                          **values_only)
