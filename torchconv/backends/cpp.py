"""The C++ CPU backend: kernels compiled from csrc/ into ``torchconv._C``.

Importing ``torchconv._C`` registers the ``torchconv_cpp::`` ops (schemas in
csrc/schemas.h, defined by csrc/ops.cpp; CPU kernels in csrc/cpu/; fake
kernels those of ``torchconv._library.OPS``). If the extension was not
built, or fails to load, this backend reports itself unavailable and the
reference backend runs instead; ``import torchconv`` never fails because of
it.

The compiled kernels take float32, float64, float16 and bfloat16. The half
dtypes compute in float32 (as torch's CPU kernels do): convolutions widen
their operands into float32 GEMMs (on CPUs with AVX512-BF16, bfloat16
operands are multiplied as bfloat16 with float32 sums) and round each
result once; average pooling sums and divides in float32; max pooling
compares in the dtype itself (exact); backward passes accumulate in float32.

Each kernel family has variants per CPU capability level, chosen from the
CPU's flags (csrc/cpu/capability.h): :func:`capability` reports the level in
use, the environment variable ``TORCHCONV_CPU_CAPABILITY`` lowers it for a
process (the names of :func:`supported_capabilities`, as
``ATEN_CPU_CAPABILITY`` for torch), and :func:`use_capability` for a block.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

__all__ = [
    "EXTENSION",
    "LOAD_ERROR",
    "HOW_TO_ENABLE",
    "BUILD_VARIABLE",
    "COMPILED_DTYPES",
    "MEMORY_FORMAT_DTYPES",
    "load_problem",
    "is_available",
    "capability",
    "supported_capabilities",
    "use_capability",
    "compiled_kernel",
]

from . import reference

#: The compiled extension ``torchconv._C`` (loading it registers the ops),
#: or None where it is missing or fails to load; LOAD_ERROR says why.
EXTENSION: ModuleType | None
LOAD_ERROR: Exception | None
try:
    from .. import _C as EXTENSION

    LOAD_ERROR = None
except (ImportError, OSError) as error:  # not built, or built against another torch
    EXTENSION, LOAD_ERROR = None, error

HOW_TO_ENABLE = (
    "Build it with `pip install --no-build-isolation -e .` from the repository root "
    "(needs g++; it compiles against the installed torch, so rebuild after changing torch)."
)
#: The build's switch for a pure-Python install (setup.py): set to 0, the
#: missing extension is what was asked for.
BUILD_VARIABLE = "TORCHCONV_BUILD_CPP"


def _not_built() -> bool:
    """Whether there is no extension file at all (rather than one that fails to load)."""
    return importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}._C") is None


def _sources_beside_package() -> bool:
    """Whether the package runs from a source checkout with C++ sources (an
    editable install), whose build should have made the extension."""
    return any((Path(__file__).resolve().parents[2] / "csrc").glob("**/*.cpp"))


def load_problem() -> str | None:
    """Why the extension did not load, for a user: None when it loaded."""
    if LOAD_ERROR is None:
        return None
    if _not_built():
        return "the C++ extension torchconv._C is not built"
    return f"the C++ extension torchconv._C failed to load ({type(LOAD_ERROR).__name__}: {LOAD_ERROR})"


def _warn_if_unexpected() -> None:
    """One warning at import when the extension exists but fails to load, or
    a source checkout's build did not make it (unless TORCHCONV_BUILD_CPP=0
    asked for that): every op then runs on the reference backend, many
    times slower, which nothing else would tell."""
    if LOAD_ERROR is None:
        return
    if _not_built() and (os.environ.get(BUILD_VARIABLE) == "0" or not _sources_beside_package()):
        return
    warnings.warn(
        f"torchconv: {load_problem()}; every op runs on the reference backend (pure PyTorch, many times slower). "
        + HOW_TO_ENABLE
        + f" To silence this on purpose, set {BUILD_VARIABLE}=0.",
        RuntimeWarning,
        stacklevel=2,
    )


_warn_if_unexpected()
COMPILED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Inputs of these dtypes get their outputs in the memory format torch gives
# them (csrc/memory_format.h's conv_memory_format), strides included: the ops skip
# their own memory-format pass for them (torchconv._library._formatted_by).
MEMORY_FORMAT_DTYPES = frozenset(COMPILED_DTYPES)


def is_available() -> bool:
    return LOAD_ERROR is None


def _require_extension(what: str) -> None:
    if LOAD_ERROR is not None:
        raise RuntimeError(f"torchconv.backends.cpp.{what}: the C++ extension is not loaded ({LOAD_ERROR}). "
                           + HOW_TO_ENABLE)


def capability() -> str:
    """The CPU capability level the compiled kernels use: ``"default"``,
    ``"avx2"``, ``"avx512"`` or ``"avx512_bf16"`` (the highest the CPU has,
    unless lowered; compare ``torch.backends.cpu.get_cpu_capability()``).

    Example::

        >>> torchconv.backends.cpp.capability()  # doctest: +SKIP
        'avx512_bf16'
    """
    _require_extension("capability")
    return torch.ops.torchconv_cpp.capability()


def supported_capabilities() -> list[str]:
    """The capability levels this CPU can run, lowest first."""
    _require_extension("supported_capabilities")
    return list(torch.ops.torchconv_cpp.supported_capabilities())


@contextlib.contextmanager
def use_capability(level: str) -> Iterator[str]:
    """Runs the block with the compiled kernels at capability ``level``
    (one of :func:`supported_capabilities`), for the whole process, and
    restores the previous level after it. For tests and benchmarks that
    compare the kernel variants on one machine; not thread-local.

    Example::

        >>> with torchconv.backends.cpp.use_capability("avx2"):  # doctest: +SKIP
        ...     y = torchconv.conv2d(x, w)
    """
    _require_extension("use_capability")
    previous = torch.ops.torchconv_cpp.set_capability(level)
    try:
        yield level
    finally:
        torch.ops.torchconv_cpp.set_capability(previous)


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
            entry = getattr(getattr(torch.ops, namespace), name).default
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
