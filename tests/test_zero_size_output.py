"""conv_transpose2d whose output has a side of size 0: torch's CPU result
depends on its kernel (oneDNN returns an empty tensor, its other kernels
raise "Output size is too small"), so on the dtype, the batch and the
thread count; torchconv follows the same rule
(torchconv._torch_kernels.torch_cpu_convolves_with_onednn)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.complex64, torch.complex128]
# The case: input (N, 1, 6, 1), weight (1, 2, 1, 5): output (N, 2, 12, 0).
ARGS = dict(stride=(2, 3), padding=(0, 5), output_padding=(1, 1), dilation=(2, 2))


def _run(function, x, w, b):
    try:
        return function(x, w, b, **ARGS), None
    except RuntimeError as error:
        return None, str(error)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_size_output_as_torch_per_dtype(cpu_backend, dtype, batch, memory_format, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, 1, 6, 1).to(dtype).to(memory_format=memory_format).requires_grad_()
        w = torch.randn(1, 2, 1, 5).to(dtype).requires_grad_()
        b = torch.randn(2).to(dtype).requires_grad_()
        expected, torch_error = _run(F.conv_transpose2d, x, w, b)
        ours, our_error = _run(torchconv.conv_transpose2d, x, w, b)
    finally:
        torch.set_num_threads(previous)
    if torch_error is not None:
        assert our_error is not None and torch_error.split("\n")[0] in our_error, (our_error, torch_error)
        return
    assert our_error is None, our_error
    assert ours.shape == expected.shape == (batch, 2, 12, 0)
    assert ours.dtype == expected.dtype and ours.stride() == expected.stride()
    grads = torch.autograd.grad(ours, (x, w, b), torch.ones_like(ours))
    expected_grads = torch.autograd.grad(expected, (x, w, b), torch.ones_like(expected))
    for g, e in zip(grads, expected_grads):
        assert torch.equal(g, e) and g.stride() == e.stride()


def test_negative_output_size_raises_whatever_the_kernel():
    x, w = torch.randn(5, 1, 6, 1), torch.randn(1, 2, 1, 5)
    with pytest.raises(RuntimeError, match=r"Calculated output size per channel: \(12 x -1\)\. Output size is too small"):
        torchconv.conv_transpose2d(x, w, stride=(2, 3), padding=(0, 5), output_padding=(1, 0), dilation=(2, 2))
