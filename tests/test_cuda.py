"""The CUDA backend (csrc/cuda): what the core tests do not show.

The core tests already run on CUDA through the ``backend`` fixture (see
conftest.py). These add: CPU-against-CUDA agreement of outputs and gradients,
half-precision tolerances, bit-identical backward passes, chunked batches,
and, on a GPU only, the current stream and device, 64-bit indexing, direct
calls of the compiled ops (their opcheck on CUDA is in
test_cpp_backend.py).

Each test that takes ``target`` runs on the GPU with the ``cuda`` backend
(when there is one and the kernels are built) and on the CPU with
``cuda-emulated`` (the same sources compiled for the CPU, tests/cuda_emulation/)
when that was built; the GPU-only tests skip without a GPU.

Half-precision tolerances (checked by ``test_half_precision_error_is_torchs``):
the error of a float16/bfloat16 result against a float64 reference computed
from the same (rounded) inputs, as a fraction of the reference's largest
magnitude, is at most 2x torch's own error on the same call (cuDNN's on a
GPU) plus one unit of rounding of the dtype (float16 2^-11, bfloat16 2^-8).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv
from conftest import DEVICE_BACKENDS
from torchconv._precision import full_float32

pytestmark = [
    # torch's own warning for padding='same' with an even kernel: not ours.
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]
HAS_GPU_KERNELS = torch.cuda.is_available() and torchconv.backends.cuda.is_built()
needs_gpu = pytest.mark.skipif(not HAS_GPU_KERNELS, reason="needs a GPU and the CUDA kernels built")

TARGETS = ([("cuda", "cuda")] if HAS_GPU_KERNELS else []) + [
    pair for pair in DEVICE_BACKENDS if pair[1] == "cuda-emulated"
]
ROUNDING = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@pytest.fixture(params=TARGETS or [pytest.param(None, marks=pytest.mark.skip(reason="no GPU, no emulation"))],
                ids=lambda pair: pair and pair[1])
def target(request):
    """(device, backend): the CUDA kernels on a GPU, or their CPU emulation; TF32 off on both sides."""
    device, name = request.param
    if device == "cuda":
        torch.cuda.manual_seed(0)
    with torchconv.backends.use(name), full_float32():
        yield device


@pytest.fixture
def gpu():
    """The cuda backend on the GPU, TF32 off: for the tests that need a real GPU."""
    if not HAS_GPU_KERNELS:
        pytest.skip("needs a GPU and the CUDA kernels built")
    torch.cuda.manual_seed(0)
    with torchconv.backends.use("cuda"), full_float32():
        yield "cuda"


# (name, torchconv op, torch op, input shape, weight shape or None, kwargs)
CASES = [
    ("conv", torchconv.conv2d, F.conv2d, (2, 4, 9, 8), (6, 4, 3, 3), dict(padding=1)),
    ("conv-stride-dilation", torchconv.conv2d, F.conv2d, (3, 4, 11, 10), (6, 2, 3, 2),
     dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
    ("conv-pointwise", torchconv.conv2d, F.conv2d, (2, 8, 7, 7), (5, 8, 1, 1), {}),
    ("conv-depthwise", torchconv.conv2d, F.conv2d, (2, 6, 8, 8), (12, 1, 3, 3), dict(padding=1, groups=6)),
    ("conv-same", torchconv.conv2d, F.conv2d, (1, 3, 6, 7), (4, 3, 4, 3), dict(padding="same")),
    ("convT", torchconv.conv_transpose2d, F.conv_transpose2d, (2, 6, 5, 4), (6, 3, 4, 4), dict(stride=2, padding=1)),
    ("convT-groups-outpad", torchconv.conv_transpose2d, F.conv_transpose2d, (2, 4, 5, 5), (4, 3, 3, 2),
     dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2))),
    ("convT-pointwise", torchconv.conv_transpose2d, F.conv_transpose2d, (2, 6, 5, 5), (6, 4, 1, 1), {}),
    # 1x1, but output_padding makes the output (the weight gradient's plane) bigger than its windows side.
    ("convT-pointwise-outpad", torchconv.conv_transpose2d, F.conv_transpose2d, (2, 3, 4, 5), (3, 2, 1, 1),
     dict(output_padding=1, dilation=2)),
    ("maxpool-overlap", torchconv.max_pool2d, F.max_pool2d, (2, 3, 9, 8), None,
     dict(kernel_size=3, stride=2, padding=1)),
    ("maxpool-dilated-ceil", torchconv.max_pool2d, F.max_pool2d, (2, 3, 10, 9), None,
     dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(2, 1), ceil_mode=True)),
    ("avgpool", torchconv.avg_pool2d, F.avg_pool2d, (2, 3, 9, 8), None, dict(kernel_size=3, stride=2, padding=1)),
    ("avgpool-ceil-exclude-divisor", torchconv.avg_pool2d, F.avg_pool2d, (2, 3, 7, 8), None,
     dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avgpool-divisor", torchconv.avg_pool2d, F.avg_pool2d, (2, 3, 7, 8), None,
     dict(kernel_size=2, stride=1, divisor_override=3)),
]
IDS = [case[0] for case in CASES]


def _tensors(case, dtype, device, channels_last=False, seed=0):
    """The case's tensors (input, weight, bias), drawn on the CPU so every device gets the same values."""
    _, op, _, x_shape, w_shape, kwargs = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, dtype=torch.float64, generator=generator)
    if op is torchconv.max_pool2d:  # distinct values: one maximum per window, unambiguous indices
        x = torch.randperm(x.numel(), generator=generator).reshape(x_shape).to(torch.float64) / x.numel()
    tensors = [x]
    if w_shape is not None:
        out_channels = w_shape[0] if op is torchconv.conv2d else w_shape[1] * kwargs.get("groups", 1)
        tensors += [torch.randn(w_shape, dtype=torch.float64, generator=generator),
                    torch.randn(out_channels, dtype=torch.float64, generator=generator)]
    moved = []
    for t in tensors:
        t = t.to(device=device, dtype=dtype)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        moved.append(t.requires_grad_())
    return moved


def _run(op, tensors, kwargs, grad_seed=1):
    """Output and the gradients of a fixed random weighting of it."""
    out = op(*tensors, **kwargs)
    generator = torch.Generator().manual_seed(grad_seed)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=generator).to(out)
    grads = torch.autograd.grad((out * weights).sum(), tensors)
    return out, grads


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_cpu(target, case, dtype, channels_last):
    """Same values as the CPU reference backend; the result has torch's layout on its device."""
    _, op, torch_op, _, _, kwargs = case
    tol = {} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    with torchconv.backends.use("reference"):
        cpu_out, cpu_grads = _run(op, _tensors(case, dtype, "cpu", channels_last), kwargs)
    cuda_tensors = _tensors(case, dtype, target, channels_last)
    cuda_out, cuda_grads = _run(op, cuda_tensors, kwargs)
    torch.testing.assert_close(cuda_out.cpu(), cpu_out, **tol)
    for got, expected in zip(cuda_grads, cpu_grads):
        torch.testing.assert_close(got.cpu(), expected, **tol)
    torch_out = torch_op(*cuda_tensors, **kwargs)
    assert cuda_out.stride() == torch_out.stride()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_max_pool2d_indices_match_torchs(target, case):
    _, op, torch_op, _, _, kwargs = case
    if op is not torchconv.max_pool2d:
        pytest.skip("max_pool2d only")
    (x,) = _tensors(case, torch.float32, target)
    values, indices = op(x, **kwargs, return_indices=True)
    expected_values, expected_indices = torch_op(x, **kwargs, return_indices=True)
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)


def _relative_error(got, reference):
    scale = reference.abs().max().clamp_min(1e-30)
    return ((got.double() - reference).abs().max() / scale).item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_half_precision_error_is_torchs(target, case, dtype):
    """Outputs and gradients within 2x torch's (cuDNN's) error (+ one rounding unit) of float64."""
    _, op, torch_op, _, _, kwargs = case
    tensors = _tensors(case, dtype, target)
    reference_tensors = [t.detach().double().requires_grad_() for t in tensors]  # the same rounded values
    reference = _run(torch_op, reference_tensors, kwargs)
    ours = _run(op, tensors, kwargs)
    cudnn = _run(torch_op, [t.detach().requires_grad_() for t in tensors], kwargs)
    for what, got, theirs, exact in zip(
        ["output", *[f"grad {k}" for k in range(len(tensors))]],
        [ours[0], *ours[1]], [cudnn[0], *cudnn[1]], [reference[0], *reference[1]],
    ):
        assert got.dtype == dtype
        ours_error, cudnn_error = _relative_error(got, exact), _relative_error(theirs, exact)
        assert ours_error <= 2 * cudnn_error + ROUNDING[dtype], (what, ours_error, cudnn_error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_is_bit_identical_run_to_run(target, case, dtype):
    _, op, _, _, _, kwargs = case
    tensors = _tensors(case, dtype, target)
    first = _run(op, tensors, kwargs)
    for _ in range(2):
        again = _run(op, tensors, kwargs)
        assert torch.equal(again[0], first[0])
        for a, b in zip(again[1], first[1]):
            assert torch.equal(a, b)


def test_weight_gradient_of_a_large_batch_is_bit_identical(target):
    """Many chunks and long sums: where atomics would show."""
    # On a GPU 1.2 GB of columns (5 chunks of 256 MiB); the emulation (4 KiB chunks) runs one element at a time.
    n, size = (256, 64) if target == "cuda" else (6, 10)
    x = torch.randn(n, 32, size, size, device=target, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, device=target, requires_grad=True)
    grads = [torch.autograd.grad(torchconv.conv2d(x, w, padding=1).square().sum(), (x, w)) for _ in range(3)]
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(other, grads[0]))


def test_batches_larger_than_one_chunk_match_torch(target):
    """Column buffers are capped (256 MiB; 4 KiB in the emulation): this batch takes several chunks."""
    n, size = (64, 64) if target == "cuda" else (4, 8)
    kw = dict(device=target, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, 64, size, size, **kw)
    w = torch.randn(32, 64, 3, 3, **kw)
    b = torch.randn(32, **kw)
    ours = _run(torchconv.conv2d, [x, w, b], dict(padding=1))
    theirs = _run(F.conv2d, [x, w, b], dict(padding=1))
    torch.testing.assert_close(ours[0], theirs[0])
    for got, expected in zip(ours[1], theirs[1]):
        torch.testing.assert_close(got, expected)
    wt = torch.randn(64, 16, 4, 4, **kw)
    ours = _run(torchconv.conv_transpose2d, [x, wt], dict(stride=2, padding=1))
    theirs = _run(F.conv_transpose2d, [x, wt], dict(stride=2, padding=1))
    torch.testing.assert_close(ours[0], theirs[0])
    for got, expected in zip(ours[1], theirs[1]):
        torch.testing.assert_close(got, expected)


def test_runs_on_the_current_stream(gpu):
    x = torch.randn(8, 16, 32, 32, device="cuda", requires_grad=True)
    w = torch.randn(16, 16, 3, 3, device="cuda", requires_grad=True)
    expected = _run(torchconv.conv2d, [x, w], dict(padding=1))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = _run(torchconv.conv2d, [x, w], dict(padding=1))
        pooled = torchconv.max_pool2d(got[0], 2)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(pooled, F.max_pool2d(expected[0], 2))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_another_gpu_run_there(gpu):
    x = torch.randn(2, 3, 8, 8, device="cuda:1", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda:1", requires_grad=True)
    out, grads = _run(torchconv.conv2d, [x, w], {})
    assert out.device == torch.device("cuda:1") and all(g.device == out.device for g in grads)
    torch.testing.assert_close(out, F.conv2d(x, w))


def test_64_bit_indexing(gpu):
    """A pooling input of more than 2^31 elements (4.3 GB in float16)."""
    free, _ = torch.cuda.mem_get_info()
    if free < 16 * 2**30:
        pytest.skip("needs 16 GiB of free GPU memory")
    x = torch.zeros(2**31 + 2**16, device="cuda", dtype=torch.float16).view(2**15 + 1, 256, 16, 16)
    x[-1, -1, -1, -1] = 1.0
    values, indices = torchconv.max_pool2d(x, 2, return_indices=True)
    assert values[-1, -1, -1, -1].item() == 1.0 and indices[-1, -1, -1, -1].item() == 255
    averaged = torchconv.avg_pool2d(x, 2)
    assert averaged[-1, -1, -1, -1].item() == 0.25
    del values, indices, averaged, x
    torch.cuda.empty_cache()


def test_compiled_ops_check_devices(gpu):
    ops = torch.ops.torchconv_cpp
    x = torch.randn(1, 2, 5, 5, device="cuda")
    with pytest.raises(RuntimeError, match=r"expected weight on cuda:0 \(the input's device\), but got cpu"):
        ops.conv2d(x, torch.randn(3, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"expected int64 indices"):
        ops.max_pool2d_backward(torch.ones(1, 1, 2, 2, device="cuda"), torch.zeros(1, 1, 2, 2, dtype=torch.int64),
                                [4, 4], [2, 2], [2, 2], [0, 0], [1, 1])
    with pytest.raises(RuntimeError, match=r"expected a float32, float64, float16 or bfloat16 input"):
        ops.avg_pool2d(x.long(), [2, 2], [2, 2], [0, 0], False, True, None)


def test_cuda_is_the_default_backend_for_cuda_tensors(gpu):
    assert torchconv.backends.available("cuda")[0] == "cuda"
    with torchconv.backends.use("cuda"):
        assert torchconv.backends.current("cuda") == "cuda"
