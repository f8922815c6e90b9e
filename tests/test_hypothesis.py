"""Property tests: hypothesis-generated configurations against torch.nn.functional.

For each op, one property draws *valid* configurations over the whole
parameter space (batch 0..3 or an unbatched 3-D input, channels and groups,
H/W, kernel, stride, padding as int, pair, 'same' or 'valid', dilation,
output_padding below stride or dilation, ceil_mode, count_include_pad,
divisor_override, return_indices, contiguous / channels_last / sliced /
transposed inputs and weights, float32 / float64) and compares with torch:

* forward: shape, dtype, memory format (``is_contiguous`` in both formats),
  values, and max_pool2d's indices exactly;
* backward: gradients w.r.t. input, weight and bias, for an output gradient
  in the output's layout.

A second property per op draws from wider ranges that include invalid
values (negative or zero stride/dilation/padding/groups, channel mismatches,
kernels larger than the input, too much output_padding or pooling padding,
zero kernel or divisor, empty dims, 2-D/5-D inputs, wrong-length or wrongly
typed arguments, ...): whenever torch raises, torchconv must raise the same
exception type; whenever torch succeeds, torchconv must give the same shape
and values.

Disagreements these properties found are excluded from them (with the
reason at the exclusion) and pinned by ``test_known_*`` strict xfails near the
end of this file; a fix makes those XPASS, and the exclusion can then go (the
fixed ones stay there as regression tests).

Values are compared with :func:`torchconv.testing.assert_close_to_torch` at
its tolerances (``rtol=0``, ``atol = c(dtype) * max(1, max|torch|)``).

Examples run in the backend the ``backend`` fixture selects (each property
runs once per CPU backend); tensors come from a drawn seed, so a failure is
reproduced by hypothesis's printed example.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import torchconv
from conftest import device_of_test, to_test_device
from torchconv.testing import assert_close_to_torch, memory_format_flags

pytestmark = pytest.mark.filterwarnings(
    # torch's own warning for padding='same' with an even kernel: not ours.
    "ignore:Using padding='same' with even kernel lengths:UserWarning"
)

CL = torch.channels_last
DTYPES = (torch.float32, torch.float64)

# TORCHCONV_HYPOTHESIS_SCALE=10 runs ten times as many examples (a longer hunt).
_SCALE = float(os.environ.get("TORCHCONV_HYPOTHESIS_SCALE", "1"))
SETTINGS = settings(
    max_examples=int(80 * _SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INVALID_SETTINGS = settings(SETTINGS, max_examples=int(100 * _SCALE))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: intra-op threads only add overhead (several times the
    runtime on a busy 2-core machine). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers


def close_values(got, expected, what):
    """Values, shape and dtype (indices exactly); not the layout: torch's result
    here may come from contiguous copies of the operands (see :func:`compare`)."""
    assert_close_to_torch(got, expected, check_memory_format=False, check_strides=False, msg=what)


def layout_tensor(values: torch.Tensor, layout: str) -> torch.Tensor:
    """``values`` (3-d or 4-d) in a memory layout, as a leaf that requires grad."""
    if layout == "channels_last":
        if values.dim() == 4:
            t = values.contiguous(memory_format=CL)
        else:  # (C, H, W) with C innermost
            t = values.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    elif layout == "sliced":  # every other element along the last dim of a bigger tensor
        big = values.new_zeros(*values.shape[:-1], 2 * values.shape[-1])
        big[..., ::2] = values
        t = big[..., ::2]
    elif layout == "transposed":  # the last two dims swapped in memory
        t = values.transpose(-1, -2).contiguous().transpose(-1, -2)
    else:
        t = values.contiguous()
    return t.detach().requires_grad_()


def randn(shape, dtype, generator):
    """Drawn from a CPU generator (same values on every device), then put on the test's device."""
    return to_test_device(torch.randn(shape, dtype=dtype, generator=generator, device="cpu"))


def compare(ours, theirs, tensors, kwargs, seed):
    """Forward (values, shape, dtype, memory format) and gradients w.r.t. ``tensors``.

    Values and gradients are compared with torch's on *contiguous copies* of
    the tensors, layouts with torch's on the tensors themselves: torch 2.13's
    float64 CPU convolution computes a wrong weight gradient for some inputs of
    ambiguous layout (see test_torch_float64_weight_grad_ambiguous_layout), and
    the right value does not depend on the layout.
    """
    with torch.no_grad():
        layout_ref = theirs(*tensors, **kwargs)
    copies = [t.detach().contiguous().requires_grad_(t.requires_grad) if t is not None else None for t in tensors]
    expected = theirs(*copies, **kwargs)
    got = ours(*tensors, **kwargs)
    close_values(got, expected, "output")  # max_pool2d with return_indices: (values, indices)
    if isinstance(expected, tuple):
        got, expected, layout_ref = got[0], expected[0], layout_ref[0]
    # Empty outputs: their layout is moot, and differs in known ways (with a
    # channels_last weight torch's is contiguous, torchconv's channels_last:
    # test_layouts.py::test_batch_zero_channels_last_weight; the reference
    # backend's empty conv_transpose2d output keeps the strides of a bigger canvas).
    assert expected.numel() == 0 or memory_format_flags(got) == memory_format_flags(layout_ref), (
        f"output memory format (is_contiguous, is_channels_last) {memory_format_flags(got)} != torch's "
        f"{memory_format_flags(layout_ref)}; strides {got.stride()} vs {layout_ref.stride()}"
    )
    generator = torch.Generator().manual_seed(seed + 1)
    grad_output = torch.empty_like(layout_ref).copy_(randn(expected.shape, expected.dtype, generator))
    needs = [k for k, t in enumerate(tensors) if t is not None and t.requires_grad]
    got_grads = torch.autograd.grad(got, [tensors[k] for k in needs], grad_output, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, [copies[k] for k in needs], grad_output, allow_unused=True)
    for k, g, e in zip(needs, got_grads, expected_grads):
        name = ("input", "weight", "bias")[k]
        if e is None:
            assert g is None or not g.any(), f"grad {name}: torch has none"
            continue
        assert g is not None, f"grad {name}: torchconv has none"
        close_values(g, e, f"grad {name}")


def _pairs(*values):
    """Each int / 1-tuple / pair argument as a pair of ints, or None if any is not one."""
    pairs = []
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool):
            pairs.append([v, v])
        elif isinstance(v, (tuple, list)) and len(v) in (1, 2) and all(type(i) is int for i in v):
            pairs.append(list(v) * (2 // len(v)))
        else:
            return None
    return pairs


def has_all_padding_window(size, kernel_size, stride, padding, dilation, ceil_mode) -> bool:
    """Some window sees no input element at all.

    Possible with dilation (e.g. a 1-wide input, kernel 2, dilation 2, padding 1:
    taps at -1 and +1). For max pooling torch returns -inf with the index of the
    window's first tap clamped into range (which may lie outside the plane) and a
    zero gradient, and so does torchconv; for convolutions see _onednn_crash_risk.
    """
    stride = kernel_size if stride is None or stride == () else stride
    pairs = _pairs(kernel_size, stride, padding, dilation)
    if pairs is None:
        return False
    for n, k, s, p, d in zip(size, *pairs):
        if k <= 0 or s <= 0 or p < 0 or d <= 0:
            return False
        out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        for o in range(max(out, 0)):
            if not any(0 <= o * s - p + j * d < n for j in range(k)):
                return True
    return False


# ---------------------------------------------------------------- strategies

seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from(DTYPES)
x_layouts = st.sampled_from(["contiguous", "channels_last", "sliced", "transposed"])
w_layouts = st.sampled_from(["contiguous", "channels_last", "transposed"])


def int_or_pair(values: st.SearchStrategy) -> st.SearchStrategy:
    """An int, a 1-tuple, or a pair (list or tuple) of values."""
    return st.one_of(
        values,
        values.map(lambda v: (v,)),
        st.tuples(values, values),
        st.lists(values, min_size=2, max_size=2),
    )


def as_pair(v):
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v


@st.composite
def batch_shape(draw):
    """() for an unbatched input, else (N,) with N in 0..3."""
    if draw(st.booleans()) and draw(st.booleans()):  # 1 in 4 unbatched
        return ()
    return (draw(st.integers(0, 3)),)


@st.composite
def conv2d_configs(draw):
    dtype = draw(dtypes)
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    padding_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = [1, 1] if padding_kind == "same" else as_pair(draw(int_or_pair(st.integers(1, 3))))
    dilation_arg = draw(int_or_pair(st.integers(1, 3)))
    dilation = as_pair(dilation_arg)
    if padding_kind in ("same", "valid"):
        padding_arg, padding = padding_kind, [0, 0]
    elif padding_kind == "int":
        padding_arg = draw(st.integers(0, 3))
        padding = [padding_arg] * 2
    else:
        padding = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
        padding_arg = tuple(padding)
    # Spatial size: at least what the (padded) kernel needs.
    size = []
    for k, d, p in zip(kernel, dilation, padding):
        need = 1 if padding_kind == "same" else max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(need, need + 6)))
    stride_arg = stride if padding_kind == "same" else draw(st.sampled_from([stride, tuple(stride)]))
    return dict(
        dtype=dtype, batch=draw(batch_shape()), c_in=c_in, c_out=c_out, groups=groups, kernel=kernel,
        size=size, stride=stride_arg, padding=padding_arg, dilation=dilation_arg, bias=draw(st.booleans()),
        x_layout=draw(x_layouts), w_layout=draw(w_layouts), seed=draw(seeds),
    )


@st.composite
def conv_transpose2d_configs(draw):
    dtype = draw(dtypes)
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    stride = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    dilation = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    padding = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
    # Valid output_padding: smaller than stride or dilation (either will do).
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    size = [draw(st.integers(1, 6)), draw(st.integers(1, 6))]
    out = [
        (n - 1) * s - 2 * p + d * (k - 1) + o + 1
        for n, k, s, p, o, d in zip(size, kernel, stride, padding, output_padding, dilation)
    ]
    assume(min(out) > 0)

    def arg(pair):
        return draw(st.sampled_from([pair[0], tuple(pair), list(pair)])) if pair[0] == pair[1] else tuple(pair)

    return dict(
        dtype=dtype, batch=draw(batch_shape()), c_in=c_in, c_out=c_out, groups=groups, kernel=kernel,
        size=size, stride=arg(stride), padding=arg(padding), output_padding=arg(output_padding),
        dilation=arg(dilation), bias=draw(st.booleans()), x_layout=draw(x_layouts), w_layout=draw(w_layouts),
        seed=draw(seeds),
    )


def _pool_size(draw, kernel, padding, dilation):
    """Spatial sizes for which every output dimension is at least 1."""
    size = []
    for k, p, d in zip(kernel, padding, dilation):
        need = max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(need, need + 6)))
    return size


@st.composite
def max_pool2d_configs(draw):
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    dilation = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    # torch: pad <= k / 2 (pool2d_shape_check), which implies pad <= ((k - 1) * d + 1) / 2
    # (pooling_output_shape).
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    stride = draw(st.one_of(st.none(), st.just(()), int_or_pair(st.integers(1, 3))))
    return dict(
        dtype=draw(dtypes), batch=draw(batch_shape()), channels=draw(st.integers(1, 4)),
        size=_pool_size(draw, kernel, padding, dilation),
        kernel_size=draw(st.sampled_from([kernel[0], tuple(kernel)])) if kernel[0] == kernel[1] else tuple(kernel),
        stride=stride, padding=tuple(padding), dilation=tuple(dilation), ceil_mode=draw(st.booleans()),
        return_indices=draw(st.booleans()), x_layout=draw(x_layouts), seed=draw(seeds),
    )


@st.composite
def avg_pool2d_configs(draw):
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    stride = draw(st.one_of(st.none(), int_or_pair(st.integers(1, 3))))
    return dict(
        dtype=draw(dtypes), batch=draw(batch_shape()), channels=draw(st.integers(1, 4)),
        size=_pool_size(draw, kernel, padding, [1, 1]),
        kernel_size=draw(int_or_pair(st.just(kernel[0]))) if kernel[0] == kernel[1] else tuple(kernel),
        stride=stride, padding=draw(st.sampled_from([tuple(padding), list(padding)])),
        ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
        divisor_override=draw(st.one_of(st.none(), st.integers(-3, 6).filter(bool))),
        x_layout=draw(x_layouts), seed=draw(seeds),
    )


# ---------------------------------------------------------------- valid configurations


def _conv_tensors(cfg, weight_shape):
    g = torch.Generator().manual_seed(cfg["seed"])
    x = layout_tensor(randn((*cfg["batch"], cfg["c_in"], *cfg["size"]), cfg["dtype"], g), cfg["x_layout"])
    w = layout_tensor(randn(weight_shape, cfg["dtype"], g), cfg["w_layout"])
    b = randn((cfg["c_out"],), cfg["dtype"], g).requires_grad_() if cfg["bias"] else None
    return x, w, b


def _onednn_crash_risk(cfg) -> bool:
    """torch's own CPU conv2d (oneDNN's brgemm convolution, on AVX-512 CPUs)
    segfaults on some float32 grouped convolutions with a channels_last input
    or weight, a bias, and output positions whose whole window lies in the
    padding (seen with torch 2.11 and 2.13, e.g. input (1, 9, 3, 2), a
    channels_last weight (6, 3, 2, 1), bias, stride 3, padding 1, dilation 3,
    groups 3). A crash would end the whole test run, so these examples are
    left out on the CPU (a superset of the crashing ones: any all-padding
    window)."""
    if device_of_test().type != "cpu" or cfg["dtype"] != torch.float32 or cfg["groups"] == 1 or not cfg["bias"]:
        return False
    if "channels_last" not in (cfg["x_layout"], cfg["w_layout"]) or cfg["padding"] == "valid":
        return False
    kernel, dilation = cfg["kernel"], as_pair(cfg["dilation"])
    if cfg["padding"] == "same":  # stride 1; torch pads d * (k - 1) // 2 before, the rest after
        return any(
            not any(0 <= o - d * (k - 1) // 2 + j * d < n for j in range(k))
            for n, k, d in zip(cfg["size"], kernel, dilation)
            for o in range(n)
        )
    return has_all_padding_window(cfg["size"], kernel, as_pair(cfg["stride"]), as_pair(cfg["padding"]), dilation, False)


def test_conv2d_where_torchs_cpu_kernel_crashes(backend):
    """The configuration _onednn_crash_risk leaves out: torchconv computes it
    (checked against torch with oneDNN off, which avoids the crash)."""
    x = torch.randn(1, 9, 3, 2)
    w = torch.randn(6, 3, 2, 1).contiguous(memory_format=torch.channels_last)
    b = torch.randn(6)
    kwargs = dict(stride=3, padding=1, dilation=3, groups=3)
    got = torchconv.conv2d(x, w, b, **kwargs)
    with torch.backends.mkldnn.flags(enabled=False):
        expected = F.conv2d(x.cpu().double(), w.cpu().double(), b.cpu().double(), **kwargs)
    assert_close_to_torch(got.cpu(), expected.float(), check_memory_format=False, check_strides=False)


@SETTINGS
@given(cfg=conv2d_configs())
def test_conv2d_matches_torch(backend, cfg):
    assume(not _onednn_crash_risk(cfg))
    x, w, b = _conv_tensors(cfg, (cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"]))
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    compare(torchconv.conv2d, F.conv2d, [x, w, b], kwargs, cfg["seed"])


@SETTINGS
@given(cfg=conv_transpose2d_configs())
def test_conv_transpose2d_matches_torch(backend, cfg):
    x, w, b = _conv_tensors(cfg, (cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"]))
    kwargs = dict(
        stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
        groups=cfg["groups"], dilation=cfg["dilation"],
    )
    compare(torchconv.conv_transpose2d, F.conv_transpose2d, [x, w, b], kwargs, cfg["seed"])


def _pool_input(cfg, distinct=False):
    g = torch.Generator().manual_seed(cfg["seed"])
    shape = (*cfg["batch"], cfg["channels"], *cfg["size"])
    if distinct:  # no ties: every window has one maximum, so argmax and gradients are unambiguous
        n = 1
        for s in shape:
            n *= s
        values = (torch.randperm(max(n, 1), generator=g, device="cpu")[:n].to(cfg["dtype"]) / max(n, 1) - 0.5).reshape(shape)
        values = to_test_device(values)
    else:
        values = randn(shape, cfg["dtype"], g)
    return layout_tensor(values, cfg["x_layout"])


@SETTINGS
@given(cfg=max_pool2d_configs())
def test_max_pool2d_matches_torch(backend, cfg):
    size = cfg["size"]
    # Left out: torch's CPU backward writes the gradient of a window that sees
    # no input to its index past the plane, out of bounds (it has aborted the
    # process); test_max_pool2d_all_padding_window_* check torchconv there.
    assume(not has_all_padding_window(size, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"]))
    x = _pool_input(cfg, distinct=True)
    kwargs = {k: cfg[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")}
    compare(torchconv.max_pool2d, F.max_pool2d, [x], kwargs, cfg["seed"])


@SETTINGS
@given(cfg=avg_pool2d_configs())
def test_avg_pool2d_matches_torch(backend, cfg):
    x = _pool_input(cfg)
    kwargs = {
        k: cfg[k] for k in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    }
    compare(torchconv.avg_pool2d, F.avg_pool2d, [x], kwargs, cfg["seed"])


# ---------------------------------------------------------------- any configuration


def same_failure(ours, theirs, make_args):
    """torch raises -> torchconv raises the same type; torch succeeds -> same result."""
    args, kwargs = make_args()
    try:
        expected = theirs(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - any exception type torch raises
        expected_type = type(error)
        if theirs is F.avg_pool2d and str(error) == TORCH_211_AVG_POOL_MESSAGE:
            # torch 2.11's avg_pool2d rejects kernel_size <= 0 and stride < 0 with a
            # bare "integer out of range" before its other checks (the input's
            # dimensions included); torchconv checks in torch 2.13's order, so a
            # 1-d/2-d input gives its IndexError first.
            expected_type = (RuntimeError, IndexError)
        with pytest.raises(expected_type):
            ours(*args, **kwargs)
        return False
    got = ours(*args, **kwargs)
    close_values(got, expected, "output")  # max_pool2d with return_indices: (values, indices)
    return True


TORCH_211_AVG_POOL_MESSAGE = "integer out of range"


small = st.integers(-1, 4)

# Wrongly typed values for an int / int-pair argument: torch's argument parser
# raises TypeError for each. (0-d integer tensors are left out: torch takes
# them as ints, and so does torchconv; see test_tensor_int_arguments.)
WRONG_TYPES = st.sampled_from([1.5, 2.0, True, False, None, "2", (1.0, 1), [2, None], (True, 1)])


input_dims = st.sampled_from([2, 3, 3, 4, 4, 4, 5])


@st.composite
def any_input(draw, channels, dtype=torch.float64):
    """An input of 2..5 dims, sizes 0..6, with the given channel count most of the time."""
    dim = draw(input_dims)
    shape = [draw(st.integers(0, 6)) for _ in range(dim)]
    if dim >= 3 and draw(st.integers(0, 4)):
        shape[-3] = channels
    if dim >= 2 and draw(st.integers(0, 4)):
        shape[-2:] = [draw(st.integers(1, 7)), draw(st.integers(1, 7))]
    if dim == 4 and draw(st.integers(0, 3)):
        shape[0] = draw(st.integers(0, 2))
    return torch.randn(shape, dtype=dtype)


@st.composite
def arguments(draw, strategies: dict):
    """Draws each argument from its strategy, except that one time in four one
    argument (chosen at random) gets a wrongly typed value.

    The other arguments and the tensors stay as drawn (wrong lengths, invalid
    padding strings, bad tensors): torch's argument parser rejects a wrongly
    typed argument (TypeError) before any other check, and torchconv must too
    (see also test_argument_types_checked_first).
    """
    names = list(strategies)
    wrong = draw(st.sampled_from(names)) if draw(st.integers(0, 3)) == 0 else None
    return {name: draw(WRONG_TYPES if name == wrong else strategies[name], label=name) for name in names}


@INVALID_SETTINGS
@given(data=st.data())
def test_conv2d_fails_like_torch(backend, data):
    kwargs = data.draw(arguments(dict(
        groups=st.integers(-1, 4),
        stride=st.one_of(int_or_pair(st.integers(-1, 3)), st.tuples(small, small, small)),
        padding=st.one_of(int_or_pair(small), st.sampled_from(["same", "valid", "full"]), st.tuples(small, small, small)),
        dilation=int_or_pair(st.integers(-1, 3)),
    )), "kwargs")
    groups = kwargs["groups"] if type(kwargs["groups"]) is int else 1
    c_in = data.draw(st.integers(1, 4), "c_in")
    c_out = data.draw(st.integers(1, 4), "c_out")
    k = data.draw(st.tuples(st.integers(1, 5), st.integers(1, 5)), "kernel")
    w_shape = data.draw(st.sampled_from([(c_out, c_in, *k), (c_out, c_in, k[0]), (c_out, c_in, *k, 1)]), "w_shape")
    x = data.draw(any_input(c_in * max(groups, 1)), "x")
    bias = data.draw(st.sampled_from([None, (c_out,), (c_out + 1,), (1, c_out)]), "bias")

    def make():
        w = torch.randn(w_shape, dtype=x.dtype)
        b = None if bias is None else torch.randn(bias, dtype=x.dtype)
        return (x, w, b), kwargs

    same_failure(torchconv.conv2d, F.conv2d, make)


@INVALID_SETTINGS
@given(data=st.data())
def test_conv_transpose2d_fails_like_torch(backend, data):
    kwargs = data.draw(arguments(dict(
        stride=int_or_pair(st.integers(-1, 3)),
        padding=int_or_pair(small),
        output_padding=int_or_pair(small),
        groups=st.integers(-1, 4),
        dilation=int_or_pair(st.integers(-1, 3)),
    )), "kwargs")
    groups = kwargs["groups"] if type(kwargs["groups"]) is int else 1
    c_in = data.draw(st.integers(1, 4), "c_in")
    c_out = data.draw(st.integers(1, 4), "c_out")
    k = data.draw(st.tuples(st.integers(1, 5), st.integers(1, 5)), "kernel")
    w_shape = data.draw(st.sampled_from([(c_in, c_out, *k), (c_in, c_out, k[0])]), "w_shape")
    x = data.draw(any_input(c_in), "x")
    bias = data.draw(st.sampled_from([None, (c_out * max(groups, 1),), (c_out,), (c_out + 1,)]), "bias")

    def make():
        w = torch.randn(w_shape, dtype=x.dtype)
        b = None if bias is None else torch.randn(bias, dtype=x.dtype)
        return (x, w, b), kwargs

    same_failure(torchconv.conv_transpose2d, F.conv_transpose2d, make)


@INVALID_SETTINGS
@given(data=st.data())
def test_max_pool2d_fails_like_torch(backend, data):
    x = data.draw(any_input(data.draw(st.integers(1, 3))), "x")
    kwargs = data.draw(arguments(dict(
        kernel_size=int_or_pair(st.integers(0, 5)),
        stride=st.one_of(st.none(), int_or_pair(st.integers(-1, 3)), st.tuples(small, small, small)),
        padding=int_or_pair(small),
        dilation=int_or_pair(st.integers(-1, 3)),
    )), "kwargs")
    kwargs["ceil_mode"] = data.draw(st.booleans(), "ceil_mode")
    kwargs["return_indices"] = data.draw(st.booleans(), "return_indices")
    same_failure(torchconv.max_pool2d, F.max_pool2d, lambda: ((x,), kwargs))


@INVALID_SETTINGS
@given(data=st.data())
def test_avg_pool2d_fails_like_torch(backend, data):
    x = data.draw(any_input(data.draw(st.integers(1, 3))), "x")
    kwargs = data.draw(arguments(dict(
        kernel_size=int_or_pair(st.integers(0, 5)),
        stride=st.one_of(st.none(), int_or_pair(st.integers(-1, 3))),
        padding=int_or_pair(small),
        divisor_override=st.one_of(st.none(), st.integers(-2, 3)),
    )), "kwargs")
    kwargs["ceil_mode"] = data.draw(st.booleans(), "ceil_mode")
    kwargs["count_include_pad"] = data.draw(st.booleans(), "count_include_pad")
    same_failure(torchconv.avg_pool2d, F.avg_pool2d, lambda: ((x,), kwargs))


# ---------------------------------------------------------------- corners
# Found by the properties above, once excluded from them as disagreements with
# torch; fixed, and kept as regression tests.


# A window that sees no input element: 1-wide input, kernel 2, dilation 2, padding 1 (taps at -1, +1).
_ALL_PADDING = dict(kernel_size=(1, 2), padding=(0, 1), dilation=(1, 2))


def test_max_pool2d_all_padding_window_indices(backend):
    """torch: -inf with index 1 (the window's first tap clamped to >= 0, here outside the plane)."""
    x = torch.tensor([[[[5.0]]]])
    expected, expected_idx = F.max_pool2d(x, return_indices=True, **_ALL_PADDING)
    got, got_idx = torchconv.max_pool2d(x, return_indices=True, **_ALL_PADDING)
    assert torch.equal(got, expected)  # -inf
    assert torch.equal(got_idx, expected_idx), (got_idx, expected_idx)


def test_max_pool2d_all_padding_window_backward(backend):
    """torch's gradient is zero there; the CPU kernels skip the window's index past the plane, the CUDA
    backend's gather never reads it."""
    x = torch.tensor([[[[5.0]]]], requires_grad=True)
    # torch's CPU backward adds this window's gradient past the end of the
    # plane (out of bounds, not run here); the input's gradient is zero.
    expected = torch.zeros_like(x)
    (got,) = torch.autograd.grad(torchconv.max_pool2d(x, **_ALL_PADDING).sum(), x)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "op, shape, kwargs",
    [
        pytest.param("conv2d", (0, 1, 3, 3), dict(dilation=0), id="conv2d-dilation0"),
        pytest.param("conv2d", (1, 0, 3, 3), dict(dilation=0), id="conv2d-no-channels-dilation0"),
        pytest.param("conv2d", (2, 0, 5, 5), dict(stride=2, padding=1), id="conv2d-no-channels"),
        pytest.param("conv_transpose2d", (0, 1, 3, 3), dict(dilation=0), id="conv_transpose2d-dilation0"),
        pytest.param("conv_transpose2d", (0, 1, 3, 3), dict(output_padding=1), id="conv_transpose2d-output_padding"),
        pytest.param("conv_transpose2d", (0, 1, 0, 0), dict(), id="conv_transpose2d-output_size0"),
        pytest.param("conv_transpose2d", (0, 1, 1, 1), dict(padding=(1, 0)), id="conv_transpose2d-output_height0"),
    ],
)
def test_empty_input_skips_the_checks_torch_skips(backend, op, shape, kwargs):
    """On an input without elements torch skips the dilation > 0 check,
    conv_transpose2d's output_padding check and its 'Output size is too small'
    check (a size of 0 passes, a negative one does not), and returns an
    empty output; every operand gets a zero gradient."""
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(1, shape[1] if op == "conv2d" else 1, 1 if shape[-1] == 0 else 2, 2, requires_grad=True)
    b = torch.randn(1, requires_grad=True)
    expected = getattr(F, op)(x, w, b, **kwargs)
    got = getattr(torchconv, op)(x, w, b, **kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    expected_grads = torch.autograd.grad(expected.sum(), (x, w, b))
    got_grads = torch.autograd.grad(got.sum(), (x, w, b))
    for g, e in zip(got_grads, expected_grads):
        assert g.shape == e.shape and g.stride() == e.stride() and not g.any()


def test_empty_input_negative_output_size_raises(backend):
    x, w = torch.randn(0, 1, 1, 1), torch.randn(1, 1, 1, 1)
    with pytest.raises(RuntimeError):
        F.conv_transpose2d(x, w, padding=3)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        torchconv.conv_transpose2d(x, w, padding=3)


def test_torch_float64_weight_grad_ambiguous_layout(backend):
    """Not a torchconv bug: torch 2.13's float64 CPU conv2d gets this weight gradient wrong.

    Unbatched input with channels innermost (strides (1, 8, 4) for size (4, 1, 2),
    i.e. (4, 1, 8, 4) batched: channels_last and contiguous at once), channels_last
    weight, groups=2: torch's weight gradient swaps elements (float32 and a
    contiguous copy of the input are right). torchconv must give the right one.
    """
    torch.manual_seed(0)
    x = torch.randn(4, 1, 2, dtype=torch.float64).permute(1, 2, 0).contiguous().permute(2, 0, 1).requires_grad_()
    w = torch.randn(2, 2, 1, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    grad_output = torch.ones(2, 1, 1, dtype=torch.float64)
    (got,) = torch.autograd.grad(torchconv.conv2d(x, w, groups=2), w, grad_output)
    # With this output gradient, weight[o, c, 0, j] is input[2 * o + c, 0, j]: the input itself.
    torch.testing.assert_close(got, x.detach().reshape(2, 2, 1, 2), rtol=0, atol=0)
    (right,) = torch.autograd.grad(F.conv2d(x.detach().contiguous(), w, groups=2), w, grad_output)
    assert_close_to_torch(got, right, atol=0)


# ---------------------------------------------------------------- fixed disagreements
# Once strict xfails above; now regression tests.

_X = (1, 2, 6, 6)
_W = (2, 2, 3, 3)


def _outcome(fn, *args, **kwargs):
    """The exception type ``fn`` raises, or None."""
    try:
        fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001
        return type(error)
    return None


def _raises_like_torch(op, *args, **kwargs):
    expected = _outcome(getattr(F, op), *args, **kwargs)
    got = _outcome(getattr(torchconv, op), *args, **kwargs)
    assert got is expected, f"torch: {expected.__name__ if expected else 'no error'}, torchconv: {got.__name__ if got else 'no error'}"


def test_max_pool2d_pad_beyond_half_kernel(backend):
    """kernel_size / 2 < padding <= effective kernel / 2 (dilation > 1): torch raises
    'pad should be smaller than or equal to half of kernel size' (ATen's
    pool2d_shape_check checks the undilated kernel too), and so must torchconv."""
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(RuntimeError, match="pad should be smaller than or equal to half of kernel size"):
        F.max_pool2d(x, 2, padding=2, dilation=3)
    _raises_like_torch("max_pool2d", x, 2, padding=2, dilation=3)


@pytest.mark.parametrize(
    "op, shapes, args, kwargs",
    [
        pytest.param("conv2d", [(2, 2), (1, 1, 1)], (), dict(stride=1.5), id="conv2d-2d_input-stride_float"),
        pytest.param("conv2d", [_X, _W], (), dict(stride=(1, 1, 1), groups=1.5), id="conv2d-stride_len3-groups_float"),
        pytest.param("conv2d", [_X, _W], (), dict(padding="full", groups=1.5), id="conv2d-padding_full-groups_float"),
        pytest.param("max_pool2d", [_X], ((1, 1, 1),), dict(dilation=1.5), id="max_pool2d-kernel_len3-dilation_float"),
        pytest.param("avg_pool2d", [_X], ((1, 1, 1),), dict(divisor_override=2.0), id="avg_pool2d-kernel_len3-divisor_float"),
    ],
)
def test_argument_types_checked_first(backend, op, shapes, args, kwargs):
    """torch's argument parser rejects a wrongly typed argument (TypeError) before any
    other check: a wrong-length argument, an invalid padding string or a bad tensor
    seen earlier must not turn it into a RuntimeError."""
    _raises_like_torch(op, *[torch.randn(shape) for shape in shapes], *args, **kwargs)


@pytest.mark.parametrize(
    "op, kwargs",
    [
        pytest.param("conv2d", dict(stride=torch.tensor(2)), id="conv2d-stride"),
        pytest.param("conv2d", dict(groups=torch.tensor(1)), id="conv2d-groups"),
        pytest.param("max_pool2d", dict(kernel_size=torch.tensor(2)), id="max_pool2d-kernel_size"),
        pytest.param("avg_pool2d", dict(kernel_size=2, divisor_override=torch.tensor(2)), id="avg_pool2d-divisor"),
    ],
)
def test_tensor_int_arguments(backend, op, kwargs):
    """0-d integer tensors as int arguments: torch takes them (they have __index__)."""
    x = torch.randn(_X)
    args = (x, torch.randn(_W)) if op == "conv2d" else (x,)
    _raises_like_torch(op, *args, **kwargs)


@pytest.mark.parametrize(
    "op, kwargs",
    [
        pytest.param("max_pool2d", dict(ceil_mode=1), id="max_pool2d-ceil_mode_int"),
        pytest.param("max_pool2d", dict(ceil_mode=None), id="max_pool2d-ceil_mode_None"),
        pytest.param("avg_pool2d", dict(ceil_mode="yes"), id="avg_pool2d-ceil_mode_str"),
        pytest.param("avg_pool2d", dict(count_include_pad=0), id="avg_pool2d-count_include_pad_int"),
    ],
)
def test_non_bool_flags(backend, op, kwargs):
    """Non-bool ceil_mode / count_include_pad (0, 1, None, a string): torch raises
    TypeError ("argument 'ceil_mode' must be bool")."""
    _raises_like_torch(op, torch.randn(_X), 2, **kwargs)
