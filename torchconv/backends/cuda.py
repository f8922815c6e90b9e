"""The CUDA backend: kernels compiled from csrc/cuda into ``torchconv._C``.

setup.py builds them when torch has CUDA and nvcc is found (see its
docstring); they register CUDA kernels for the same ``torchconv_cpp::`` ops
as the CPU backend (csrc/ops.cpp). Float32, float64, float16 and bfloat16
all run compiled (half precisions accumulate in float32). Every backward is
deterministic: gathers instead of atomic scatters, sums in a fixed order.

This backend is available when the extension loaded with its CUDA kernels
and torch sees a GPU; otherwise CUDA tensors run on the reference backend
(pure PyTorch, which works on any device).
"""

from __future__ import annotations

import functools

import torch

from . import cpp, reference

HOW_TO_ENABLE = (
    "It needs a GPU, a CUDA build of torch and the extension built with its CUDA "
    "kernels: `TORCHCONV_BUILD_CUDA=1 pip install --no-build-isolation -e .` "
    "(nvcc on PATH or under CUDA_HOME)."
)



@functools.lru_cache(maxsize=None)
def is_built() -> bool:
    """Whether the loaded extension has CUDA kernels for every op (asked once:
    the backend lookup runs at every op call)."""
    if not cpp.is_available():
        return False
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    return all(has_kernel(f"torchconv_cpp::{name}", "CUDA") for name in reference.__all__)


def is_available() -> bool:
    return torch.cuda.is_available() and is_built()


def _kernel(name: str):
    op = getattr(torch.ops.torchconv_cpp, name)

    def kernel(*args):
        return op(*args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = f"torchconv_cpp::{name} on CUDA tensors (csrc/cuda)."
    return kernel


conv2d = _kernel("conv2d")
conv_transpose2d = _kernel("conv_transpose2d")
conv2d_weight = _kernel("conv2d_weight")
max_pool2d = _kernel("max_pool2d")
max_pool2d_backward = _kernel("max_pool2d_backward")
avg_pool2d = _kernel("avg_pool2d")
avg_pool2d_backward = _kernel("avg_pool2d_backward")
