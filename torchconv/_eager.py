"""The eager path: when a public function may hand its call to its compiled entry.

``torchconv._C`` (csrc/python/eager.cpp) has one entry per public function,
with ``torch.nn.functional``'s arguments: it takes the ordinary call of the
cpp backend in one C++ function (the checks, then the op through the
dispatcher, whose C++ Autograd kernel records the backward when an input
requires grad, csrc/autograd/functions.cpp) and returns ``NotImplemented``
for every other call, which then takes the Python path (torch's checks and
messages, the ``torchconv::`` custom ops and the autograd Functions of
``torchconv._autograd``).

The decision is split by what each side can see. The entry decides on the
tensors and the dispatcher's state (dtype, device, subclasses and functorch
wrappers, dispatch modes, torch.func transforms, the profiler, the tracer,
autocast, forward-mode tangents, the ``TORCHCONV_BACKEND`` variable);
:func:`entries` decides on Python's state, before the entry is called:

* not while ``torch.compile`` or ``torch.export`` traces the function (the
  graph holds the ``torchconv::`` ops, and Dynamo cannot trace a C function);
* the backend that runs on CPU tensors is the cpp backend: no
  ``torchconv.backends.use()`` block names another, and no backend
  registered since outranks it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Optional

import torch

from . import backends

_C = backends.cpp.EXTENSION  # None when not built: torchconv.backends.cpp says why

__all__ = ["entries"]

_COMPILED = "cpp"
# (registry version, whether the cpp backend is the CPU default then).
_default: tuple[int, bool] = (-1, False)


def _cpp_is_cpu_default() -> bool:
    global _default
    version = backends.registry_version()
    if _default[0] != version:
        _default = (version, backends.available("cpu")[:1] == [_COMPILED])
    return _default[1]


def entries() -> Optional[ModuleType]:
    """``torchconv._C``, whose functions may take the call now, else None."""
    if _C is None or torch.compiler.is_compiling():
        return None
    choice = backends.chosen()
    if choice is None:
        return _C if _cpp_is_cpu_default() else None
    return _C if choice == _COMPILED else None
