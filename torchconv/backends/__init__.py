"""Backend registry: which implementation of the kernels runs.

A backend is a set of kernels with one signature per computation (see
``torchconv.backends.reference`` for the list and their contracts) that runs
on some device types. The custom ops of ``torchconv`` look the backend up at
every call, so a choice made here applies to eager mode, to backward passes
and to ``torch.compile``d graphs alike.

Which backend runs, in order of precedence:

1. the innermost ``with torchconv.backends.use(name):`` block of the running
   thread (or asyncio task: the choice is a context variable, so threads and
   tasks choose independently);
2. the ``TORCHCONV_BACKEND`` environment variable;
3. the fastest backend available for the tensor's device.

An op's backward runs on the backend its forward ran on when that was chosen
with :func:`use`, whichever thread runs the backward (autograd may run it on
one of its own threads) and whether or not the block is still open.

Examples::

    >>> torchconv.backends.available("cpu")   # with the extension built
    ['cpp', 'reference']
    >>> torchconv.backends.available("cuda")  # built with CUDA, on a GPU machine
    ['cuda', 'reference']
    >>> with torchconv.backends.use("reference"):
    ...     y = torchconv.conv2d(x, w)
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Iterator

import torch

from . import cpp, cuda, reference

__all__ = [
    "Backend", "register", "registered", "available", "unavailable_reason", "use", "chosen", "current", "kernels",
    "registry_version", "ENV_VAR",
]

ENV_VAR = "TORCHCONV_BACKEND"


@dataclass(frozen=True)
class Backend:
    """A named set of kernels.

    Args:
        name: what users pass to :func:`use` and ``TORCHCONV_BACKEND``.
        kernels: a module (or any object) with the functions of
            ``torchconv.backends.reference``.
        devices: device types it runs on, e.g. ``("cpu",)``.
        priority: among available backends, the highest runs by default.
        is_available: says whether it can run now (e.g. its extension is built).
        how_to_enable: shown to users when it is not available.
        why_unavailable: the reason it is not available, or None.
    """

    name: str
    kernels: object
    devices: tuple[str, ...]
    priority: int = 0
    is_available: Callable[[], bool] = field(default=lambda: True)
    how_to_enable: str = ""
    #: Says why it is not available (e.g. the error that stopped its
    #: extension from loading), or None.
    why_unavailable: Callable[[], str | None] = field(default=lambda: None)


class _Registry(dict):
    """The registry: a dict that counts its changes (``version``), so that
    :func:`kernels` can keep the backends of each device type in priority
    order between changes, however the dict is changed."""

    version = 0

    def _changed(self):
        self.version += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def pop(self, *args):
        try:
            return super().pop(*args)
        finally:
            self._changed()

    def popitem(self):
        try:
            return super().popitem()
        finally:
            self._changed()

    def setdefault(self, key, default=None):
        try:
            return super().setdefault(key, default)
        finally:
            self._changed()

    def update(self, *args, **kwargs):
        try:
            super().update(*args, **kwargs)
        finally:
            self._changed()

    def clear(self):
        super().clear()
        self._changed()

    def __ior__(self, other):
        self.update(other)
        return self


_REGISTRY: dict[str, Backend] = _Registry()


def registry_version() -> int:
    """How many times the registry has changed: an answer derived from it
    (which backend runs by default) stays true while this number does."""
    return _REGISTRY.version


# The stack of use() blocks around the running code, per thread and asyncio
# task. Autograd may run a backward on a thread of its own, which does not
# inherit it: the autograd Functions record chosen() at forward and restore it
# around their backward (torchconv._autograd).
_CHOICES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("torchconv_backend", default=())


def register(backend: Backend) -> None:
    """Adds a backend to the registry (replacing one of the same name)."""
    _REGISTRY[backend.name] = backend


def registered() -> dict[str, Backend]:
    """All registered backends by name, available or not."""
    return dict(_REGISTRY)


def _device_type(device) -> str:
    return torch.device(device).type


def available(device="cpu") -> list[str]:
    """Names of the backends usable on ``device``, fastest first.

    Args:
        device (str or torch.device): e.g. ``"cpu"`` or ``"cuda:0"``.
    """
    kind = _device_type(device)
    usable = [b for b in _REGISTRY.values() if kind in b.devices and b.is_available()]
    return [b.name for b in sorted(usable, key=lambda b: -b.priority)]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` is not available (e.g. ``"the C++ extension
    torchconv._C failed to load (...)"``), or None when it is.

    Example::

        >>> torchconv.backends.available("cpu")  # the one-line check of a build
        ['cpp', 'reference']
        >>> torchconv.backends.unavailable_reason("cpp") is None
        True
    """
    _check_name(name)
    backend = _REGISTRY[name]
    if backend.is_available():
        return None
    return backend.why_unavailable() or "not available"


def chosen() -> str | None:
    """The backend named by the innermost :func:`use` block of this thread or task, or None."""
    choices = _CHOICES.get()
    return choices[-1] if choices else None


def _environment_choice() -> str | None:
    """The backend the ``TORCHCONV_BACKEND`` variable names, read at every call."""
    return os.environ.get(ENV_VAR)


def _requested() -> str | None:
    return chosen() or _environment_choice() or None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"torchconv.backends: unknown backend {name!r}; registered backends are "
            f"{sorted(_REGISTRY)}"
        )


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Context manager that makes backend ``name`` run inside its block.

    Args:
        name (str): one of :func:`registered`'s names.

    Raises:
        ValueError: if no backend of that name is registered.
    """
    _check_name(name)
    token = _CHOICES.set((*_CHOICES.get(), name))
    try:
        yield
    finally:
        _CHOICES.reset(token)


def current(device="cpu") -> str:
    """The name of the backend that runs on ``device`` now.

    Raises:
        RuntimeError: if the requested backend cannot run on ``device``.
    """
    kind = _device_type(device)
    requested = _requested()
    if requested is None:
        names = available(kind)
        if not names:
            raise RuntimeError(f"torchconv: no backend is available for device type '{kind}'")
        return names[0]
    source = "torchconv.backends.use()" if _CHOICES.get() else f"the {ENV_VAR} environment variable"
    if requested not in _REGISTRY:
        raise RuntimeError(
            f"torchconv: backend {requested!r} requested by {source} is not registered; "
            f"registered backends are {sorted(_REGISTRY)}"
        )
    backend = _REGISTRY[requested]
    if kind not in backend.devices:
        raise RuntimeError(
            f"torchconv: backend {requested!r} (requested by {source}) does not run on "
            f"'{kind}' tensors; backends available there: {available(kind)}"
        )
    if not backend.is_available():
        raise RuntimeError(
            f"torchconv: backend {requested!r} (requested by {source}) is not available. "
            f"{backend.how_to_enable}"
        )
    return requested


# device type -> (registry version, the backends that run on it, highest
# priority first): available()'s order without its sort at every call.
_BY_PRIORITY: dict[str, tuple[int, tuple[Backend, ...]]] = {}


def _by_priority(kind: str) -> tuple[Backend, ...]:
    cached = _BY_PRIORITY.get(kind)
    if cached is not None and cached[0] == _REGISTRY.version:
        return cached[1]
    ordered = tuple(sorted((b for b in _REGISTRY.values() if kind in b.devices), key=lambda b: -b.priority))
    _BY_PRIORITY[kind] = (_REGISTRY.version, ordered)
    return ordered


def kernels(device) -> ModuleType:
    """The kernels of the backend that runs on ``device`` now.

    Every op call asks this, so the answer :func:`current` gives is found
    here without building lists (it is part of every call's overhead,
    ``benchmarks/bench_overhead.py``): the choice of
    :func:`use` and the environment variable are read at every call, and
    so is ``is_available()`` of the backend picked; the priority order is
    kept between changes of the registry. Anything amiss goes to
    :func:`current`, for its error.
    """
    kind = device.type if type(device) is torch.device else _device_type(device)
    choices = _CHOICES.get()
    requested = choices[-1] if choices else _environment_choice()
    if not requested:
        cached = _BY_PRIORITY.get(kind)
        ordered = cached[1] if cached is not None and cached[0] == _REGISTRY.version else _by_priority(kind)
        for backend in ordered:
            if backend.is_available():
                return backend.kernels
    else:
        backend = _REGISTRY.get(requested)
        if backend is not None and kind in backend.devices and backend.is_available():
            return backend.kernels
    return _REGISTRY[current(kind)].kernels


register(Backend("reference", reference, devices=("cpu", "cuda"), priority=0))
register(
    Backend(
        "cpp",
        cpp,
        devices=("cpu",),
        priority=10,
        is_available=cpp.is_available,
        how_to_enable=cpp.HOW_TO_ENABLE,
        why_unavailable=cpp.load_problem,
    )
)
register(
    Backend(
        "cuda",
        cuda,
        devices=("cuda",),
        priority=10,
        is_available=cuda.is_available,
        how_to_enable=cuda.HOW_TO_ENABLE,
    )
)
