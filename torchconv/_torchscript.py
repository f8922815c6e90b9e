"""The public functions as dispatcher ops, so that TorchScript can call them.

``torch.jit.script`` compiles Python to TorchScript, which calls dispatcher
ops but cannot call arbitrary Python, and a saved TorchScript file names the
ops it calls. This module defines one op per public function of
:mod:`torchconv.functional`, in the ``torchconv_functional`` namespace, with
``torch.nn.functional``'s schema and defaults, and tells the TorchScript
compiler that a call of the Python function *is* a call of that op (as torch
does for ``F.conv2d`` and ``aten::conv2d``). Each op's kernel is the public
function itself, registered as ``CompositeImplicitAutograd``: the same
argument checks, unbatched inputs, autocast and autograd Functions as eager
calls. So a scripted ``torchconv.Conv2d``, or a model holding one, computes
and differentiates as the eager one, and ``torch.jit.save``/``load`` keep it;
loading needs ``import torchconv`` first, which defines the ops.

==================================================  =========================================
``torchconv_functional::conv2d``                    ``conv2d`` with int padding
``torchconv_functional::conv2d.padding``            ``conv2d`` with ``'same'``/``'valid'``
``torchconv_functional::conv_transpose2d``          ``conv_transpose2d``
``torchconv_functional::max_pool2d``                ``max_pool2d`` (values)
``torchconv_functional::max_pool2d_with_indices``   ``max_pool2d(..., return_indices=True)``
``torchconv_functional::avg_pool2d``                ``avg_pool2d``
==================================================  =========================================

``torch.jit.trace`` needs none of this: it records the ``torchconv::`` ops
that do the arithmetic (``functional._run``).
"""

from __future__ import annotations

import torch
from torch.jit._builtins import _register_builtin

from . import functional

# Imported for what it does (defines the ops TorchScript calls): nothing to
# import from it.
__all__: list[str] = []

_LIBRARY = torch.library.Library("torchconv_functional", "DEF")


# The dispatcher leaves out trailing arguments equal to their schema defaults
# when it calls a Python kernel: the kernels repeat the defaults.


def _max_pool2d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return functional.max_pool2d(input, kernel_size, stride or None, padding, dilation, ceil_mode, True)


def _max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return functional.max_pool2d(input, kernel_size, stride or None, padding, dilation, ceil_mode)


def _avg_pool2d(input, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return functional.avg_pool2d(
        input, kernel_size, stride or None, padding, ceil_mode, count_include_pad, divisor_override
    )


# (schema, kernel, the Python function TorchScript resolves to the op or None).
# An empty pool stride means "the kernel size", as in torch's schemas.
_OPS = (
    (
        "conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
        "int[2] dilation=1, int groups=1) -> Tensor",
        functional.conv2d,
        functional.conv2d,
    ),
    (
        "conv2d.padding(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, "
        'str padding="valid", int[2] dilation=1, int groups=1) -> Tensor',
        functional.conv2d,
        None,  # an overload of the one above: TorchScript picks it by padding's type
    ),
    (
        "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, "
        "int[2] padding=0, int[2] output_padding=0, int groups=1, int[2] dilation=1) -> Tensor",
        functional.conv_transpose2d,
        functional.conv_transpose2d,
    ),
    (
        "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, "
        "int[2] dilation=1, bool ceil_mode=False) -> Tensor",
        _max_pool2d,
        functional.max_pool2d,
    ),
    (
        "max_pool2d_with_indices(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, "
        "int[2] dilation=1, bool ceil_mode=False) -> (Tensor, Tensor)",
        _max_pool2d_with_indices,
        functional.max_pool2d_with_indices,
    ),
    (
        "avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, "
        "bool ceil_mode=False, bool count_include_pad=True, int? divisor_override=None) -> Tensor",
        _avg_pool2d,
        functional.avg_pool2d,
    ),
)


def _register() -> None:
    for schema, kernel, python_function in _OPS:
        name = schema.split("(", 1)[0]
        _LIBRARY.define(schema)
        _LIBRARY.impl(name, kernel, "CompositeImplicitAutograd")
        if python_function is not None:
            # torch.jit's table of Python functions that compile to an op
            # (how F.conv2d becomes aten::conv2d); there is no public API.
            _register_builtin(python_function, f"torchconv_functional::{name.split('.')[0]}")


_register()
