"""Proof that torchconv computes by itself: no torch convolution, transposed
convolution, pooling or im2col/col2im op runs underneath its ops, in the
forward, the backward or the double backward.

Two independent witnesses record every op that runs:

* ``OpRecorder``, a ``TorchDispatchMode``. A dispatch mode sees an op and
  then runs it with itself switched off, so on its own it would not see what
  runs *inside* a custom op's kernel. For the package's own ops
  (namespaces ``torchconv`` and ``torchconv_cpp``) the recorder therefore
  re-enters itself and redispatches the op straight to its CPU kernel, so
  every aten op the kernel calls is recorded too.
* ``torch.profiler``, which records every dispatcher call at any depth.

Positive controls show that both witnesses do see torch's ops (torch's own
functions, and a fake backend that delegates to ``torch.nn.functional``
through the torchconv ops), so the checks would fail if torchconv delegated.

Forbidden ops, matched by name: convolution, _convolution, conv2d,
conv_transpose2d, convolution_backward, mkldnn_convolution, slow_conv2d_*,
thnn_conv2d, slow_conv_transpose2d, slow_conv_dilated2d, cudnn/miopen
convolutions, max_pool2d*, max_pool2d_with_indices*, avg_pool2d*, adaptive_*
pooling, im2col and col2im (what F.unfold/F.fold lower to). ``aten::unfold``,
the strided-view method ``Tensor.unfold``, is not a convolution and is allowed,
as are as_strided, pad, matmul and friends.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import torchconv
from torchconv import backends

FORBIDDEN = re.compile(
    r"""
      convolution                                        # (_)convolution(_backward), mkldnn_/cudnn_/miopen_convolution...
    | (^|_)conv(\d|_transpose|_dilated|_depthwise|_tbc)  # conv2d, conv_transpose2d, slow_conv2d_forward, thnn_conv2d...
    | pool                                               # max_pool2d(_with_indices)(_backward), avg_pool2d(_backward)...
    | (^|_)adaptive_                                     # adaptive_avg_pool2d, _adaptive_avg_pool2d, adaptive_max_pool2d
    | im2col | col2im
    """,
    re.VERBOSE,
)
OWN_NAMESPACES = ("torchconv", "torchconv_cpp", "torchconv_cuda_emulated")  # the last: tests/cuda_emulation
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
# Not ops: the profiler's names for autograd nodes (which carry the op's name).
NOT_OPS = ("autograd",)


def _base_name(qualified: str) -> tuple[str, str]:
    """'aten::max_pool2d_with_indices.default' -> ('aten', 'max_pool2d_with_indices')."""
    namespace, _, rest = qualified.partition("::")
    return namespace, rest.split(".")[0]


def forbidden(qualified_names) -> set[str]:
    found = set()
    for q in qualified_names:
        namespace, name = _base_name(q)
        if namespace in OWN_NAMESPACES or namespace in NOT_OPS or not name:
            continue
        if FORBIDDEN.search(name):
            found.add(q)
    return found


class OpRecorder(TorchDispatchMode):
    """Records every op, including those run inside the package's own custom ops."""

    _KEYS = {
        "cpu": torch._C.DispatchKeySet(torch._C.DispatchKey.CPU),
        "cuda": torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA),
    }

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.depth = 0
        self.inner: list[str] = []  # ops run inside a torchconv op's kernel

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = f"{func.namespace}::{func._opname}"
        self.ops.append(name)
        if self.depth:
            self.inner.append(name)
        if func.namespace in OWN_NAMESPACES:
            self.depth += 1
            try:
                with self:  # see the kernel's own ops, on the kernel of the tensors' device
                    return func.redispatch(self._KEYS[_device_type(args)], *args, **kwargs)
            finally:
                self.depth -= 1
        return func(*args, **kwargs)


def _device_type(args) -> str:
    """'cuda' if any tensor argument is on a GPU (the dispatcher's choice too), else 'cpu'."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return "cuda" if any(t.is_cuda for t in tensors) else "cpu"


def _exercise(fn, inputs):
    """Forward, backward and double backward (through every first-order gradient)."""
    out = fn(*inputs)
    if isinstance(out, tuple):
        out = out[0]
    gy = torch.randn_like(out).requires_grad_()
    grads = torch.autograd.grad(out, inputs, gy, create_graph=True)
    total = sum((g * g).sum() for g in grads)
    total.backward()
    assert gy.grad is not None


def _t(*shape, channels_last=False):
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def _maxpool_input(*shape):
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n).to(torch.float64) / n).reshape(shape).requires_grad_()


CASES = {
    "conv2d": (lambda x, w, b: torchconv.conv2d(x, w, b, stride=2, padding=1, groups=2),
               lambda: (_t(2, 4, 7, 6), _t(6, 2, 3, 3), _t(6)),
               {"conv2d", "conv_transpose2d", "conv2d_weight"}),
    "conv2d_same_even_dilated": (lambda x, w, b: torchconv.conv2d(x, w, b, padding="same", dilation=(1, 2)),
                                 lambda: (_t(1, 3, 6, 7), _t(2, 3, 2, 4), _t(2)),
                                 {"conv2d", "conv_transpose2d", "conv2d_weight"}),
    "conv2d_unbatched_channels_last_weight": (
        lambda x, w: torchconv.conv2d(x, w, padding=(0, 1), dilation=2),
        lambda: (_t(3, 7, 7), _t(4, 3, 3, 2, channels_last=True)),
        {"conv2d", "conv_transpose2d", "conv2d_weight"}),
    "conv_transpose2d": (
        lambda x, w, b: torchconv.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2,
                                                   dilation=(1, 2)),
        lambda: (_t(2, 4, 3, 4, channels_last=True), _t(4, 3, 3, 3), _t(6)),
        {"conv_transpose2d", "conv2d", "conv2d_weight"}),
    "conv_transpose2d_unbatched_outpad_ge_stride": (
        lambda x, w: torchconv.conv_transpose2d(x, w, output_padding=1, dilation=2),
        lambda: (_t(2, 3, 3), _t(2, 3, 2, 2)),
        {"conv_transpose2d", "conv2d", "conv2d_weight"}),
    "max_pool2d": (lambda x: torchconv.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
                   lambda: (_maxpool_input(2, 3, 7, 6),),
                   {"max_pool2d", "max_pool2d_backward"}),
    "max_pool2d_indices_dilated_unbatched": (
        lambda x: torchconv.max_pool2d(x, (2, 3), stride=1, dilation=(2, 1), return_indices=True),
        lambda: (_maxpool_input(3, 6, 6),),
        {"max_pool2d", "max_pool2d_backward"}),
    "avg_pool2d": (lambda x: torchconv.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                   lambda: (_t(2, 3, 7, 6, channels_last=True),),
                   {"avg_pool2d", "avg_pool2d_backward"}),
    "avg_pool2d_divisor_unbatched": (lambda x: torchconv.avg_pool2d(x, (2, 3), stride=1, divisor_override=5),
                                     lambda: (_t(3, 5, 6),),
                                     {"avg_pool2d", "avg_pool2d_backward"}),
}


# ---------------------------------------------------------------- the forbidden-name filter itself


@pytest.mark.parametrize(
    "name",
    ["aten::convolution", "aten::_convolution", "aten::conv2d", "aten::conv_transpose2d",
     "aten::convolution_backward", "aten::_convolution_double_backward", "aten::mkldnn_convolution",
     "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::slow_conv2d_forward",
     "aten::thnn_conv2d", "aten::slow_conv_transpose2d", "aten::slow_conv_dilated2d",
     "aten::_conv_depthwise2d", "aten::cudnn_convolution", "aten::cudnn_convolution_transpose",
     "aten::miopen_convolution", "aten::_nnpack_spatial_convolution", "aten::convolution_overrideable",
     "aten::max_pool2d", "aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward",
     "aten::max_pool2d_backward", "aten::mkldnn_max_pool2d", "aten::avg_pool2d", "aten::avg_pool2d_backward",
     "aten::adaptive_avg_pool2d", "aten::_adaptive_avg_pool2d", "aten::adaptive_max_pool2d",
     "aten::im2col", "aten::col2im", "aten::convolution.default", "aten::max_pool2d_with_indices.default"],
)
def test_filter_flags(name):
    assert forbidden([name]) == {name}


@pytest.mark.parametrize(
    "name",
    ["aten::as_strided", "aten::unfold", "aten::matmul", "aten::bmm", "aten::mm", "aten::constant_pad_nd",
     "aten::pad", "aten::_convert_element_type", "prims::convert_element_type", "aten::scatter_add_",
     "aten::gather", "aten::max.dim", "aten::sum.dim_IntList", "aten::copy_",
     "torchconv::conv2d", "torchconv::max_pool2d_backward", "torchconv_cpp::conv_transpose2d",
     "GeneratedBackwardFor_torchconv_conv2d_default", "autograd::engine::evaluate_function: SumBackward0",
     "autograd::engine::evaluate_function: GeneratedBackwardFor_torchconv_max_pool2d_defaultBackward",
     "GeneratedBackwardFor_torchconv_avg_pool2d_backward_defaultBackward"],
)
def test_filter_allows(name):
    assert forbidden([name]) == set()


# ---------------------------------------------------------------- dispatch-mode witness


@pytest.mark.parametrize("case", list(CASES))
def test_no_torch_conv_or_pool_under_dispatch_mode(backend, case):
    fn, make, own_ops = CASES[case]
    inputs = make()
    with OpRecorder() as rec:
        _exercise(fn, inputs)
    assert forbidden(rec.ops) == set(), sorted(set(rec.ops))
    # The recording saw the package's ops (forward, backward, double backward)...
    seen_own = {_base_name(o)[1] for o in rec.ops if _base_name(o)[0] == "torchconv"}
    assert own_ops <= seen_own, seen_own
    # ...and looked inside their kernels.
    assert rec.inner, "nothing recorded inside the torchconv ops' kernels"


# ---------------------------------------------------------------- profiler witness


def _profiled_names(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("case", list(CASES))
def test_no_torch_conv_or_pool_under_profiler(backend, case):
    fn, make, own_ops = CASES[case]
    inputs = make()
    names = _profiled_names(lambda: _exercise(fn, inputs))
    assert forbidden(names) == set(), sorted(names)
    assert {f"torchconv::{op}" for op in own_ops} <= names, sorted(names)


# ---------------------------------------------------------------- positive controls

TORCH_CONTROLS = {
    "F.conv2d": lambda: _exercise(lambda x, w: F.conv2d(x, w, padding="same"), (_t(1, 2, 5, 5), _t(3, 2, 2, 2))),
    "F.conv_transpose2d": lambda: _exercise(lambda x, w: F.conv_transpose2d(x, w, stride=2),
                                            (_t(1, 2, 3, 3), _t(2, 3, 3, 3))),
    "F.max_pool2d": lambda: _exercise(lambda x: F.max_pool2d(x, 2), (_maxpool_input(1, 2, 4, 4),)),
    "F.avg_pool2d": lambda: _exercise(lambda x: F.avg_pool2d(x, 2), (_t(1, 2, 4, 4),)),
    "F.unfold": lambda: F.unfold(torch.randn(1, 2, 4, 4), 2),
    "F.fold": lambda: F.fold(torch.randn(1, 8, 9), (4, 4), 2),
    "F.adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(torch.randn(1, 2, 5, 5), 2),
}


@pytest.mark.parametrize("control", list(TORCH_CONTROLS))
def test_witnesses_see_torch_ops(control):
    run = TORCH_CONTROLS[control]
    with OpRecorder() as rec:
        run()
    assert forbidden(rec.ops), f"the dispatch mode missed {control}: {sorted(set(rec.ops))}"
    names = _profiled_names(run)
    assert forbidden(names), f"the profiler missed {control}: {sorted(names)}"


class _Delegating:
    """Kernels that cheat: torch.nn.functional / aten under torchconv's ops."""

    @staticmethod
    def conv2d(input, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
        return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups):
        return torch.ops.aten.convolution_backward(
            grad_output, input, torch.empty(weight_size, dtype=input.dtype), None, stride, padding, dilation,
            False, [0, 0], groups, [False, True, False])[1]

    @staticmethod
    def max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)

    @staticmethod
    def max_pool2d_backward(grad_output, indices, input_size, *window):
        return backends.reference.max_pool2d_backward(grad_output, indices, input_size, *window)

    @staticmethod
    def avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def avg_pool2d_backward(grad_output, input_size, *args):
        return backends.reference.avg_pool2d_backward(grad_output, input_size, *args)


@pytest.fixture
def delegating_backend():
    name = "_test_delegating"
    backends.register(backends.Backend(name, _Delegating, devices=("cpu",), priority=-100))
    try:
        with backends.use(name):
            yield name
    finally:
        backends._REGISTRY.pop(name, None)


@pytest.mark.parametrize("case", ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"])
def test_witnesses_catch_a_delegating_backend(delegating_backend, case):
    """The same checks, on a backend that hides torch's ops under torchconv's, fail."""
    fn, make, _ = CASES[case]
    inputs = make()
    with OpRecorder() as rec:
        _exercise(fn, inputs)
    assert forbidden(rec.ops), sorted(set(rec.ops))
    names = _profiled_names(lambda: _exercise(fn, inputs))
    assert forbidden(names), sorted(names)
