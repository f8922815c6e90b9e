"""The compiled C++ backend: agreement with the reference backend, and safety
of the compiled ops when called directly with any arguments.

Every other test file already runs on each available backend through the
``backend`` fixture; this one checks what is specific to the compiled ops.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchconv
from torchconv.testing import assert_close_to_torch

pytestmark = pytest.mark.skipif(
    "cpp" not in torchconv.backends.available("cpu"),
    reason="the C++ extension is not built (pip install --no-build-isolation -e .)",
)

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _on(backend, fn, *tensors):
    """fn's output and the gradients of a fixed random projection of it, on ``backend``."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    with torchconv.backends.use(backend):
        out = fn(*leaves)
        values = out[0] if isinstance(out, tuple) else out
        torch.manual_seed(1)
        grads = torch.autograd.grad((values * torch.randn_like(values)).sum(), leaves)
    return out, grads


def _assert_backends_agree(fn, *tensors):
    """The cpp backend's outputs and gradients against the reference backend's,
    held to torch's standard (torchconv.testing): a float32 weight gradient sums
    hundreds of products, in a different order in each backend, so the
    tolerance is relative to the result's scale, not element-wise."""
    out_ref, grads_ref = _on("reference", fn, *tensors)
    out_cpp, grads_cpp = _on("cpp", fn, *tensors)
    assert_close_to_torch(out_cpp, out_ref, msg="output")
    assert_close_to_torch(grads_cpp, grads_ref, msg="grads")


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans())
    c_in = groups * (1 if depthwise else draw(st.integers(1, 3)))
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = [draw(st.integers(1, 9)) + d * (k - 1) for k, d in zip(kernel, dilation)]
    batch = draw(st.integers(0, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    channels_last = draw(st.booleans())
    return dict(groups=groups, c_in=c_in, c_out=c_out, kernel=kernel, stride=stride, dilation=dilation,
                padding=padding, size=size, batch=batch, dtype=dtype, channels_last=channels_last)


def _input(cfg, channels):
    x = torch.randn(cfg["batch"], channels, *cfg["size"], dtype=cfg["dtype"])
    return x.contiguous(memory_format=torch.channels_last) if cfg["channels_last"] else x


@FAST
@given(conv_configs())
def test_conv2d_backends_agree(cfg):
    x = _input(cfg, cfg["c_in"])
    w = torch.randn(cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"], dtype=cfg["dtype"])
    b = torch.randn(cfg["c_out"], dtype=cfg["dtype"])
    _assert_backends_agree(
        lambda x, w, b: torchconv.conv2d(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"]),
        x, w, b,
    )


@FAST
@given(conv_configs(), st.integers(0, 2))
def test_conv_transpose2d_backends_agree(cfg, output_padding):
    output_padding = min(output_padding, max(max(cfg["stride"]), max(cfg["dilation"])) - 1)
    x = _input(cfg, cfg["c_in"])
    w = torch.randn(cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"], dtype=cfg["dtype"])
    b = torch.randn(cfg["c_out"], dtype=cfg["dtype"])

    def fn(x, w, b):
        return torchconv.conv_transpose2d(
            x, w, b, cfg["stride"], cfg["padding"], output_padding, cfg["groups"], cfg["dilation"]
        )

    one_sample = x[:1] if len(x) else torch.randn(1, *x.shape[1:], dtype=x.dtype)
    try:  # torch skips its checks on an empty batch, so ask it about one sample
        probe = torch.nn.functional.conv_transpose2d(
            one_sample, w, b, cfg["stride"], cfg["padding"], output_padding, cfg["groups"], cfg["dilation"]
        )
    except RuntimeError:
        return  # an invalid combination (e.g. output_padding vs stride per axis): covered elsewhere
    if probe.numel() == 0:
        return  # torch's grouped path returns an empty output where torchconv (and torch's others) raise
    _assert_backends_agree(fn, x, w, b)


@FAST
@given(conv_configs(), st.booleans(), st.booleans(), st.sampled_from([None, 1, 5]))
def test_pools_backends_agree(cfg, ceil_mode, count_include_pad, divisor_override):
    x = _input(cfg, cfg["c_in"])
    if cfg["batch"] == 0:
        x = torch.randn(1, cfg["c_in"], *cfg["size"], dtype=cfg["dtype"])
    kernel, dilation = cfg["kernel"], cfg["dilation"]
    padding = [min(p, k // 2) for p, k in zip(cfg["padding"], kernel)]
    _assert_backends_agree(
        lambda x: torchconv.max_pool2d(x, kernel, cfg["stride"], padding, dilation, ceil_mode, True), x
    )
    _assert_backends_agree(
        lambda x: torchconv.avg_pool2d(x, kernel, cfg["stride"], padding, ceil_mode, count_include_pad, divisor_override),
        x,
    )


# ------------------------------------------------ direct calls with any arguments

_small = st.integers(-2, 6)
_pair = st.lists(_small, min_size=0, max_size=3)
_shape = st.lists(st.integers(0, 5), min_size=0, max_size=5)
_dtype = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16])


def _tensor(shape, dtype):
    return torch.zeros(shape, dtype=dtype) if dtype == torch.int64 else torch.randn(shape).to(dtype)


def _call_raises_or_returns(op, *args):
    """Any outcome but a crash: the op returns, or raises a RuntimeError-like error."""
    try:
        op(*args)
    except (RuntimeError, ValueError, TypeError, IndexError):
        pass


@settings(max_examples=300, deadline=None)
@given(_shape, _shape, st.one_of(st.none(), _shape), _pair, _pair, _pair, _small, _dtype, _dtype)
def test_compiled_conv_ops_never_crash(x_shape, w_shape, b_shape, stride, padding, dilation, groups, dtype, w_dtype):
    ops = torch.ops.torchconv_cpp
    x, w = _tensor(x_shape, dtype), _tensor(w_shape, w_dtype)
    b = None if b_shape is None else _tensor(b_shape, dtype)
    _call_raises_or_returns(ops.conv2d, x, w, b, stride, padding, dilation, groups)
    _call_raises_or_returns(ops.conv_transpose2d, x, w, b, stride, padding, padding, groups, dilation)
    _call_raises_or_returns(ops.conv2d_weight, x, w, w_shape, stride, padding, dilation, groups)


@settings(max_examples=300, deadline=None)
@given(_shape, _shape, _pair, _pair, _pair, _pair, st.booleans(), st.one_of(st.none(), _small), _dtype)
def test_compiled_pool_ops_never_crash(x_shape, g_shape, kernel, stride, padding, dilation, ceil_mode, divisor, dtype):
    ops = torch.ops.torchconv_cpp
    x, g = _tensor(x_shape, dtype), _tensor(g_shape, dtype)
    indices = torch.randint(-3, 40, g_shape, dtype=torch.int64)
    _call_raises_or_returns(ops.max_pool2d, x, kernel, stride, padding, dilation, ceil_mode)
    _call_raises_or_returns(ops.max_pool2d_backward, g, indices, x_shape[-2:], kernel, stride, padding, dilation)
    _call_raises_or_returns(ops.avg_pool2d, x, kernel, stride, padding, ceil_mode, True, divisor)
    _call_raises_or_returns(ops.avg_pool2d_backward, g, x_shape[-2:], kernel, stride, padding, ceil_mode, False, divisor)


def test_compiled_ops_name_the_problem():
    ops = torch.ops.torchconv_cpp
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match=r"conv2d: expected stride values >= 1"):
        ops.conv2d(x, torch.randn(3, 2, 3, 3), None, [0, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"max_pool2d_backward: index 99 is outside the input plane"):
        ops.max_pool2d_backward(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 99), [2, 2], [2, 2], [2, 2], [0, 0],
                                [1, 1])
    with pytest.raises(RuntimeError, match=r"expected a float32, float64, float16 or bfloat16 input"):
        ops.avg_pool2d(x.long(), [2, 2], [2, 2], [0, 0], False, True, None)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_compiled_conv2d_sizes_its_output_as_torch(stride, dilation, padding):
    """A window that overhangs the padded input gives no output cell at any
    stride (the division rounds down): the compiled op refuses the call as
    torch does, and otherwise gives torch's output size."""
    for size in range(1, 7):
        for kernel in range(1, 6):
            x, w = torch.randn(1, 1, size, size), torch.randn(1, 1, kernel, kernel)
            args = ([stride] * 2, [padding] * 2, [dilation] * 2, 1)
            try:
                expected = F.conv2d(x, w, None, *args).shape
            except RuntimeError:
                with pytest.raises(RuntimeError, match="larger than the padded input"):
                    torch.ops.torchconv_cpp.conv2d(x, w, None, *args)
                continue
            assert torch.ops.torchconv_cpp.conv2d(x, w, None, *args).shape == expected, (size, kernel)


@pytest.mark.parametrize(
    "window, message",
    [
        (([0, 2], [2, 2], [0, 0], [1, 1]), r"max_pool2d_backward: expected kernel_size values >= 1, but got \[0, 2\]"),
        (([2, 2, 2], [2, 2], [0, 0], [1, 1]), r"max_pool2d_backward: expected kernel_size to have 2 values"),
        (([2, 2], [2, 0], [0, 0], [1, 1]), r"max_pool2d_backward: expected stride values >= 1, but got \[2, 0\]"),
        (([2, 2], [2], [0, 0], [1, 1]), r"max_pool2d_backward: expected stride to have 2 values, but got \[2\]"),
        (([2, 2], [2, 2], [2, 0], [1, 1]), r"max_pool2d_backward: padding \[2, 0\] must be at most half"),
        (([2, 2], [2, 2], [0, 0], [0, 1]), r"max_pool2d_backward: expected dilation values >= 1"),
    ],
    ids=["kernel_zero", "kernel_three_values", "stride_zero", "stride_one_value", "padding_too_large", "dilation_zero"],
)
def test_compiled_max_pool2d_backward_checks_the_window(window, message):
    """The window is validated although the CPU scatter does not use it (the CUDA gather does)."""
    ops = torch.ops.torchconv_cpp
    values, indices = ops.max_pool2d(torch.randn(1, 2, 4, 4), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match=message):
        ops.max_pool2d_backward(torch.ones_like(values), indices, [4, 4], *window)


def test_backward_is_deterministic():
    x = torch.randn(8, 16, 12, 12, requires_grad=True)
    w = torch.randn(32, 16, 3, 3, requires_grad=True)
    with torchconv.backends.use("cpp"):
        runs = [torch.autograd.grad(torchconv.conv2d(x, w, padding=1).square().sum(), (x, w)) for _ in range(3)]
    for grads in runs[1:]:
        for a, b in zip(grads, runs[0]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and torchconv.backends.cuda.is_built()), reason="needs a GPU and the CUDA kernels"))])
def test_compiled_ops_pass_opcheck(device):
    """The torchconv_cpp:: ops themselves, CPU and CUDA kernels: schema, fake kernels, dynamic shapes."""
    ops = torch.ops.torchconv_cpp
    kw = dict(device=device, dtype=torch.float64)
    x = torch.randn(2, 4, 7, 6, **kw)
    w, wt, b = torch.randn(6, 2, 3, 2, **kw), torch.randn(4, 3, 3, 2, **kw), torch.randn(6, **kw)
    values, indices = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    cases = [
        (ops.conv2d, (x, w, b, [2, 1], [1, 1], [2, 1], 2)),
        (ops.conv_transpose2d, (x, wt, b, [2, 1], [1, 1], [1, 0], 2, [2, 1])),
        (ops.conv2d_weight, (x, torch.randn(2, 6, 2, 6, **kw), [6, 2, 3, 2], [2, 1], [1, 1], [2, 1], 2)),
        (ops.max_pool2d, (x, [3, 3], [2, 2], [1, 1], [1, 1], True)),
        (ops.max_pool2d_backward, (torch.randn_like(values), indices, [7, 6], [3, 3], [2, 2], [1, 1], [1, 1])),
        (ops.avg_pool2d, (x, [3, 3], [2, 2], [1, 1], True, False, None)),
        (ops.avg_pool2d_backward, (torch.randn_like(values), [7, 6], [3, 3], [2, 2], [1, 1], True, False, 2)),
    ]
    for op, args in cases:
        # No autograd on the compiled ops (the torchconv:: ops carry it), so no requires_grad here.
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_kernels_refuse_tensors_of_another_device_type():
    """A redispatch to the CPU key can hand the CPU kernels any tensor: they
    refuse it instead of reading its memory (a GPU tensor would crash them)."""
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    x = torch.empty(1, 2, 5, 5, device="meta")
    ops = torch.ops.torchconv_cpp
    with pytest.raises(RuntimeError, match=r"conv2d: this is the CPU kernel, but got a tensor on meta"):
        ops.conv2d.default.redispatch(cpu, x, torch.empty(3, 2, 3, 3, device="meta"), None, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"max_pool2d: this is the CPU kernel, but got a tensor on meta"):
        ops.max_pool2d.default.redispatch(cpu, x, [2, 2], [2, 2], [0, 0], [1, 1], False)
