"""The C++ CPU backend: kernels compiled from csrc/ into ``torchconv._C``.

Importing ``torchconv._C`` registers the ``torchconv_cpp::`` ops (schemas in
csrc/schemas.h, defined by csrc/ops.cpp; CPU kernels in csrc/cpu/; fake
kernels those of ``torchconv._library.OPS``). If the extension was not
built, or fails to load, this backend reports itself unavailable and the
reference backend runs instead; ``import torchconv`` never fails because of
it.

The compiled kernels take float32, float64, float16 and bfloat16. The half
dtypes compute in float32 (as torch's CPU kernels do): convolutions widen
their operands into float32 GEMMs and round each result once; average
pooling sums and divides in float32; max pooling compares in the dtype
itself (exact); backward passes accumulate in float32.
"""

from __future__ import annotations

import torch

from . import reference

try:
    from .. import _C  # noqa: F401  (loads the library that registers the ops)

    LOAD_ERROR: Exception | None = None
except (ImportError, OSError) as error:  # not built, or built against another torch
    LOAD_ERROR = error

HOW_TO_ENABLE = (
    "Build it with `pip install --no-build-isolation -e .` from the repository root "
    "(needs g++ and torch==2.13.0)."
)
COMPILED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Inputs of these dtypes get their outputs in the memory format torch gives
# them (csrc/cpu/conv.cpp's channels_last), strides included: the ops skip
# their own memory-format pass for them (torchconv._library._formatted_by).
MEMORY_FORMAT_DTYPES = frozenset(COMPILED_DTYPES)


def is_available() -> bool:
    return LOAD_ERROR is None


def _op_entry(namespace: str, name: str):
    """The callable that runs ``<namespace>::<name>`` (its one overload) with
    the least Python in between: the overload's own C++ entry where torch
    exposes it (``OpOverload._op``), else the OpOverload itself. Calling it
    directly skips the ``OpOverloadPacket.__call__`` frame and the overload
    resolution: about 1 us of the 4 us a tiny call of the op costs."""
    overload = getattr(getattr(torch.ops, namespace), name).default
    return getattr(overload, "_op", overload)


def compiled_kernel(name: str, dtypes: tuple[torch.dtype, ...], device: str, namespace: str = "torchconv_cpp"):
    """The compiled kernel ``<namespace>::<name>`` with the reference
    kernel's signature, for inputs of ``dtypes``; inputs of another dtype
    (the integer dtypes) go to the reference kernel. Every kernel's first
    argument is the tensor whose dtype decides. The op is looked up at its
    first call, and kept: without the extension it does not exist, and
    importing this module must not fail."""
    fallback = getattr(reference, name)
    entry = None

    def kernel(first, *args):
        nonlocal entry
        if first.dtype not in dtypes:
            return fallback(first, *args)
        if entry is None:
            entry = _op_entry(namespace, name)
        return entry(first, *args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = f"{namespace}::{name} on {device} tensors of {dtypes}, else reference.{name}."
    return kernel


conv2d = compiled_kernel("conv2d", COMPILED_DTYPES, "CPU")
conv_transpose2d = compiled_kernel("conv_transpose2d", COMPILED_DTYPES, "CPU")
conv2d_weight = compiled_kernel("conv2d_weight", COMPILED_DTYPES, "CPU")
max_pool2d = compiled_kernel("max_pool2d", COMPILED_DTYPES, "CPU")
max_pool2d_backward = compiled_kernel("max_pool2d_backward", COMPILED_DTYPES, "CPU")
avg_pool2d = compiled_kernel("avg_pool2d", COMPILED_DTYPES, "CPU")
avg_pool2d_backward = compiled_kernel("avg_pool2d_backward", COMPILED_DTYPES, "CPU")
