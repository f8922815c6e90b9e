"""Every dtype torch's CPU ops accept, with torch's results.

* integer convolutions and pools: bit for bit (integer arithmetic wraps
  the same whatever width it runs in; avg_pool2d divides toward zero);
* complex convolutions: three real convolutions each (Gauss's trick),
  gradients in torch's conjugate convention (gradcheck and gradgradcheck
  on complex inputs);
* half precision accumulates in float32: float16 averages of large values
  stay finite where torch's are;
* max_pool2d's NaN rule: the last NaN of a window wins, in every dtype.

The dtypes torch refuses are refused with its errors: tests/test_errors.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import torchconv
from conftest import CPU_BACKENDS
from torchconv.testing import assert_close_to_torch, error_scale, tolerance

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
CL = torch.channels_last


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: intra-op threads only add overhead (gradcheck's
    thousands of tiny calls run ten times slower with two on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _integers(shape, dtype, low=-100, high=100):
    low = max(low, 0) if dtype == torch.uint8 else low
    return torch.randint(low, high, shape).to(dtype)


# ------------------------------------------------------------------ integers


CONV2D_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(2, 0), groups=2),
    dict(stride=(1, 3), padding="same"),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kwargs", CONV2D_CASES, ids=str)
@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
def test_integer_conv2d_is_torchs_bit_for_bit(backend, dtype, kwargs, layout):
    if kwargs.get("padding") == "same" and kwargs.get("stride", 1) != 1:
        kwargs = dict(padding="same")
    x = _integers((2, 4, 7, 6), dtype)  # large enough to wrap around in 8 and 16 bits
    w = _integers((6, 4 // kwargs.get("groups", 1), 3, 3), dtype, -9, 9)
    b = _integers((6,), dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    assert_close_to_torch(torchconv.conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs), msg="batched")
    assert_close_to_torch(torchconv.conv2d(x[0], w, **kwargs), F.conv2d(x[0], w, **kwargs), msg="unbatched")


def test_int64_dilated_and_transposed(backend):
    x = _integers((2, 4, 7, 6), torch.int64)
    w = _integers((6, 2, 3, 3), torch.int64, -9, 9)
    assert_close_to_torch(torchconv.conv2d(x, w, stride=2, dilation=2, groups=2), F.conv2d(x, w, stride=2, dilation=2, groups=2))
    wt = _integers((4, 3, 3, 2), torch.int64, -9, 9)
    b = _integers((6,), torch.int64)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=2)
    assert_close_to_torch(torchconv.conv_transpose2d(x, wt, b, **kwargs), F.conv_transpose2d(x, wt, b, **kwargs))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
def test_integer_max_pool2d_is_torchs(backend, dtype, layout):
    x = _integers((2, 3, 9, 8), dtype, -3, 3)  # many ties: the first maximum wins
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                   dict(kernel_size=(2, 3), dilation=2, padding=1)):
        got = torchconv.max_pool2d(x, return_indices=True, **kwargs)
        expected = F.max_pool2d(x, return_indices=True, **kwargs)
        assert_close_to_torch(got, expected, msg=str(kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        dict(kernel_size=3, divisor_override=7),
        dict(kernel_size=(2, 3), divisor_override=-4),
    ],
    ids=str,
)
def test_int64_avg_pool2d_rounds_as_torch(backend, kwargs):
    """ATen divides the window sum in integer arithmetic: toward zero."""
    x = _integers((2, 3, 9, 8), torch.int64, -1000, 1000)
    assert_close_to_torch(torchconv.avg_pool2d(x, **kwargs), F.avg_pool2d(x, **kwargs))


# ------------------------------------------------------------------ complex


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES, ids=str)
def test_complex_convolutions_match_torch(backend, dtype):
    x = torch.randn(2, 4, 7, 6, dtype=dtype)
    w = torch.randn(6, 2, 3, 3, dtype=dtype)
    b = torch.randn(6, dtype=dtype)
    kwargs = dict(stride=2, padding=1, groups=2)
    assert_close_to_torch(torchconv.conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs), msg="conv2d")
    wt = torch.randn(4, 3, 3, 3, dtype=dtype)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    assert_close_to_torch(
        torchconv.conv_transpose2d(x, wt, b, **kwargs), F.conv_transpose2d(x, wt, b, **kwargs), msg="conv_transpose2d"
    )


def test_complex_gradients_follow_torchs_convention(backend):
    x = torch.randn(2, 4, 6, 5, dtype=torch.complex128, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    for ours, theirs in ((torchconv.conv2d, F.conv2d), (torchconv.conv_transpose2d, F.conv_transpose2d)):
        g = torch.randn(ours(x, w, b, stride=2, padding=1, groups=2).shape, dtype=torch.complex128)
        got = torch.autograd.grad(ours(x, w, b, stride=2, padding=1, groups=2), (x, w, b), g)
        expected = torch.autograd.grad(theirs(x, w, b, stride=2, padding=1, groups=2), (x, w, b), g)
        assert_close_to_torch(got, expected, msg=f"{ours.__name__} grads")


@pytest.mark.parametrize(
    "op, weight_shape, kwargs",
    [
        ("conv2d", (2, 2, 2, 3), dict(stride=2, padding=1, dilation=(1, 2))),
        ("conv_transpose2d", (2, 2, 3, 2), dict(stride=2, padding=(1, 0), output_padding=1)),
    ],
)
def test_complex_gradcheck_and_gradgradcheck(backend, op, weight_shape, kwargs):
    fn = getattr(torchconv, op)
    x = torch.randn(1, 2, 4, 3, dtype=torch.complex128, requires_grad=True)
    w = torch.randn(weight_shape, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(weight_shape[0 if op == "conv2d" else 1], dtype=torch.complex128, requires_grad=True)
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kwargs), (x, w, b))
    assert gradgradcheck(lambda x, w, b: fn(x, w, b, **kwargs), (x, w, b))


def test_complex_channels_last_layout(backend):
    x = torch.randn(2, 3, 6, 6, dtype=torch.complex64).contiguous(memory_format=CL)
    w = torch.randn(4, 3, 3, 3, dtype=torch.complex64)
    assert_close_to_torch(torchconv.conv2d(x, w), F.conv2d(x, w))


def test_complex_runs_on_real_kernels(backend, monkeypatch):
    """The backend's kernels only ever see real tensors."""
    kernels = torchconv.backends.kernels(torch.get_default_device())
    seen = []
    real_conv2d = kernels.conv2d

    def spy(input, *args):
        seen.append(input.dtype)
        return real_conv2d(input, *args)

    monkeypatch.setattr(kernels, "conv2d", spy)
    torchconv.conv2d(torch.randn(1, 2, 5, 5, dtype=torch.complex64), torch.randn(3, 2, 3, 3, dtype=torch.complex64))
    assert seen == [torch.float32] * 3  # Gauss's three real products


# ------------------------------------------------------------------ half precision


def test_float16_average_of_large_values_stays_finite(backend):
    x = torch.full((1, 1, 56, 56), 30.0, dtype=torch.float16)
    expected = F.avg_pool2d(x, 56)
    got = torchconv.avg_pool2d(x, 56)
    assert_close_to_torch(got, expected, atol=0)
    assert got.item() == 30.0
    (grad,) = torch.autograd.grad(torchconv.avg_pool2d(x.requires_grad_(), 56).sum(), x)
    torch.testing.assert_close(grad, torch.full_like(x, 1 / 56**2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_convolution_accumulates_in_float32(backend, dtype):
    """A long reduction (4 * 9 * 64 = 2304 terms): rounding each partial sum
    to half precision would be far off; one rounding at the end is not."""
    x = torch.rand(1, 256, 8, 8).to(dtype)
    w = torch.rand(2, 256, 3, 3).to(dtype)
    exact = F.conv2d(x.double(), w.double())
    got = torchconv.conv2d(x, w)
    assert got.dtype == dtype
    # Element-wise within one unit of rounding of the exact sum (inputs positive: no cancellation).
    assert_close_to_torch(got.double(), exact, rtol=torch.finfo(dtype).eps, atol=0)


# ------------------------------------------------------------------ NaN in max pooling


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_max_pool2d_picks_torchs_nan(backend, dtype, layout):
    nan = float("nan")
    row = torch.tensor([1.0, nan, 1.0, nan, 2.0, -1.0, nan, 0.0], dtype=dtype)
    x = torch.stack([row, row.flip(0), row.roll(3)]).reshape(1, 3, 2, 4)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    for kwargs in (dict(kernel_size=(2, 4)), dict(kernel_size=2, stride=1, padding=1), dict(kernel_size=(1, 2), dilation=(1, 2))):
        got = torchconv.max_pool2d(x, return_indices=True, **kwargs)
        expected = F.max_pool2d(x, return_indices=True, **kwargs)
        assert_close_to_torch(got, expected, atol=0, msg=str(kwargs))  # NaN where torch has NaN


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("module", ["Conv2d", "ConvTranspose2d"])
def test_complex32_module_backward_as_torchs(module, backend):
    # torch's modules compute every gradient in complex32, the bias's too,
    # although torch's CPU sum has no ComplexHalf kernel.
    torch.manual_seed(0)
    theirs = getattr(torch.nn, module)(2, 3, 3).to(torch.complex32)
    ours = getattr(torchconv, module)(2, 3, 3).to(torch.complex32)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=torch.complex64).to(torch.complex32)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_theirs = theirs(x_theirs)
    with torchconv.backends.use(backend):
        y_ours = ours(x_ours)
        grad = torch.randn(y_theirs.shape, dtype=torch.complex64).to(torch.complex32)
        y_theirs.backward(grad)
        y_ours.backward(grad)
    pairs = [(y_ours, y_theirs), (x_ours.grad, x_theirs.grad), (ours.weight.grad, theirs.weight.grad),
             (ours.bias.grad, theirs.bias.grad)]
    for actual, expected in pairs:
        assert actual.dtype == torch.complex32
        # Both sides round half-precision sums: held to the float16 limit against each other.
        limit = 2 * tolerance(torch.float16) * error_scale(expected.to(torch.complex64))
        assert_close_to_torch(actual.to(torch.complex64), expected.to(torch.complex64), atol=limit)
