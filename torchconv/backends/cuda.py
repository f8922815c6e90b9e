"""The CUDA backend: kernels compiled from csrc/cuda into ``torchconv._C``.

setup.py builds them when torch has CUDA and nvcc is found (see its
docstring); csrc/cuda/register.cpp registers them as the CUDA kernels of the
``torchconv_cpp::`` ops the CPU backend runs (schemas in csrc/schemas.h).
Float32, float64, float16 and bfloat16 all run compiled (half precisions
accumulate in float32). Every backward is deterministic: gathers instead of
atomic scatters, sums in a fixed order.

This backend is available when the extension loaded with its CUDA kernels
and torch sees a GPU; otherwise CUDA tensors run on the reference backend
(pure PyTorch, which works on any device).
"""

from __future__ import annotations

import functools

import torch

from . import cpp, reference

__all__ = ["HOW_TO_ENABLE", "COMPILED_DTYPES", "is_built", "is_available"]

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


# Every floating dtype runs compiled on CUDA; the integer dtypes run on the
# reference kernels (cpp.compiled_kernel's fallback).
COMPILED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

conv2d = cpp.compiled_kernel("conv2d", COMPILED_DTYPES, "CUDA")
conv_transpose2d = cpp.compiled_kernel("conv_transpose2d", COMPILED_DTYPES, "CUDA")
conv2d_weight = cpp.compiled_kernel("conv2d_weight", COMPILED_DTYPES, "CUDA")
max_pool2d = cpp.compiled_kernel("max_pool2d", COMPILED_DTYPES, "CUDA")
max_pool2d_backward = cpp.compiled_kernel("max_pool2d_backward", COMPILED_DTYPES, "CUDA")
avg_pool2d = cpp.compiled_kernel("avg_pool2d", COMPILED_DTYPES, "CUDA")
avg_pool2d_backward = cpp.compiled_kernel("avg_pool2d_backward", COMPILED_DTYPES, "CUDA")
