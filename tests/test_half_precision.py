"""float16 and bfloat16 on the compiled CPU kernels (the ``cpp`` backend).

The half dtypes compute in float32 and round each result once, so the
expected value of every output and gradient is torch's own function
computed in float32 on the same (half-valued) operands, rounded to the
dtype. The two may differ by the float32 sums' order, which can tip a
rounding: they are compared at torchconv.testing's tolerance for the dtype,
two units in the last place of the result's scale. Max pooling selects, so
its values and indices must equal torch's own half-precision result
exactly, NaN rule included.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import torchconv
from torchconv.backends import cpp
from torchconv.testing import assert_close_to_torch

pytestmark = [
    pytest.mark.skipif(
        not cpp.is_available(), reason="the C++ extension is not built (pip install --no-build-isolation -e .)"
    ),
    # Every test runs at each CPU capability level this machine supports.
    pytest.mark.usefixtures("capability"),
]

HALF = [torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last"]
NAN = float("nan")


def _layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


def _randn(*shape, dtype, generator):
    return torch.randn(*shape, generator=generator).to(dtype)


def _assert_rounded_from(got, expected32, dtype, msg=None, strides=None):
    """got (dtype) is expected32 (float32) rounded, at torchconv.testing's tolerance
    for dtype; with the strides ``strides`` if given, else expected32's."""
    assert got.dtype == dtype
    if strides is None:
        assert_close_to_torch(got, expected32.to(dtype), msg=msg)
        return
    assert_close_to_torch(got, expected32.to(dtype), msg=msg, check_memory_format=False, check_strides=False)
    assert got.stride() == strides, f"{msg}: strides {got.stride()} differ from torch's {strides}"


def _forward_and_grads(fn, tensors, grad_output_seed=1):
    """fn(*tensors) and the gradients of <fn(*tensors), g> for a fixed random g of the output's dtype."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    values = out[0] if isinstance(out, tuple) else out
    g = torch.randn(values.shape, generator=torch.Generator().manual_seed(grad_output_seed)).to(values.dtype)
    grads = torch.autograd.grad(values, leaves, g)
    return out, grads


def _check_against_float32(ours, theirs, tensors, dtype):
    """ours (a torchconv function, run on the cpp backend) against theirs (torch's)
    in float32 on the same operands: output and every gradient."""
    with torchconv.backends.use("cpp"):
        got, got_grads = _forward_and_grads(ours, tensors)
    expected, expected_grads = _forward_and_grads(theirs, [t.float() for t in tensors])
    # The layouts are those of torch's own call in the dtype: where the
    # weight gradient's strides depend on torch's kernel (oneDNN or not,
    # torchconv._torch_kernels.torch_cpu_convolves_with_onednn), the float32 call may
    # take the other one.
    _, torch_grads = _forward_and_grads(theirs, tensors)
    _assert_rounded_from(got, expected, dtype, msg="output")
    for k, (g, e, t) in enumerate(zip(got_grads, expected_grads, torch_grads)):
        _assert_rounded_from(g, e, dtype, msg=f"grad {k}", strides=t.stride())


# ------------------------------------------------------------------ convolutions

# (id, input shape, weight shape, keyword arguments). Batches of 1 (the GEMM
# runs threaded) and of more samples than threads (samples run in parallel);
# groups, depthwise (direct loops) and pointwise (no im2col) shapes.
CONV2D_CASES = [
    ("plain", (3, 4, 9, 8), (6, 4, 3, 3), dict(padding=1)),
    ("strided_dilated", (1, 3, 11, 10), (5, 3, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
    ("groups", (3, 6, 7, 7), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
    ("depthwise", (3, 4, 8, 9), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise_multiplier", (2, 3, 9, 7), (6, 1, 3, 2), dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=3)),
    ("pointwise", (3, 5, 6, 7), (4, 5, 1, 1), dict()),
    ("large_values", (2, 8, 6, 6), (8, 8, 3, 3), dict(padding=1)),
]

CONV_TRANSPOSE2D_CASES = [
    ("plain", (3, 4, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    ("strided_output_padding", (1, 4, 5, 4), (4, 2, 3, 2), dict(stride=2, padding=1, output_padding=(1, 0), dilation=(1, 2))),
    ("groups", (3, 6, 4, 5), (6, 2, 3, 3), dict(stride=(2, 1), padding=(0, 1), output_padding=(1, 0), groups=2)),
    ("depthwise", (3, 4, 6, 5), (4, 1, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=4)),
    ("pointwise", (3, 5, 6, 7), (5, 4, 1, 1), dict()),
]


def _conv_operands(case, dtype, layout, transposed):
    name, x_shape, w_shape, kwargs = case
    gen = torch.Generator().manual_seed(0)
    x = _layout(_randn(*x_shape, dtype=dtype, generator=gen), layout)
    w = _randn(*w_shape, dtype=dtype, generator=gen)
    out_channels = w_shape[1] * kwargs.get("groups", 1) if transposed else w_shape[0]
    b = _randn(out_channels, dtype=dtype, generator=gen)
    if name == "large_values":  # sums of several thousand, past bfloat16's integers
        x, w = (x.float() * 40).to(dtype), (w.float() * 20).to(dtype)
    return x, w, b, kwargs


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", CONV2D_CASES, ids=lambda c: c[0])
def test_conv2d(case, dtype, layout):
    x, w, b, kwargs = _conv_operands(case, dtype, layout, transposed=False)
    _check_against_float32(
        lambda x, w, b: torchconv.conv2d(x, w, b, **kwargs),
        lambda x, w, b: F.conv2d(x, w, b, **kwargs),
        [x, w, b],
        dtype,
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", CONV_TRANSPOSE2D_CASES, ids=lambda c: c[0])
def test_conv_transpose2d(case, dtype, layout):
    x, w, b, kwargs = _conv_operands(case, dtype, layout, transposed=True)
    _check_against_float32(
        lambda x, w, b: torchconv.conv_transpose2d(x, w, b, **kwargs),
        lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs),
        [x, w, b],
        dtype,
    )


@pytest.mark.parametrize("groups", [1, 2], ids=["gemm", "depthwise"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_conv2d_weight_sums_the_batch_in_float32(dtype, groups):
    """A weight gradient summed over the batch in the half dtype would lose the
    small samples' contributions against a large one (32768 + 16 rounds back
    to 32768 in both); summed in float32 (exactly, for these integers) and
    rounded once, it is torch's float32 result rounded."""
    x = torch.ones(64, groups, 4, 4, dtype=dtype)
    x[0] = 2048
    grad_output = torch.ones(64, groups, 4, 4, dtype=dtype)
    got = torch.ops.torchconv_cpp.conv2d_weight(x, grad_output, [groups, 1, 1, 1], [1, 1], [0, 0], [1, 1], groups)
    expected = torch.full((groups, 1, 1, 1), (2048.0 + 63) * 16)
    assert torch.equal(got, expected.to(dtype))


# ------------------------------------------------------------------ pools

MAX_POOL_CASES = [
    ("plain", (3, 4, 8, 8), dict(kernel_size=2)),
    ("overlapping_padded_ceil", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("dilated", (2, 3, 10, 9), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
]

AVG_POOL_CASES = [
    ("plain", (3, 4, 8, 8), dict(kernel_size=2)),
    ("padded_ceil", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("padded_ceil_exclude_pad", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                   count_include_pad=False)),
    ("divisor_override", (2, 3, 7, 8), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), divisor_override=5)),
]


def _pool_input(shape, dtype, layout, seed=0):
    return _layout(_randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)), layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", MAX_POOL_CASES, ids=lambda c: c[0])
def test_max_pool2d(case, dtype, layout):
    _, shape, kwargs = case
    x = _pool_input(shape, dtype, layout)
    with torchconv.backends.use("cpp"):
        (values, indices), (grad,) = _forward_and_grads(
            lambda x: torchconv.max_pool2d(x, **kwargs, return_indices=True), [x])
    (expected_values, expected_indices), _ = _forward_and_grads(
        lambda x: F.max_pool2d(x, **kwargs, return_indices=True), [x])
    assert values.dtype == dtype
    assert_close_to_torch((values, indices), (expected_values, expected_indices), atol=0, msg="max_pool2d")
    _, (expected_grad,) = _forward_and_grads(lambda x: F.max_pool2d(x, **kwargs), [x.float()])
    _assert_rounded_from(grad, expected_grad, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=lambda c: c[0])
def test_avg_pool2d(case, dtype, layout):
    _, shape, kwargs = case
    _check_against_float32(
        lambda x: torchconv.avg_pool2d(x, **kwargs), lambda x: F.avg_pool2d(x, **kwargs),
        [_pool_input(shape, dtype, layout)], dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float16_avg_pool2d_of_large_values_does_not_overflow(layout):
    """3136 * 30 overflows float16 (max 65504); the float32 sum does not, and the mean is 30 as torch's is."""
    x = _layout(torch.full((1, 2, 56, 56), 30.0, dtype=torch.float16), layout)
    expected = F.avg_pool2d(x, 56)
    with torchconv.backends.use("cpp"):
        got, (grad,) = _forward_and_grads(lambda x: torchconv.avg_pool2d(x, 56), [x])
    assert torch.equal(expected, torch.full_like(expected, 30.0))
    assert_close_to_torch(got, expected, atol=0)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------ the NaN rule of max pooling


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF], ids=str)
def test_max_pool2d_nan_rule_is_torchs(dtype, layout):
    """ATen takes a value that is greater or NaN: of several NaNs in a window the last one wins."""
    row = _layout(torch.tensor([[[[1.0, NAN, 1.0, NAN, 2.0]]]], dtype=dtype).expand(1, 3, 1, 5), layout)
    with torchconv.backends.use("cpp"):
        values, indices = torchconv.max_pool2d(row, (1, 5), return_indices=True)
    assert torch.isnan(values).all()
    assert indices.flatten().tolist() == [3, 3, 3]
    assert torch.equal(indices, F.max_pool2d(row, (1, 5), return_indices=True)[1])

    x = torch.randn(2, 4, 9, 8, generator=torch.Generator().manual_seed(3)).to(dtype)
    x[x > 0.8] = NAN  # windows with no, one and several NaNs
    x = _layout(x, layout)
    for kwargs in (dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(2, 3), stride=2, dilation=(2, 1),
                                                                  ceil_mode=True)):
        with torchconv.backends.use("cpp"):
            values, indices = torchconv.max_pool2d(x, **kwargs, return_indices=True)
        expected_values, expected_indices = F.max_pool2d(x, **kwargs, return_indices=True)
        assert_close_to_torch((values, indices), (expected_values, expected_indices), atol=0, msg=str(kwargs))


# ------------------------------------------------------------------ the compiled kernels run


def _compiled_ops_run(fn, tensors):
    """Names of the torchconv_cpp:: ops that a forward and backward of fn run."""
    with torchconv.backends.use("cpp"), profile(activities=[ProfilerActivity.CPU]) as prof:
        _forward_and_grads(fn, tensors)
    return {e.name.split(".")[0] for e in prof.events() if e.name.startswith("torchconv_cpp::")}


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_dtypes_run_the_compiled_kernels(dtype, monkeypatch):
    """Not the reference kernels: every compiled op shows up in the profile, and
    the reference kernels, patched to raise, are never called."""
    from torchconv.backends import reference

    for name in reference.__all__:
        monkeypatch.setattr(reference, name, _raise(name))
    gen = torch.Generator().manual_seed(0)
    x = _randn(2, 4, 6, 6, dtype=dtype, generator=gen)
    w, b = _randn(4, 2, 3, 3, dtype=dtype, generator=gen), _randn(4, dtype=dtype, generator=gen)
    runs = {
        "conv2d": (lambda x, w, b: torchconv.conv2d(x, w, b, padding=1, groups=2), [x, w, b]),
        "conv_transpose2d": (lambda x, w, b: torchconv.conv_transpose2d(x, w, b, stride=2, groups=2), [x, w, b]),
        "max_pool2d": (lambda x: torchconv.max_pool2d(x, 3, 2, 1), [x]),
        "avg_pool2d": (lambda x: torchconv.avg_pool2d(x, 3, 2, 1), [x]),
    }
    seen = set()
    for fn, tensors in runs.values():
        seen |= _compiled_ops_run(fn, tensors)
    assert seen == {f"torchconv_cpp::{name}" for name in reference.__all__}


def _raise(name):
    def kernel(*args, **kwargs):
        raise AssertionError(f"reference.{name} ran")

    return kernel


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_compiled_ops_take_half_dtypes_directly(dtype):
    """torch.ops.torchconv_cpp.* themselves, without the Python layer."""
    ops = torch.ops.torchconv_cpp
    gen = torch.Generator().manual_seed(0)
    x, w = _randn(2, 4, 7, 6, dtype=dtype, generator=gen), _randn(6, 2, 3, 2, dtype=dtype, generator=gen)
    b = _randn(6, dtype=dtype, generator=gen)
    got = ops.conv2d(x, w, b, [2, 1], [1, 1], [2, 1], 2)
    _assert_rounded_from(got, F.conv2d(x.float(), w.float(), b.float(), (2, 1), 1, (2, 1), 2), dtype)
    values, indices = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    expected = F.max_pool2d(x, 3, 2, 1, 1, True, return_indices=True)
    assert_close_to_torch((values, indices), expected, atol=0, msg="max_pool2d")
    averaged = ops.avg_pool2d(x, [3, 3], [2, 2], [1, 1], True, False, None)
    _assert_rounded_from(averaged, F.avg_pool2d(x.float(), 3, 2, 1, True, False), dtype)
    assert math.isfinite(averaged.float().abs().max().item())
