"""Gradients of torchconv's ops: gradcheck and gradgradcheck in float64.

Covers the four public ops with respect to every tensor input (input,
weight, bias) over a table of configurations, the internal backward ops
(``torchconv::conv2d_weight``, ``max_pool2d_backward``,
``avg_pool2d_backward``), the ``torch.autograd.Function`` classes of
``torchconv._autograd`` used directly, and that a backward computes only the
gradients that are needed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import torchconv
from torchconv import _autograd

DT = torch.float64

# torch's own F.conv2d (the reference for the gradients) warns about even 'same' kernels.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


# ---------------------------------------------------------------- helpers


def _tensor(shape, channels_last=False, requires_grad=True):
    t = torch.randn(*shape, dtype=DT)
    if channels_last:
        assert t.dim() == 4
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def _distinct(shape, channels_last=False):
    """Input for max pooling: all values distinct and far apart compared with
    gradcheck's eps, so that no window's argmax flips under perturbation."""
    n = 1
    for s in shape:
        n *= s
    t = (torch.randperm(max(n, 1))[:n].to(DT) * 0.1 - 0.05 * n).reshape(shape)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


def _check(fn, inputs, fast_mode=True):
    """gradcheck and gradgradcheck.

    The tables run in fast mode (a random projection ``v^T J u`` of the
    Jacobian, numerical against analytical; an error anywhere in J shows with
    probability one) because the full Jacobian of every configuration takes
    minutes; ``test_full_jacobian`` checks full Jacobians on tiny shapes.
    """
    kw = dict(eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast_mode)
    assert gradcheck(fn, inputs, **kw)
    assert gradgradcheck(fn, inputs, **kw)


def _grads_like_torch(ours, theirs, inputs):
    """First- and second-order gradients of ``ours`` match ``theirs`` (torch)."""
    results = []
    for fn in (ours, theirs):
        torch.manual_seed(1)
        out = fn(*inputs)
        gy = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, gy, create_graph=True, allow_unused=True)
        total = sum((g * g).sum() for g in grads if g is not None)
        second = torch.autograd.grad(total, inputs, allow_unused=True) if total.requires_grad else ()
        results.append((out, grads, second))
    (o1, g1, s1), (o2, g2, s2) = results
    torch.testing.assert_close(o1, o2)
    for a, b in [*zip(g1, g2), *zip(s1, s2)]:
        if a is None or b is None:
            # None and an all-zero gradient are the same gradient.
            other = a if b is None else b
            assert other is None or not other.any()
            continue
        torch.testing.assert_close(a, b)


def _ids(configs):
    return [c["id"] for c in configs]


# ---------------------------------------------------------------- conv2d

CONV2D = [
    dict(id="basic", x=(2, 3, 5, 6), w=(4, 3, 3, 3)),
    dict(id="no_bias", x=(2, 3, 5, 5), w=(2, 3, 3, 2), bias=False),
    dict(id="stride2_pad1", x=(2, 2, 6, 7), w=(3, 2, 3, 3), stride=2, padding=1),
    dict(id="stride_pad_tuple", x=(1, 2, 7, 6), w=(2, 2, 3, 2), stride=(2, 1), padding=(1, 0)),
    dict(id="stride3_leftover", x=(1, 2, 8, 8), w=(2, 2, 2, 3), stride=3, padding=(0, 1)),
    dict(id="dilation2", x=(1, 2, 7, 7), w=(3, 2, 3, 3), dilation=2, padding=1),
    dict(id="dilation_tuple_stride", x=(2, 2, 8, 7), w=(2, 2, 2, 3), dilation=(3, 1), stride=(1, 2)),
    dict(id="groups2", x=(2, 4, 5, 5), w=(6, 2, 3, 3), groups=2, padding=1),
    dict(id="depthwise", x=(1, 3, 5, 5), w=(6, 1, 3, 3), groups=3, stride=2),
    dict(id="kernel1x1", x=(2, 3, 4, 4), w=(2, 3, 1, 1)),
    dict(id="same_odd", x=(1, 2, 5, 5), w=(2, 2, 3, 3), padding="same"),
    dict(id="same_even_2x4", x=(1, 2, 5, 6), w=(3, 2, 2, 4), padding="same"),
    dict(id="same_even_dilated", x=(1, 2, 6, 5), w=(2, 2, 2, 3), padding="same", dilation=(3, 1)),
    dict(id="same_dilated_odd_eff", x=(1, 2, 7, 7), w=(2, 2, 4, 2), padding="same", dilation=2),
    dict(id="same_groups", x=(1, 4, 5, 5), w=(4, 2, 2, 2), padding="same", groups=2),
    dict(id="valid", x=(1, 2, 5, 5), w=(2, 2, 3, 3), padding="valid"),
    dict(id="unbatched", x=(2, 5, 5), w=(3, 2, 3, 3), padding=1),
    dict(id="unbatched_same_even", x=(2, 5, 4), w=(3, 2, 2, 2), padding="same"),
    dict(id="channels_last", x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding=1, channels_last=True),
    dict(id="channels_last_weight", x=(2, 3, 5, 5), w=(4, 3, 3, 3), stride=2, weight_channels_last=True),
    dict(id="batch0", x=(0, 2, 5, 5), w=(3, 2, 3, 3), padding=1),
]


def _conv2d_case(cfg):
    x = _tensor(cfg["x"], cfg.get("channels_last", False))
    w = _tensor(cfg["w"], cfg.get("weight_channels_last", False))
    inputs = [x, w]
    if cfg.get("bias", True):
        inputs.append(_tensor((cfg["w"][0],)))
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups") if k in cfg}

    def ours(*t):
        return torchconv.conv2d(*t, **kw)

    def theirs(*t):
        return F.conv2d(*t, **kw)

    return ours, theirs, tuple(inputs)


@pytest.mark.parametrize("cfg", CONV2D, ids=_ids(CONV2D))
def test_conv2d_gradcheck(backend, cfg):
    ours, _, inputs = _conv2d_case(cfg)
    _check(ours, inputs)


@pytest.mark.parametrize("cfg", CONV2D, ids=_ids(CONV2D))
def test_conv2d_grads_match_torch(backend, cfg):
    ours, theirs, inputs = _conv2d_case(cfg)
    _grads_like_torch(ours, theirs, inputs)


# ---------------------------------------------------------------- conv_transpose2d

CONV_T = [
    dict(id="basic", x=(2, 3, 4, 5), w=(3, 2, 3, 3)),
    dict(id="no_bias", x=(2, 2, 4, 4), w=(2, 3, 2, 3), bias=False),
    dict(id="stride2", x=(1, 2, 4, 4), w=(2, 3, 3, 3), stride=2),
    dict(id="stride2_pad1_outpad1", x=(2, 2, 3, 4), w=(2, 2, 3, 3), stride=2, padding=1, output_padding=1),
    dict(id="stride_tuple_outpad", x=(1, 2, 3, 4), w=(2, 2, 3, 2), stride=(3, 2), output_padding=(2, 1)),
    dict(id="dilation2", x=(1, 2, 4, 4), w=(2, 2, 3, 3), dilation=2, padding=1),
    # output_padding >= stride is allowed when it is below dilation.
    dict(id="outpad_ge_stride_lt_dilation", x=(1, 2, 4, 4), w=(2, 2, 3, 3), dilation=3, output_padding=2),
    dict(id="outpad_mixed", x=(1, 2, 4, 3), w=(2, 2, 2, 3), stride=(2, 1), dilation=(1, 3),
         output_padding=(1, 2), padding=(0, 1)),
    dict(id="groups2", x=(2, 4, 3, 3), w=(4, 2, 3, 3), groups=2, stride=2, padding=1),
    dict(id="depthwise", x=(1, 3, 3, 3), w=(3, 1, 2, 2), groups=3),
    dict(id="unbatched", x=(2, 3, 4), w=(2, 3, 3, 3), stride=2, output_padding=1),
    dict(id="channels_last", x=(2, 3, 4, 4), w=(3, 2, 3, 3), stride=2, channels_last=True),
    dict(id="channels_last_weight", x=(1, 3, 4, 4), w=(3, 2, 3, 3), weight_channels_last=True),
    dict(id="batch0", x=(0, 2, 3, 3), w=(2, 3, 3, 3), stride=2),
]


def _conv_t_case(cfg):
    x = _tensor(cfg["x"], cfg.get("channels_last", False))
    w = _tensor(cfg["w"], cfg.get("weight_channels_last", False))
    inputs = [x, w]
    if cfg.get("bias", True):
        inputs.append(_tensor((cfg["w"][1] * cfg.get("groups", 1),)))
    kw = {k: cfg[k] for k in ("stride", "padding", "output_padding", "groups", "dilation") if k in cfg}

    def ours(*t):
        return torchconv.conv_transpose2d(*t, **kw)

    def theirs(*t):
        return F.conv_transpose2d(*t, **kw)

    return ours, theirs, tuple(inputs)


@pytest.mark.parametrize("cfg", CONV_T, ids=_ids(CONV_T))
def test_conv_transpose2d_gradcheck(backend, cfg):
    ours, _, inputs = _conv_t_case(cfg)
    _check(ours, inputs)


@pytest.mark.parametrize("cfg", CONV_T, ids=_ids(CONV_T))
def test_conv_transpose2d_grads_match_torch(backend, cfg):
    ours, theirs, inputs = _conv_t_case(cfg)
    _grads_like_torch(ours, theirs, inputs)


# ---------------------------------------------------------------- max_pool2d

MAXPOOL = [
    dict(id="k2", x=(2, 2, 4, 6), kernel_size=2),
    dict(id="k3_s1", x=(1, 2, 5, 5), kernel_size=3, stride=1),
    dict(id="k3_s2_pad1", x=(1, 2, 6, 5), kernel_size=3, stride=2, padding=1),
    dict(id="rect", x=(1, 2, 5, 7), kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(id="dilation2", x=(1, 2, 7, 7), kernel_size=3, stride=2, dilation=2, padding=1),
    dict(id="dilation_tuple", x=(1, 1, 7, 6), kernel_size=2, stride=1, dilation=(3, 2)),
    dict(id="ceil_mode", x=(1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    dict(id="ceil_mode_pad", x=(1, 2, 6, 6), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(id="ceil_mode_dilated", x=(1, 1, 8, 7), kernel_size=2, stride=3, dilation=2, ceil_mode=True),
    dict(id="return_indices", x=(2, 2, 5, 5), kernel_size=3, stride=2, return_indices=True),
    dict(id="unbatched", x=(2, 5, 5), kernel_size=2, stride=1),
    dict(id="unbatched_indices", x=(2, 5, 4), kernel_size=2, return_indices=True, ceil_mode=True),
    dict(id="channels_last", x=(2, 3, 5, 5), kernel_size=2, stride=1, channels_last=True),
    dict(id="batch0", x=(0, 2, 4, 4), kernel_size=2),
]


def _maxpool_case(cfg):
    x = _distinct(cfg["x"], cfg.get("channels_last", False))
    kw = {k: cfg[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices") if k in cfg}

    def ours(t):
        return torchconv.max_pool2d(t, **kw)

    def theirs(t):
        return F.max_pool2d(t, **kw)

    return ours, theirs, (x,)


@pytest.mark.parametrize("cfg", MAXPOOL, ids=_ids(MAXPOOL))
def test_max_pool2d_gradcheck(backend, cfg):
    ours, _, inputs = _maxpool_case(cfg)
    _check(ours, inputs)


@pytest.mark.parametrize("cfg", MAXPOOL, ids=_ids(MAXPOOL))
def test_max_pool2d_grads_match_torch(backend, cfg):
    ours, theirs, inputs = _maxpool_case(cfg)
    if cfg.get("return_indices"):
        a, ia = ours(*inputs)
        b, ib = theirs(*inputs)
        assert torch.equal(ia, ib)
        assert not ia.requires_grad
        ours_v, theirs_v = (lambda t: ours(t)[0]), (lambda t: theirs(t)[0])
    else:
        ours_v, theirs_v = ours, theirs
    _grads_like_torch(ours_v, theirs_v, inputs)


# ---------------------------------------------------------------- avg_pool2d

AVGPOOL = [
    dict(id="k2", x=(2, 2, 4, 6), kernel_size=2),
    dict(id="k3_s1", x=(1, 2, 5, 5), kernel_size=3, stride=1),
    dict(id="pad_include", x=(1, 2, 5, 6), kernel_size=3, stride=2, padding=1),
    dict(id="pad_exclude", x=(1, 2, 5, 6), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(id="rect", x=(1, 2, 5, 7), kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(id="ceil_mode", x=(1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    dict(id="ceil_pad_include", x=(1, 2, 6, 6), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(id="ceil_pad_exclude", x=(1, 2, 6, 7), kernel_size=3, stride=2, padding=1, ceil_mode=True,
         count_include_pad=False),
    dict(id="divisor_override", x=(1, 2, 5, 5), kernel_size=2, stride=1, divisor_override=3),
    dict(id="divisor_override_pad_ceil", x=(1, 2, 5, 5), kernel_size=3, stride=2, padding=1, ceil_mode=True,
         divisor_override=5),
    dict(id="divisor_negative", x=(1, 1, 4, 4), kernel_size=2, divisor_override=-2),
    dict(id="unbatched", x=(2, 5, 5), kernel_size=2, stride=1),
    dict(id="channels_last", x=(2, 3, 5, 5), kernel_size=2, stride=1, padding=1, channels_last=True),
    dict(id="batch0", x=(0, 2, 4, 4), kernel_size=2),
]


def _avgpool_case(cfg):
    x = _tensor(cfg["x"], cfg.get("channels_last", False))
    kw = {
        k: cfg[k]
        for k in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        if k in cfg
    }

    def ours(t):
        return torchconv.avg_pool2d(t, **kw)

    def theirs(t):
        return F.avg_pool2d(t, **kw)

    return ours, theirs, (x,)


@pytest.mark.parametrize("cfg", AVGPOOL, ids=_ids(AVGPOOL))
def test_avg_pool2d_gradcheck(backend, cfg):
    ours, _, inputs = _avgpool_case(cfg)
    _check(ours, inputs)


@pytest.mark.parametrize("cfg", AVGPOOL, ids=_ids(AVGPOOL))
def test_avg_pool2d_grads_match_torch(backend, cfg):
    ours, theirs, inputs = _avgpool_case(cfg)
    _grads_like_torch(ours, theirs, inputs)


def test_max_pool2d_double_backward_batch0(backend):
    """Double backward of max_pool2d on an empty batch (a 0-element reshape once failed here)."""
    x = torch.randn(0, 2, 4, 4, dtype=DT)
    indices = torch.zeros(0, 2, 2, 2, dtype=torch.int64)
    gy = torch.randn(0, 2, 2, 2, dtype=DT, requires_grad=True)
    window = ([2, 2], [2, 2], [0, 0], [1, 1])
    gx = _autograd.MaxPool2dBackwardFunction.apply(gy, indices, list(x.shape[2:]), *window)
    (ggy,) = torch.autograd.grad(gx, gy, torch.ones_like(gx))
    assert ggy.shape == gy.shape


# ---------------------------------------------------------------- full Jacobians, tiny shapes

FULL = [
    ("conv2d", dict(id="conv2d", x=(1, 2, 4, 3), w=(2, 1, 2, 2), stride=(2, 1), padding=1, groups=2)),
    ("conv2d", dict(id="conv2d_same_even", x=(1, 1, 3, 4), w=(2, 1, 2, 2), padding="same")),
    ("conv_t", dict(id="conv_t", x=(1, 2, 2, 3), w=(2, 1, 2, 2), stride=2, output_padding=1, padding=(1, 0))),
    ("conv_t", dict(id="conv_t_outpad_dilation", x=(1, 1, 2, 2), w=(1, 2, 2, 2), dilation=3, output_padding=2)),
    ("maxpool", dict(id="maxpool", x=(1, 2, 4, 4), kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avgpool", dict(id="avgpool", x=(1, 2, 4, 5), kernel_size=3, stride=2, padding=1, ceil_mode=True,
                     count_include_pad=False)),
    ("avgpool", dict(id="avgpool_divisor", x=(1, 1, 4, 4), kernel_size=2, stride=1, divisor_override=3)),
]
_CASES = {"conv2d": lambda c: _conv2d_case(c), "conv_t": lambda c: _conv_t_case(c),
          "maxpool": lambda c: _maxpool_case(c), "avgpool": lambda c: _avgpool_case(c)}


@pytest.mark.parametrize("kind,cfg", FULL, ids=[c["id"] for _, c in FULL])
def test_full_jacobian(backend, kind, cfg):
    ours, _, inputs = _CASES[kind](cfg)
    _check(ours, inputs, fast_mode=False)


# ---------------------------------------------------------------- internal ops

CONV2D_WEIGHT = [
    # (input shape, weight size, stride, padding, dilation, groups)
    dict(id="basic", x=(2, 3, 5, 5), w=(2, 3, 3, 3), stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1),
    dict(id="strided_padded", x=(1, 2, 6, 7), w=(3, 2, 3, 2), stride=[2, 3], padding=[1, 0], dilation=[1, 1], groups=1),
    dict(id="dilated_groups", x=(1, 4, 7, 6), w=(4, 2, 2, 3), stride=[1, 1], padding=[1, 1], dilation=[2, 1], groups=2),
    dict(id="channels_last", x=(2, 2, 5, 5), w=(2, 2, 3, 3), stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1,
         channels_last=True),
]


@pytest.mark.parametrize("cfg", CONV2D_WEIGHT, ids=_ids(CONV2D_WEIGHT))
def test_conv2d_weight_op_gradcheck(backend, cfg):
    x = _tensor(cfg["x"], cfg.get("channels_last", False))
    size = cfg["w"]
    out = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(cfg["x"][2:], size[2:], cfg["stride"], cfg["padding"], cfg["dilation"])
    ]
    gy = _tensor((cfg["x"][0], size[0], *out), cfg.get("channels_last", False))
    args = (size, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])

    def fn(x, gy):
        return torch.ops.torchconv.conv2d_weight(x, gy, *args)

    _check(fn, (x, gy))
    # It is the weight gradient of conv2d.
    w = torch.zeros(size, dtype=DT, requires_grad=True)
    y = F.conv2d(x.detach(), w, None, *args[1:])
    (expected,) = torch.autograd.grad(y, w, gy.detach())
    torch.testing.assert_close(fn(x.detach(), gy.detach()), expected)


MAXPOOL_BACKWARD = [
    dict(id="k2", x=(2, 2, 4, 4), args=([2, 2], [2, 2], [0, 0], [1, 1], False)),
    # Overlapping windows: one input receives several gradients.
    dict(id="overlap_pad", x=(1, 2, 5, 6), args=([3, 3], [1, 2], [1, 1], [1, 1], False)),
    dict(id="dilated_ceil", x=(1, 2, 7, 7), args=([2, 3], [2, 2], [1, 0], [2, 1], True)),
    dict(id="channels_last", x=(2, 3, 4, 4), args=([2, 2], [1, 1], [0, 0], [1, 1], False), channels_last=True),
]


@pytest.mark.parametrize("cfg", MAXPOOL_BACKWARD, ids=_ids(MAXPOOL_BACKWARD))
def test_max_pool2d_backward_op_gradcheck(backend, cfg):
    x = _distinct(cfg["x"], cfg.get("channels_last", False)).detach()
    values, indices = torch.ops.torchconv.max_pool2d(x, *cfg["args"])
    gy = _tensor(values.shape)
    if cfg.get("channels_last"):
        gy = gy.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    size = list(x.shape[2:])

    def fn(gy):
        return torch.ops.torchconv.max_pool2d_backward(gy, indices, size, *cfg["args"][:4])

    _check(fn, (gy,))
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        gy.detach(), x, *cfg["args"][:4], cfg["args"][4], indices
    )
    torch.testing.assert_close(fn(gy.detach()), expected)


AVGPOOL_BACKWARD = [
    # (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    dict(id="k2", x=(2, 2, 4, 4), args=([2, 2], [2, 2], [0, 0], False, True, None)),
    dict(id="overlap_pad_exclude", x=(1, 2, 5, 6), args=([3, 3], [1, 2], [1, 1], False, False, None)),
    dict(id="ceil_include", x=(1, 2, 6, 7), args=([3, 2], [2, 2], [1, 1], True, True, None)),
    dict(id="ceil_exclude", x=(1, 2, 6, 7), args=([3, 3], [2, 2], [1, 1], True, False, None)),
    dict(id="divisor", x=(1, 2, 5, 5), args=([3, 3], [2, 2], [1, 1], True, True, 4)),
    dict(id="channels_last", x=(2, 3, 4, 4), args=([2, 2], [1, 1], [1, 0], False, True, None), channels_last=True),
]


@pytest.mark.parametrize("cfg", AVGPOOL_BACKWARD, ids=_ids(AVGPOOL_BACKWARD))
def test_avg_pool2d_backward_op_gradcheck(backend, cfg):
    x = torch.randn(cfg["x"], dtype=DT)
    if cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.ops.torchconv.avg_pool2d(x, *cfg["args"])
    gy = torch.randn(y.shape, dtype=DT)
    if cfg.get("channels_last"):
        gy = gy.contiguous(memory_format=torch.channels_last)
    gy.requires_grad_()
    size = list(x.shape[2:])

    def fn(gy):
        return torch.ops.torchconv.avg_pool2d_backward(gy, size, *cfg["args"])

    _check(fn, (gy,))
    expected = torch.ops.aten.avg_pool2d_backward(gy.detach(), x, *cfg["args"])
    torch.testing.assert_close(fn(gy.detach()), expected)


# ---------------------------------------------------------------- autograd.Function classes


def test_conv2d_function_apply(backend):
    x, w, b = _tensor((2, 4, 6, 5)), _tensor((6, 2, 3, 3)), _tensor((6,))
    args = ([2, 1], [1, 1], [1, 2], 2)
    y = _autograd.Conv2dFunction.apply(x, w, b, *args)
    ref = torchconv.conv2d(x, w, b, *args)
    torch.testing.assert_close(y, ref)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    expected = torch.autograd.grad(ref, (x, w, b), gy)
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e)
    _check(lambda x, w, b: _autograd.Conv2dFunction.apply(x, w, b, *args), (x, w, b))


def test_conv_transpose2d_function_apply(backend):
    x, w, b = _tensor((2, 4, 3, 4)), _tensor((4, 3, 3, 2)), _tensor((6,))
    args = ([2, 2], [1, 0], [1, 0], 2, [1, 2])
    y = _autograd.ConvTranspose2dFunction.apply(x, w, b, *args)
    ref = torchconv.conv_transpose2d(x, w, b, *args)
    torch.testing.assert_close(y, ref)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    expected = torch.autograd.grad(ref, (x, w, b), gy)
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e)
    _check(lambda x, w, b: _autograd.ConvTranspose2dFunction.apply(x, w, b, *args), (x, w, b))


def test_conv2d_weight_function_apply(backend):
    x, gy = _tensor((2, 2, 5, 5)), _tensor((2, 3, 3, 3))
    args = ([3, 2, 3, 3], [2, 2], [1, 1], [1, 1], 1)
    g = _autograd.Conv2dWeightFunction.apply(x, gy, *args)
    torch.testing.assert_close(g, torch.ops.torchconv.conv2d_weight(x, gy, *args))
    _check(lambda x, gy: _autograd.Conv2dWeightFunction.apply(x, gy, *args), (x, gy))


def test_max_pool2d_function_apply(backend):
    x = _distinct((2, 2, 5, 5))
    args = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    values, indices = _autograd.MaxPool2dFunction.apply(x, *args)
    ref_values, ref_indices = torchconv.max_pool2d(x, *args[:4], ceil_mode=True, return_indices=True)
    torch.testing.assert_close(values, ref_values)
    assert torch.equal(indices, ref_indices)
    assert not indices.requires_grad
    gy = torch.randn_like(values)
    (g,) = torch.autograd.grad(values, x, gy)
    (e,) = torch.autograd.grad(ref_values, x, gy)
    torch.testing.assert_close(g, e)
    _check(lambda x: _autograd.MaxPool2dFunction.apply(x, *args)[0], (x,))
    size = list(x.shape[2:])
    gy.requires_grad_()
    _check(lambda gy: _autograd.MaxPool2dBackwardFunction.apply(gy, indices, size, *args[:4]), (gy,))


def test_avg_pool2d_function_apply(backend):
    x = _tensor((2, 2, 5, 6))
    args = ([3, 2], [2, 2], [1, 1], True, False, None)
    y = _autograd.AvgPool2dFunction.apply(x, *args)
    ref = torchconv.avg_pool2d(x, *args)
    torch.testing.assert_close(y, ref)
    gy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    (e,) = torch.autograd.grad(ref, x, gy)
    torch.testing.assert_close(g, e)
    _check(lambda x: _autograd.AvgPool2dFunction.apply(x, *args), (x,))
    size = list(x.shape[2:])
    gy.requires_grad_()
    _check(lambda gy: _autograd.AvgPool2dBackwardFunction.apply(gy, size, *args), (gy,))


# ---------------------------------------------------------------- only needed gradients


class _OpRecorder(TorchDispatchMode):
    """Records the torchconv:: ops that run, and the torchconv_cpp:: ops the
    C++ autograd Functions call (csrc/autograd/functions.cpp), by name."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in ("torchconv", "torchconv_cpp"):
            self.ops.append(func._opname)
        return func(*args, **(kwargs or {}))


def _backward_ops(out, inputs):
    gy = torch.randn_like(out)
    with _OpRecorder() as rec:
        torch.autograd.grad(out, inputs, gy)
    return set(rec.ops)


@pytest.mark.parametrize("via", ["functional", "function_apply"])
@pytest.mark.parametrize(
    "needs,expected",
    [
        ((True, True, True), {"conv_transpose2d", "conv2d_weight"}),
        ((False, True, True), {"conv2d_weight"}),
        ((True, False, True), {"conv_transpose2d"}),
        ((True, False, False), {"conv_transpose2d"}),
        ((False, False, True), set()),
        ((False, True, False), {"conv2d_weight"}),
    ],
    ids=lambda v: "".join("xwb"[i] for i, n in enumerate(v) if n) if isinstance(v, tuple) else None,
)
def test_conv2d_backward_computes_only_needed(backend, via, needs, expected):
    x, w, b = _tensor((2, 2, 5, 5), requires_grad=False), _tensor((3, 2, 3, 3), requires_grad=False), _tensor((3,), requires_grad=False)
    for t, n in zip((x, w, b), needs):
        t.requires_grad_(n)
    if via == "functional":
        y = torchconv.conv2d(x, w, b, stride=2, padding=1)
    else:
        y = _autograd.Conv2dFunction.apply(x, w, b, [2, 2], [1, 1], [1, 1], 1)
    wanted = [t for t in (x, w, b) if t.requires_grad]
    assert _backward_ops(y, wanted) == expected


@pytest.mark.parametrize("via", ["functional", "function_apply"])
@pytest.mark.parametrize(
    "needs,expected",
    [
        ((True, True, True), {"conv2d", "conv2d_weight"}),
        ((False, True, True), {"conv2d_weight"}),
        ((True, False, True), {"conv2d"}),
        ((False, False, True), set()),
    ],
    ids=lambda v: "".join("xwb"[i] for i, n in enumerate(v) if n) if isinstance(v, tuple) else None,
)
def test_conv_transpose2d_backward_computes_only_needed(backend, via, needs, expected):
    x, w, b = _tensor((2, 2, 3, 3), requires_grad=False), _tensor((2, 3, 3, 3), requires_grad=False), _tensor((3,), requires_grad=False)
    for t, n in zip((x, w, b), needs):
        t.requires_grad_(n)
    if via == "functional":
        y = torchconv.conv_transpose2d(x, w, b, stride=2, output_padding=1)
    else:
        y = _autograd.ConvTranspose2dFunction.apply(x, w, b, [2, 2], [0, 0], [1, 1], 1, [1, 1])
    wanted = [t for t in (x, w, b) if t.requires_grad]
    assert _backward_ops(y, wanted) == expected


@pytest.mark.parametrize(
    "needs,expected",
    [((True, True), {"conv_transpose2d", "conv2d"}), ((True, False), {"conv_transpose2d"}), ((False, True), {"conv2d"})],
    ids=["x_gy", "x", "gy"],
)
def test_conv2d_weight_backward_computes_only_needed(backend, needs, expected):
    x, gy = torch.randn(2, 2, 5, 5, dtype=DT), torch.randn(2, 3, 3, 3, dtype=DT)
    x.requires_grad_(needs[0])
    gy.requires_grad_(needs[1])
    g = torch.ops.torchconv.conv2d_weight(x, gy, [3, 2, 3, 3], [1, 1], [0, 0], [1, 1], 1)
    assert _backward_ops(g, [t for t in (x, gy) if t.requires_grad]) == expected


def test_double_backward_with_respect_to_weight_only(backend):
    """d/dW of |dL/dx|^2 needs conv_transpose2d's weight gradient, not its input gradient."""
    x = _tensor((2, 2, 5, 5), requires_grad=False)
    w = _tensor((3, 2, 3, 3))
    x.requires_grad_()
    y = torchconv.conv2d(x, w, stride=2, padding=1)
    (gx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    ops = _backward_ops(gx.square().sum(), [w])
    # The backward of conv_transpose2d w.r.t. its weight only: conv2d_weight.
    assert "conv2d_weight" in ops
    assert "conv2d" not in ops
