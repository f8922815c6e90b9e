"""The CPU capability level a benchmark runs at, the same on both sides.

``--capability LEVEL`` runs torchconv's kernels at ``LEVEL`` (its
``TORCHCONV_CPU_CAPABILITY``) and lowers torch's side to the same
instructions: ATen's kernels (``ATEN_CPU_CAPABILITY``), oneDNN's
(``ONEDNN_MAX_CPU_ISA``) and MKL's (``MKL_ENABLE_INSTRUCTIONS``), so that an
AVX-512 machine also shows how both fare on an AVX2 one. The libraries read
these variables once, at start-up, so the benchmark starts itself again
with them set. Every benchmark prints :func:`describe` in its header.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import torchconv

# The environment that puts both sides at each level.
ENVIRONMENTS = {
    "default": {"TORCHCONV_CPU_CAPABILITY": "default", "ATEN_CPU_CAPABILITY": "default",
                "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"TORCHCONV_CPU_CAPABILITY": "avx2", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    # AVX-512 without bfloat16 dot products (e.g. Skylake, Cascade Lake).
    "avx512": {"TORCHCONV_CPU_CAPABILITY": "avx512", "ATEN_CPU_CAPABILITY": "avx512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx512_bf16": {"TORCHCONV_CPU_CAPABILITY": "avx512_bf16", "ATEN_CPU_CAPABILITY": "avx512",
                    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capability", choices=list(ENVIRONMENTS), default=None,
        help="run both sides at this CPU capability level (default: the highest the CPU has); "
             "one at or below the CPU's own")


def apply(level: str | None) -> None:
    """Starts this benchmark again in the environment of ``level``, unless
    it already runs in it (or ``level`` is None)."""
    if level is None:
        return
    wanted = ENVIRONMENTS[level]
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    supported = torchconv.backends.cpp.supported_capabilities() if torchconv.backends.cpp.is_available() else []
    if level not in supported:
        raise SystemExit(f"--capability {level}: this CPU runs {', '.join(supported) or 'no compiled kernels'}")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **wanted})


def describe() -> str:
    """Both sides' levels, for a benchmark's header."""
    ours = torchconv.backends.cpp.capability() if torchconv.backends.cpp.is_available() else "n/a (not built)"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "all")
    return (f"CPU capability: torchconv {ours}, ATen {torch.backends.cpu.get_cpu_capability()} "
            f"(oneDNN max ISA {isa}, MKL {os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'all')})")
