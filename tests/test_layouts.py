"""Output layouts, odd input layouts, empty batches, unbatched inputs, dtypes.

Every test runs torchconv's op and torch.nn.functional's on the same tensors
and compares them with :func:`torchconv.testing.assert_close_to_torch`:
values at torchconv's tolerances, and layout: ``is_contiguous()`` and
``is_contiguous(memory_format=torch.channels_last)`` must agree with torch's,
and so must the strides themselves.

Also pinned: a channels_last input whose output is (N, C, 1, 1) gets
torch's channels_last strides (C, 1, C, C), not (C, 1, 1, 1) (both "are"
contiguous in both formats, but ``suggest_memory_format()`` differs, so the
layout of what is computed next would); gradients get the layout of their
forward operands (``input.suggest_memory_format()``; for a convolution
channels_last if input or weight is) whatever the output gradient's layout.

Empty batches follow torch too: a convolution of an input without elements
has a contiguous output and gives every operand a zero gradient in the
operand's own layout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import assert_close_to_torch, memory_format_flags, scaled_error

CL = torch.channels_last
DTYPES = (torch.float32, torch.float64)

OPS = {
    "conv2d": (torchconv.conv2d, F.conv2d),
    "conv_transpose2d": (torchconv.conv_transpose2d, F.conv_transpose2d),
    "max_pool2d": (torchconv.max_pool2d, F.max_pool2d),
    "avg_pool2d": (torchconv.avg_pool2d, F.avg_pool2d),
}
# Arguments after the tensors, chosen so that every op has strided, padded,
# overlapping windows.
ARGS = {
    "conv2d": dict(stride=2, padding=1),
    "conv_transpose2d": dict(stride=2, padding=1, output_padding=1),
    "max_pool2d": dict(kernel_size=3, stride=2, padding=1),
    "avg_pool2d": dict(kernel_size=3, stride=2, padding=1),
}
CONV_OPS = ("conv2d", "conv_transpose2d")
POOL_OPS = ("max_pool2d", "avg_pool2d")



@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: intra-op threads only add overhead (4x the runtime on a
    busy 2-core machine). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------- helpers


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` (4-d) in another memory layout (the same values, except "expanded")."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=CL)
    if layout == "sliced":  # every other element of a bigger tensor, in C and W
        n, c, h, w = t.shape
        big = t.new_zeros(n, 2 * c, h, 2 * w)
        big[:, ::2, :, ::2] = t
        return big[:, ::2, :, ::2]
    if layout == "transposed":  # H and W swapped in memory
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced_channels_last":
        n, c, h, w = t.shape
        big = t.new_zeros(n, c, h + 3, w + 2).contiguous(memory_format=CL)
        big[:, :, 1 : h + 1, 2:] = t
        return big[:, :, 1 : h + 1, 2:]
    if layout == "expanded":  # the first image broadcast over the batch: batch stride 0
        return t[:1].expand_as(t)
    raise ValueError(layout)


def make(shape, dtype, layout="contiguous", requires_grad=True):
    return relayout(torch.randn(shape, dtype=dtype), layout).requires_grad_(requires_grad)


def operands(op, dtype, x_layout="contiguous", w_layout="contiguous", batch=2, unbatched=False, bias=True):
    """(tensors, kwargs) for ``op``: input (and weight, bias) in the given layouts."""
    shape = (batch, 4, 9, 8)
    x = make(shape, dtype, x_layout)
    if unbatched:
        x = x[0].detach().requires_grad_()
    if op in POOL_OPS:
        return [x], dict(ARGS[op])
    w_shape = (6, 2, 3, 3) if op == "conv2d" else (4, 3, 3, 3)  # groups=2
    tensors = [x, make(w_shape, dtype, w_layout)]
    if bias:
        tensors.append(make((6,), dtype))
    return tensors, dict(ARGS[op], groups=2)


def run(op, tensors, kwargs):
    """(ours, torch's): outputs, values only (max_pool2d's indices compared separately)."""
    ours, theirs = OPS[op]
    return ours(*tensors, **kwargs), theirs(*tensors, **kwargs)


def grads(out, tensors, grad_output):
    needs = [t for t in tensors if t.requires_grad]
    return torch.autograd.grad(out, needs, grad_output)


# ------------------------------------------------------------ forward output layout

X_LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed", "sliced_channels_last", "expanded")
W_LAYOUTS = ("contiguous", "channels_last", "transposed")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("w_layout", W_LAYOUTS)
@pytest.mark.parametrize("x_layout", X_LAYOUTS)
@pytest.mark.parametrize("op", CONV_OPS)
def test_conv_output_layout(backend, op, x_layout, w_layout, dtype):
    """channels_last out exactly when torch gives it; same strides; same values; same grads."""
    tensors, kwargs = operands(op, dtype, x_layout, w_layout)
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, msg="output")
    # Output gradient in the output's own layout (what the next op usually hands back).
    grad_output = torch.empty_like(expected).copy_(torch.randn(expected.shape, dtype=dtype))
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


@pytest.mark.parametrize("w_layout", W_LAYOUTS)
@pytest.mark.parametrize("x_layout", X_LAYOUTS)
@pytest.mark.parametrize("op", CONV_OPS)
def test_depthwise_output_layout(backend, op, x_layout, w_layout):
    """Depthwise convolutions (one image channel per group) run kernels of
    their own in the compiled backends; their outputs and gradients take
    torch's layout too."""
    x = make((2, 4, 9, 8), torch.float32, x_layout)
    tensors = [x, make((4, 1, 3, 3), torch.float32, w_layout), make((4,), torch.float32)]
    kwargs = dict(ARGS[op], groups=4)
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, msg="output")
    grad_output = torch.empty_like(expected).copy_(torch.randn(expected.shape))
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_layout", X_LAYOUTS)
@pytest.mark.parametrize("op", POOL_OPS)
def test_pool_output_layout(backend, op, x_layout, dtype):
    tensors, kwargs = operands(op, dtype, x_layout)
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, msg="output")  # max_pool2d: (values, indices)
    if op == "max_pool2d":
        got, expected = got[0], expected[0]
    grad_output = torch.empty_like(expected).copy_(torch.randn(expected.shape, dtype=dtype))
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


@pytest.mark.parametrize("op", CONV_OPS)
def test_channels_last_only_when_torch(backend, op):
    """The rule, spelled out: a conv's output is channels_last iff input or weight is."""
    for x_layout in ("contiguous", "channels_last"):
        for w_layout in ("contiguous", "channels_last"):
            tensors, kwargs = operands(op, torch.float32, x_layout, w_layout)
            got, expected = run(op, tensors, kwargs)
            want = "channels_last" in (x_layout, w_layout)
            assert expected.is_contiguous(memory_format=CL) == want  # torch's rule (a sanity check)
            assert got.is_contiguous(memory_format=CL) == want, (x_layout, w_layout, got.stride())
            assert got.is_contiguous() == (not want)


@pytest.mark.parametrize("op", list(OPS))
def test_channels_last_single_channel(backend, op):
    """C == 1: channels_last and contiguous strides coincide; the ambiguity resolves as torch's."""
    x = torch.randn(2, 1, 7, 6).contiguous(memory_format=CL).requires_grad_()
    if op in POOL_OPS:
        tensors, kwargs = [x], dict(ARGS[op])
    elif op == "conv2d":
        tensors, kwargs = [x, torch.randn(3, 1, 3, 3).contiguous(memory_format=CL)], dict(ARGS[op])
    else:
        tensors, kwargs = [x, torch.randn(1, 3, 3, 3).contiguous(memory_format=CL)], dict(ARGS[op])
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected)


# ------------------------------------------------- size-1 outputs, gradient layouts


def _size1_operands(op):
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=CL)
    if op == "conv2d":
        return [x, torch.randn(6, 4, 3, 3)], {}
    if op == "conv_transpose2d":
        return [x[:, :, :1, :1], torch.randn(4, 6, 1, 1)], {}
    return [x], dict(kernel_size=3)


@pytest.mark.parametrize("op", list(OPS))
def test_size1_output_memory_format(backend, op):
    """(N, C, 1, 1) outputs: values and memory format."""
    tensors, kwargs = _size1_operands(op)
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, check_strides=False)  # strides: the next test


@pytest.mark.parametrize("op", list(OPS))
def test_size1_output_strides(backend, op):
    """(N, C, 1, 1) outputs of a channels_last input: torch's strides (C, 1, C, C)."""
    tensors, kwargs = _size1_operands(op)
    got, expected = run(op, tensors, kwargs)
    assert got.stride() == expected.stride()


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("w_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("op", CONV_OPS)
def test_pointwise_weight_grad_strides(backend, op, w_layout, dtype, threads, dilation):
    """A 1x1 weight is laid out in both memory formats whatever its strides.
    After a channels_last input, torch's native CPU kernels give its gradient
    the weight's own strides, oneDNN the channels_last ones ((C, 1, C, C));
    which kernel runs depends on the dtype and, in float32, on the thread
    count (torchconv._torch_kernels.torch_cpu_convolves_with_onednn); torch's dilated
    native conv2d kernel gives the channels_last ones too."""
    if torch.get_default_device().type != "cpu":
        pytest.skip("torch's CUDA rule is not pinned here")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = make((2, 4, 5, 6), dtype, "channels_last")
        w = make((6, 4, 1, 1) if op == "conv2d" else (4, 6, 1, 1), dtype, w_layout)
        got, expected = run(op, [x, w], {"dilation": dilation})
        grad_output = torch.empty_like(expected).copy_(torch.randn(expected.shape, dtype=dtype))
        assert_close_to_torch(grads(got, [x, w], grad_output), grads(expected, [x, w], grad_output), msg="grads")
    finally:
        torch.set_num_threads(previous)


# (op, x_layout, w_layout): with a contiguous output gradient, each gradient still
# has torch's layout (that of its forward operands), not the output gradient's.
_GRAD_LAYOUT_CASES = [
    ("conv2d", "channels_last", "contiguous"),
    ("conv2d", "contiguous", "channels_last"),
    ("conv2d", "channels_last", "channels_last"),
    ("conv_transpose2d", "channels_last", "contiguous"),
    ("conv_transpose2d", "contiguous", "channels_last"),
    ("conv_transpose2d", "channels_last", "channels_last"),
    ("max_pool2d", "channels_last", None),
    ("avg_pool2d", "channels_last", None),
]


@pytest.mark.parametrize(
    "op, x_layout, w_layout",
    [pytest.param(*case, id=f"{case[0]}-x_{case[1]}-w_{case[2]}") for case in _GRAD_LAYOUT_CASES],
)
def test_grad_layout_with_contiguous_grad_output(backend, op, x_layout, w_layout):
    dtype = torch.float64
    tensors, kwargs = operands(op, dtype, x_layout, w_layout or "contiguous")
    got, expected = run(op, tensors, kwargs)
    grad_output = torch.randn(expected.shape, dtype=dtype)  # contiguous, while the output is channels_last
    assert expected.is_contiguous(memory_format=CL) and grad_output.is_contiguous()
    got_grads, expected_grads = grads(got, tensors, grad_output), grads(expected, tensors, grad_output)
    # Values agree in any case; then the layout.
    assert_close_to_torch(got_grads, expected_grads, check_memory_format=False, check_strides=False, msg="grads")
    assert_close_to_torch(got_grads, expected_grads, msg="grads")


# ------------------------------------------------------------- non-contiguous


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", CONV_OPS)
def test_noncontiguous_weight_and_bias(backend, op, dtype):
    """Weight with permuted kernel dims and a strided bias (a slice of a bigger tensor)."""
    tensors, kwargs = operands(op, dtype, "sliced")
    x, w, _ = tensors
    w = w.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()  # not contiguous
    bias = torch.randn(12, dtype=dtype)[::2].requires_grad_()
    assert not w.is_contiguous() and not bias.is_contiguous()
    tensors = [x, w, bias]
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, msg="output")
    grad_output = torch.randn(expected.shape, dtype=dtype)
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


@pytest.mark.parametrize("op", list(OPS))
def test_noncontiguous_grad_output(backend, op):
    """A transposed (non-contiguous, non-channels_last) output gradient."""
    dtype = torch.float64
    tensors, kwargs = operands(op, dtype)
    got, expected = run(op, tensors, kwargs)
    grad_output = torch.randn(expected.shape, dtype=dtype).transpose(2, 3).contiguous().transpose(2, 3)
    assert not grad_output.is_contiguous()
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


# ------------------------------------------------------------------ batch 0


def _batch_zero(op, dtype, x_layout, w_layout="contiguous"):
    tensors, kwargs = operands(op, dtype, x_layout, w_layout, batch=0)
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    got, expected = run(op, tensors, kwargs)
    assert_close_to_torch(got, expected, msg="output")  # max_pool2d: (values, indices)
    if op == "max_pool2d":
        got, expected = got[0], expected[0]
    assert got.shape[0] == 0
    grad_output = torch.randn(expected.shape, dtype=dtype)
    return tensors, grads(got, tensors, grad_output), grads(expected, tensors, grad_output)


@pytest.mark.parametrize("x_layout", ("contiguous", "channels_last"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_batch_zero(backend, op, dtype, x_layout):
    """Empty batch: forward (shape, dtype, memory format) and gradients (values, shapes)."""
    tensors, got_grads, expected_grads = _batch_zero(op, dtype, x_layout)
    # Values, shapes and dtypes here; memory formats in test_batch_zero_grad_layout.
    assert_close_to_torch(got_grads, expected_grads, check_memory_format=False, msg="grads")
    for t, g in zip(tensors[1:], got_grads[1:]):  # weight and bias: nothing to learn from no samples
        assert g.shape == t.shape and not g.any()


def _batch_zero_layout_params():
    return [pytest.param(op, x_layout, id=f"{op}-{x_layout}") for op in OPS for x_layout in ("contiguous", "channels_last")]


@pytest.mark.parametrize("op, x_layout", _batch_zero_layout_params())
def test_batch_zero_grad_layout(backend, op, x_layout):
    _, got_grads, expected_grads = _batch_zero(op, torch.float64, x_layout)
    for k, (g, e) in enumerate(zip(got_grads, expected_grads)):
        assert memory_format_flags(g) == memory_format_flags(e), (k, g.stride(), e.stride())


@pytest.mark.parametrize("op", CONV_OPS)
def test_batch_zero_channels_last_weight(backend, op):
    tensors, kwargs = operands(op, torch.float32, "contiguous", "channels_last", batch=0)
    got, expected = run(op, tensors, kwargs)
    assert memory_format_flags(got) == memory_format_flags(expected), (got.stride(), expected.stride())


# ------------------------------------------------------------------ unbatched


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_unbatched(backend, op, dtype):
    """A (C, H, W) input gives a (C', H', W') output: torch's, and the batched result's first item."""
    tensors, kwargs = operands(op, dtype, unbatched=True)
    assert tensors[0].dim() == 3
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    got, expected = run(op, tensors, kwargs)
    batched, _ = run(op, [tensors[0].unsqueeze(0), *tensors[1:]], kwargs)
    assert_close_to_torch(got, expected, msg="output")  # max_pool2d: (values, indices)
    if op == "max_pool2d":
        (got, got_idx), expected = got, expected[0]
        assert torch.equal(got_idx, batched[1][0])
        batched = batched[0]
    assert got.dim() == 3
    torch.testing.assert_close(got, batched[0], rtol=0, atol=0)
    grad_output = torch.randn(expected.shape, dtype=dtype)
    assert_close_to_torch(grads(got, tensors, grad_output), grads(expected, tensors, grad_output), msg="grads")


@pytest.mark.parametrize("op", POOL_OPS)
def test_unbatched_noncontiguous(backend, op):
    x = torch.randn(9, 8, 4, dtype=torch.float64).permute(2, 0, 1).requires_grad_()  # (4, 9, 8), channels innermost
    kwargs = dict(ARGS[op])
    got, expected = run(op, [x], kwargs)
    assert_close_to_torch(got, expected, msg="output")
    assert_close_to_torch(
        grads(got, [x], torch.ones_like(expected)), grads(expected, [x], torch.ones_like(expected)), msg="grads"
    )


# ------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_output_dtype(backend, op, dtype):
    tensors, kwargs = operands(op, dtype)
    got, expected = run(op, tensors, kwargs)
    assert got.dtype == expected.dtype == dtype
    for g in grads(got, tensors, torch.ones_like(got)):
        assert g.dtype == dtype
    if op == "max_pool2d":
        _, indices = OPS[op][0](*tensors, **kwargs, return_indices=True)
        assert indices.dtype == torch.int64


LOW_PRECISION = (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("x_layout", ("contiguous", "channels_last"))
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_low_precision_forward(backend, op, dtype, x_layout):
    """bf16/fp16 forward: same dtype and layout as torch's own half-precision
    result, values within the dtype's tolerance of it, and no further from the
    float64 result than torch's.

    torch and torchconv may round a sum differently (one ulp of the output's
    scale: 0.0625 at 8..16 in bf16; the tolerance is two); max pooling
    selects, so it is exact.
    """
    tensors, kwargs = operands(op, dtype, x_layout)
    tensors = [t.detach() for t in tensors]
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    got, expected = run(op, tensors, kwargs)
    if op == "max_pool2d":
        assert_close_to_torch(got, expected, atol=0, msg="max_pool2d")  # values and indices exactly
        got, expected = got[0], expected[0]
    assert_close_to_torch(got, expected)
    # And no worse than torch's own rounding, against a float64 reference.
    truth, _ = run(op, [t.double() for t in tensors], kwargs)
    if op == "max_pool2d":
        truth = truth[0]
    eps = torch.finfo(dtype).eps  # 2**-7 (bf16), 2**-10 (fp16)
    error, torch_error = scaled_error(got.double(), truth), scaled_error(expected.double(), truth)
    assert error <= 2 * torch_error + 2 * eps, (error, torch_error)


class _PresentedOnCuda:
    """A CPU tensor's dtype and strides, presented as on a GPU: all that
    ``conv_memory_format`` reads (the rule for CUDA is checkable without one)."""

    def __init__(self, tensor):
        self._tensor = tensor
        self.device, self.dtype, self.layout, self.shape = torch.device("cuda"), tensor.dtype, tensor.layout, tensor.shape

    def dim(self):
        return self._tensor.dim()

    def stride(self):
        return self._tensor.stride()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_conv_memory_format_rule_per_device(dtype):
    """torch: channels_last if either operand is, but on CUDA float64 and transposed
    convolutions with output_padding >= stride run contiguously."""
    from torchconv import _memory_format

    x = torch.randn(2, 3, 4, 4, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 3, 3, 3, dtype=dtype)
    assert _memory_format.conv_memory_format(x, w) == torch.channels_last
    assert _memory_format.conv_memory_format(x, w, slow_transposed=True) == torch.channels_last  # CPU: same rule
    on_cuda = _memory_format.conv_memory_format(_PresentedOnCuda(x), _PresentedOnCuda(w))
    assert on_cuda == (torch.contiguous_format if dtype == torch.float64 else torch.channels_last)
    assert _memory_format.conv_memory_format(_PresentedOnCuda(x), _PresentedOnCuda(w), slow_transposed=True) == torch.contiguous_format
    assert _memory_format.output_padding_is_big([2, 2], [1, 2]) and not _memory_format.output_padding_is_big([2, 2], [1, 1])
