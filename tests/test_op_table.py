"""``torchconv._library.OPS``, the one table of the ``torchconv::`` ops, and
what is registered from it: every op has a fake kernel (shared with its
compiled ``torchconv_cpp::`` twin), an autograd Function and a batching rule,
and the names are the backends' kernel names."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import torchconv  # noqa: F401  (registers everything)
from torchconv import _autograd, _library, backends
from torchconv.backends import reference


def test_ops_are_the_backend_kernels():
    assert list(_library.OPS) == list(reference.__all__)
    for name, entry in _library.OPS.items():
        assert entry.custom_op._qualname == f"torchconv::{name}"


def test_every_op_has_a_function_and_a_batching_rule():
    assert _autograd.FUNCTIONS.keys() == _library.OPS.keys()
    for function in _autograd.FUNCTIONS.values():
        assert function.generate_vmap_rule is False and callable(function.vmap)


def test_autocast_casts_the_convolutions_only():
    assert _library.AUTOCAST_OPS == {_library.conv2d, _library.conv_transpose2d}


def test_fake_kernels_give_shape_and_memory_format():
    with FakeTensorMode():
        x = torch.empty(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
        w = torch.empty(4, 3, 3, 3)
        y = torch.ops.torchconv.conv2d(x, w, None, [2, 2], [1, 1], [1, 1], 1)
        values, indices = torch.ops.torchconv.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    assert y.shape == (2, 4, 5, 5) and y.is_contiguous(memory_format=torch.channels_last)
    assert values.shape == indices.shape == (2, 3, 5, 5) and indices.dtype == torch.int64
    if backends.cpp.is_available():  # the compiled twin has the same fake kernel
        with FakeTensorMode():
            x = torch.empty(2, 3, 9, 9)
            z = torch.ops.torchconv_cpp.conv2d(x, torch.empty(4, 3, 3, 3), None, [2, 2], [1, 1], [1, 1], 1)
        assert z.shape == (2, 4, 5, 5)
