"""The torch releases torchconv runs on, checked at import.

torchconv uses ``torch.library.custom_op`` with ``register_autograd`` and
``register_fake``, the device-type autocast API (``torch.is_autocast_enabled(
device_type)``, and in C++ ``at::autocast::get_autocast_dtype``), and the
C++ ``torch::autograd::Function`` API; the oldest release it is tested on
that has them all is :data:`MINIMUM`. An older torch fails here, with the
fix, rather than deep inside an op.
"""

from __future__ import annotations

import re

import torch

__all__ = ["MINIMUM", "TESTED", "parse", "check"]

#: The oldest torch release torchconv supports (major, minor).
MINIMUM = (2, 11)
#: The releases the test suite has passed on (README, "Install").
TESTED = ("2.11", "2.13")


def parse(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as ``"2.13.0+cpu"``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a torch version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def check(version: str = torch.__version__) -> None:
    """Raises ImportError, saying what to install, if ``version`` is older than :data:`MINIMUM`."""
    if parse(version) < MINIMUM:
        need = ".".join(map(str, MINIMUM))
        raise ImportError(
            f"torchconv needs torch >= {need} (tested on {', '.join(TESTED)}), but torch {version} is installed. "
            f"Install a newer one, e.g. `pip install 'torch>={need}'`, then rebuild torchconv against it "
            "(`pip install --no-build-isolation -e .`)."
        )
