"""The C++ CPU tiled weight gradient (csrc/cpu/conv/direct_tiled_weight.h), against torch.

conv2d_weight with whole tiles of gradient channels (a multiple of 32 per
group) on contiguous operands runs without im2col: a tile of gradient
channels x weight columns is summed in registers over the pixels, straight
from zero-padded copies of the image's rows and a pixel-major copy of the
gradient (``uses_tiled_weight_kernel`` in that file has the rule). The
shapes here fall under the rule: strides along either axis, dilation,
asymmetric padding, 5x5 and 2x3 windows, groups, a single image channel
(weight columns fewer than a tile), a weight whose columns end mid-tile,
images split into bands of rows across threads, the weight gradient of a
strided transposed convolution, an expanded gradient and a gradient with
permuted strides (read in place), in float64 against torch's float64 and in
the other dtypes against torch's result rounded to them.
"""

import pytest
import torch

import torchconv
from torchconv.testing import assert_close_to_torch

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (batch, image channels, gradient channels, image size, kernel, stride, padding, dilation, groups)
SHAPES = [
    (2, 8, 32, (14, 13), 3, 1, 1, 1, 1),
    (2, 5, 64, (15, 16), 3, 2, 1, 1, 1),  # stride 2; 45 weight columns: the last tile ends mid-way
    (2, 4, 32, (13, 17), (2, 3), (2, 1), (0, 2), (2, 1), 1),  # strides, padding and dilation per axis
    (3, 6, 32, (12, 11), 5, 3, 2, 1, 1),  # 5x5 at stride 3
    (2, 8, 64, (10, 10), 3, 1, 1, 1, 2),  # groups
    (2, 1, 32, (28, 28), 3, 1, 1, 1, 1),  # one image channel: 9 weight columns, fewer than a tile
    (1, 8, 32, (64, 40), 3, 1, 1, 1, 1),  # batch 1: the image in bands of rows across the threads
    (2, 4, 32, (8, 8), 3, 1, 4, 3, 1),  # padding past the window's reach
]


def _ids(shape):
    return "-".join(str(v).replace(" ", "") for v in shape)


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _inputs(shape, dtype):
    n, c, o, size, k, s, p, d, g = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c * g, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(o * g, c, *_pair(k), generator=gen, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, w, None, _pair(s), _pair(p), _pair(d), g)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return x.to(dtype), dy.to(dtype), list(w.shape), dict(stride=_pair(s), padding=_pair(p), dilation=_pair(d), groups=g)


def _expected(x, dy, weight_size, kw, transposed=False, output_padding=(0, 0)):
    weight = torch.empty(weight_size, dtype=torch.float64)
    args = (kw["stride"], kw["padding"], kw["dilation"], transposed, list(output_padding), kw["groups"])
    return torch.ops.aten.convolution_backward(dy.double(), x.double(), weight, None, *args, [False, True, False])[1]


def _ours(x, dy, weight_size, kw):
    with torchconv.backends.use("cpp"):
        return torch.ops.torchconv.conv2d_weight(x, dy, weight_size, kw["stride"], kw["padding"], kw["dilation"],
                                                 kw["groups"])


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_weight_gradient_tiled(threads, shape):
    x, dy, weight_size, kw = _inputs(shape, torch.float64)
    got = _ours(x, dy, weight_size, kw)
    assert_close_to_torch(got, _expected(x, dy, weight_size, kw))
    assert got.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[5]], ids=_ids)
def test_weight_gradient_tiled_in_other_dtypes(shape, dtype):
    x, dy, weight_size, kw = _inputs(shape, dtype)
    got = _ours(x, dy, weight_size, kw)
    assert got.dtype == dtype
    assert_close_to_torch(got, _expected(x, dy, weight_size, kw).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_strided_transposed_convolution_weight_gradient(threads, dtype):
    """conv_transpose2d's weight gradient (k4 s2, as a DCGAN's) is
    conv2d_weight of its output's gradient with its input as the gradient."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 7, 6, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(64, 16, 4, 4, generator=gen, dtype=dtype, requires_grad=True)
    with torchconv.backends.use("cpp"):
        y = torchconv.conv_transpose2d(x, w, stride=2, padding=1)
    probe = torch.randn(y.shape, generator=gen, dtype=dtype)
    (got,) = torch.autograd.grad((y * probe).sum(), w)
    wide = w.detach().double().requires_grad_()
    expected = torch.nn.functional.conv_transpose2d(x.detach().double(), wide, stride=2, padding=1)
    (want,) = torch.autograd.grad((expected * probe.double()).sum(), wide)
    assert_close_to_torch(got, want.to(dtype))


def test_gradient_read_through_its_strides():
    """An expanded gradient (y.sum()'s) and one with permuted strides are read in place."""
    x, dy, weight_size, kw = _inputs(SHAPES[1], torch.float64)
    expanded = torch.ones(1, dtype=torch.float64).expand(dy.shape)
    assert_close_to_torch(_ours(x, expanded, weight_size, kw), _expected(x, expanded, weight_size, kw))
    permuted = dy.transpose(2, 3).contiguous().transpose(2, 3)
    assert_close_to_torch(_ours(x, permuted, weight_size, kw), _expected(x, dy, weight_size, kw))


def test_weight_gradient_is_deterministic(threads):
    x, dy, weight_size, kw = _inputs(SHAPES[6], torch.float32)
    first = _ours(x, dy, weight_size, kw)
    assert torch.equal(first, _ours(x, dy, weight_size, kw))


def test_gradient_larger_than_the_output_is_refused():
    """A grad_output wider than conv2d's output would read past the padded
    rows: the op refuses it, as torch's convolution_backward does."""
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match=r"grad_output .* is larger than conv2d's output \(6x6\)"):
        _ours(x, torch.randn(1, 32, 6, 40), [32, 3, 3, 3], dict(stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1))
