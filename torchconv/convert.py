"""Swap ``torch.nn`` convolution and pooling layers of a model for torchconv's."""

from __future__ import annotations

import copy

import torch
from torch.nn.utils import parametrize

from . import nn as _nn

__all__ = ["convert"]

# The ``torch.nn`` classes :func:`convert` replaces, and their torchconv twins.
_MAPPING: dict[type, type] = {
    torch.nn.Conv2d: _nn.Conv2d,
    torch.nn.ConvTranspose2d: _nn.ConvTranspose2d,
    torch.nn.MaxPool2d: _nn.MaxPool2d,
    torch.nn.AvgPool2d: _nn.AvgPool2d,
}


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Makes every ``torch.nn`` conv/pool layer of ``model`` run on torchconv.

    Every module of ``model`` (the root included, at any depth, inside
    ``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` or any custom
    module) whose type is exactly :class:`torch.nn.Conv2d`,
    :class:`torch.nn.ConvTranspose2d`, :class:`torch.nn.MaxPool2d` or
    :class:`torch.nn.AvgPool2d` becomes an instance of the torchconv twin
    (:class:`torchconv.Conv2d`, ...). Subclasses of those types (e.g.
    ``LazyConv2d``, parametrized layers or your own subclasses) and torchconv's
    own layers are left as they are, except layers with parametrizations
    (``torch.nn.utils.parametrizations.weight_norm``, ``spectral_norm``,
    your own ``register_parametrization``), which are converted and keep
    them. Models that use the older ``torch.nn.utils.weight_norm`` convert
    too.

    The swap changes each layer's class and nothing else: torchconv's layers
    subclass torch's and only override ``forward``, so the converted layer
    keeps all of its state as it is: parameters and buffers (device, dtype,
    ``requires_grad``, memory format), hooks, training mode and any extra
    attributes. Outputs are unchanged up to floating point rounding, and
    the result is still an ``isinstance`` of the ``torch.nn`` class. The
    module tree and its ``state_dict`` keys are unchanged.

    Args:
        model (nn.Module): the model (or a single layer) to convert.
        inplace (bool, optional): if ``False`` (the default), convert a
            :func:`copy.deepcopy` of ``model`` and leave ``model`` untouched:
            the result has its own copies of the parameters, so an optimizer
            must be built on the result's parameters. If ``True``, convert
            ``model`` itself: the converted layers are the very same module
            objects with the very same ``Parameter`` objects, so existing
            optimizers and references keep working.

    Returns:
        nn.Module: the converted model (``model`` itself if ``inplace``).

    Example::

        >>> model = nn.Sequential(
        ...     nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ...     nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
        >>> fast = torchconv.convert(model)
        >>> fast
        Sequential(
          (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
          (1): ReLU()
          (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
          (3): Flatten(start_dim=1, end_dim=-1)
          (4): Linear(in_features=2048, out_features=10, bias=True)
        )
        >>> type(fast[0])
        <class 'torchconv.nn.Conv2d'>
        >>> x = torch.randn(4, 3, 32, 32)
        >>> torch.allclose(fast(x), model(x), atol=1e-5)
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"torchconv.convert: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("torchconv.convert: cannot convert a TorchScript module; convert the eager model first")
    if not inplace:
        model = copy.deepcopy(model, _derived_tensor_copies(model))
    for module in model.modules():
        target = _twin(module)
        if target is not None:
            module.__class__ = target
    return model


def _twin(module: torch.nn.Module) -> type | None:
    """torchconv's class for ``module``, or None to leave it as it is.

    A layer with a parametrization (``torch.nn.utils.parametrize``, e.g.
    ``parametrizations.weight_norm`` or ``spectral_norm``) has a class that
    torch made for it, a subclass of the layer's own class holding the
    parametrized attributes; its twin is the same class over torchconv's
    layer (made once per class), so ``remove_parametrizations`` later
    restores torchconv's layer.
    """
    cls = type(module)
    target = _MAPPING.get(cls)
    if target is not None:
        return target
    base = cls.__bases__[0] if len(cls.__bases__) == 1 else None
    if base not in _MAPPING or not parametrize.is_parametrized(module):
        return None
    if cls not in _PARAMETRIZED_TWINS:
        body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        _PARAMETRIZED_TWINS[cls] = type(cls.__name__, (_MAPPING[base],), body)
    return _PARAMETRIZED_TWINS[cls]


_PARAMETRIZED_TWINS: dict[type, type] = {}


def _derived_tensor_copies(model: torch.nn.Module) -> dict[int, torch.Tensor]:
    """A ``copy.deepcopy`` memo for tensors that a module holds as plain
    attributes but computes from its parameters, such as the ``weight`` of
    ``torch.nn.utils.weight_norm`` (recomputed by a hook before each forward).
    Such non-leaf tensors refuse ``deepcopy``; the copy gets their value,
    detached, and the hook recomputes it from the copied parameters."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return memo
