"""Builds csrc/cuda as a CPU extension and wraps it as a torchconv backend.

The CUDA sources compiled as plain C++ with ``TORCHCONV_CUDA_EMULATION``
(csrc/cuda/emulation.h: every block runs with one thread, blocks in turn) and
a 4 KiB column budget (so that small convolutions run in many chunks) give
``torch.ops.torchconv_cuda_emulated.*``: the CUDA backend's host code and
kernel arithmetic, on CPU tensors. ``backend()`` wraps them as the
``cuda-emulated`` backend (devices: cpu) for the test suite. What this cannot
show: anything about the GPU itself (races between threads, launch limits,
cuBLAS, speed).

Built with ``torch.utils.cpp_extension.load`` into build/cuda_emulation
(about a minute the first time; ninja rebuilds only what changed).
"""

from __future__ import annotations

import os
import types

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "torchconv_cuda_emulated"
COLUMN_BYTES = 4096
# TORCHCONV_EMULATION_INDEX64=1: every kernel runs its int64_t instance (the
# one a GPU uses past 2^31 elements) instead of the int32_t one.
INDEX64 = os.environ.get("TORCHCONV_EMULATION_INDEX64") == "1"


def load() -> None:
    """Compiles (if needed) and loads the library; its ops then exist under torch.ops.torchconv_cuda_emulated."""
    if hasattr(torch.ops, NAME) and hasattr(getattr(torch.ops, NAME), "conv2d"):
        return
    from torch.utils.cpp_extension import load as load_extension

    suffix = "_index64" if INDEX64 else ""
    build_directory = os.path.join(ROOT, "build", "cuda_emulation" + suffix)
    os.makedirs(build_directory, exist_ok=True)
    load_extension(
        name=NAME + suffix,
        sources=[os.path.join(HERE, f) for f in ("emulated_conv.cpp", "emulated_pool.cpp", "emulated_ops.cpp")],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O2", "-DTORCHCONV_CUDA_EMULATION", f"-DTORCHCONV_COLUMN_BYTES={COLUMN_BYTES}"]
        + (["-DTORCHCONV_FORCE_INT64_INDEX"] if INDEX64 else []),
        build_directory=build_directory,
        is_python_module=False,
        verbose=False,
    )


def kernels() -> types.SimpleNamespace:
    """The emulated ops with the backend kernel signatures (torchconv.backends.reference's),
    for the floating dtypes the CUDA backend compiles; the others run on the reference kernels."""
    from torchconv.backends import cpp, cuda, reference

    load()
    return types.SimpleNamespace(
        **{name: cpp.compiled_kernel(name, cuda.COMPILED_DTYPES, "CPU", NAME) for name in reference.__all__}
    )


def backend():
    """The ``cuda-emulated`` backend (not registered: the caller registers it)."""
    import torchconv

    return torchconv.backends.Backend("cuda-emulated", kernels(), devices=("cpu",), priority=-100)
