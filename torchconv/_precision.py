"""``full_float32()``: TF32 off for torch's CUDA matmuls and convolutions.

torch's CUDA convolutions use TF32 by default (``torch.backends.cudnn.allow_tf32``,
10-bit mantissas on Ampere and later) while its matmuls, hence torchconv's
CUDA GEMMs, do not (``torch.backends.cuda.matmul.allow_tf32``). Comparing
the two in float32 (validation, tests, benchmarks) needs both off. cuDNN's
flags go through ``torch.backends.cudnn.flags()``: plain assignment raises
once ``torch.testing._internal`` has frozen the global flags, as it does in
any test process that imports it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["full_float32"]


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Inside the block, float32 CUDA matmuls and cuDNN convolutions run in
    full float32; both settings are restored afterwards. A no-op on machines
    without CUDA (the flags exist, nothing reads them)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            benchmark_limit=cudnn.benchmark_limit,
            deterministic=cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        matmul.allow_tf32 = saved
