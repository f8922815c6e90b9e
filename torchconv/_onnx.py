"""ONNX translations of the ``torchconv::`` ops, for both of torch's exporters.

Each op becomes its standard ONNX operator, every argument an attribute:

====================  =========================================================
``conv2d``            ``Conv``
``conv_transpose2d``  ``ConvTranspose`` (``output_padding`` included)
``max_pool2d``        ``MaxPool``; its indices, when the graph uses them, are
                      ONNX's whole-tensor flat indices modulo ``H * W``
                      (torch's per-plane ``h * W + w``)
``avg_pool2d``        ``AveragePool``; with ``divisor_override``: the window
                      sums (``AveragePool`` over the explicitly zero-padded
                      input, where every window is whole) times
                      ``kH * kW / divisor_override``
====================  =========================================================

The TorchScript exporter also gets the ``torchconv_functional::`` ops that
``torch.jit.script`` compiles torchconv's functions to
(``torchconv/_torchscript.py``): their arguments are normalised first.

With ``ceil_mode``, torch drops a last window that would start in the right
padding; ONNX's operators drop it from opset 22 on, but not before (their
shape inference keeps it; onnxruntime drops it at every opset). A ``Slice``
to torch's output size makes the graph mean the same under both readings.

The translations are registered globally and lazily, so that a plain
``torch.onnx.export(model, args, dynamo=True)`` or ``(..., f, dynamo=False)``
finds them without ``import torchconv`` paying for ``torch.onnx`` (or
``onnxscript``, whose imports take long): each registration runs when the module it needs has
finished loading (:func:`register`).
"""

from __future__ import annotations

import sys
import warnings
from typing import Optional, Sequence

import torch

from ._output_size import pool_output_size, same_padding

__all__ = ["register", "onnx_translation_table"]

# The TorchScript exporter's symbolics hold from this opset on: Mod (the
# indices) needs 10, Pad with its pads as an input (divisor_override) 11.
SCRIPT_OPSET = 11

# The modules whose loading completes what each registration needs.
# _torchlib.ops: torch's own ONNX implementations; importing it is the last
# step before ``ONNXRegistry.from_torchlib()`` reads the registry, and by then
# both halves of the registry module pair (which import each other) are whole.
_DYNAMO_MODULE = "torch.onnx._internal.exporter._torchlib.ops"
_SCRIPT_MODULE = "torch.onnx"


# -------------------------------------------------------------- translations
#
# Written once for both exporters against ``g``, the little a translation
# needs from a graph under construction: ``g.op(op_type, *inputs, outputs=1,
# **int_attributes)``, ``g.ints(values)`` (an int64 constant),
# ``g.scalar(value, like)`` (a constant of ``like``'s dtype) and
# ``g.spatial_size(value)`` ((H, W) when both are static, else None).
# ``_ScriptGraph`` provides it over the TorchScript exporter's graph context,
# ``_TracedGraph`` over onnxscript, which the dynamo exporter traces.


def _conv2d(g, input, weight, bias, stride, padding, dilation, groups):
    """``padding``: (H, W), both sides; or ONNX's (top, left, bottom, right)."""
    inputs = (input, weight) if bias is None else (input, weight, bias)
    pads = list(padding) * 2 if len(padding) == 2 else list(padding)
    return g.op("Conv", *inputs, strides=stride, pads=pads, dilations=dilation, group=groups)


def _conv_transpose2d(g, input, weight, bias, stride, padding, output_padding, groups, dilation):
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return g.op(
        "ConvTranspose", *inputs, strides=stride, pads=[*padding, *padding], output_padding=output_padding,
        dilations=dilation, group=groups,
    )


def _max_pool2d(g, input, kernel_size, stride, padding, dilation, ceil_mode, with_indices):
    """(values, indices), indices None unless ``with_indices``."""
    attrs = dict(
        kernel_shape=kernel_size, strides=stride, pads=[*padding, *padding], dilations=dilation,
        ceil_mode=int(ceil_mode),
    )
    if not with_indices:
        values = g.op("MaxPool", input, **attrs)
        return _drop_windows_in_padding(g, values, input, kernel_size, stride, padding, dilation, ceil_mode), None
    values, indices = g.op("MaxPool", input, outputs=2, **attrs)
    # ONNX counts over the whole tensor, ((n * C + c) * H + h) * W + w, with
    # the default storage_order (row major); torch within the plane.
    indices = g.op("Mod", indices, _plane_size(g, input))
    return tuple(
        _drop_windows_in_padding(g, t, input, kernel_size, stride, padding, dilation, ceil_mode)
        for t in (values, indices)
    )


def _avg_pool2d(g, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if divisor_override is None:
        out = g.op(
            "AveragePool", input, kernel_shape=kernel_size, strides=stride, pads=[*padding, *padding],
            ceil_mode=int(ceil_mode), count_include_pad=int(count_include_pad),
        )
        return _drop_windows_in_padding(g, out, input, kernel_size, stride, padding, (1, 1), ceil_mode)
    # ONNX has no divisor_override. Torch divides the sum of each window's
    # input cells by it; zero padding adds nothing to a sum, so pad the input
    # far enough (ceil_mode: stride - 1 more at the end) that every window is
    # whole: then AveragePool divides every sum by kH * kW.
    extra = [s - 1 if ceil_mode else 0 for s in stride]
    if any(padding) or any(extra):
        pads = [0, 0, *padding, 0, 0, *(p + e for p, e in zip(padding, extra))]
        input_padded = g.op("Pad", input, g.ints(pads))
    else:
        input_padded = input
    means = g.op("AveragePool", input_padded, kernel_shape=kernel_size, strides=stride)
    out = g.op("Mul", means, g.scalar(kernel_size[0] * kernel_size[1] / divisor_override, like=input))
    return _drop_windows_in_padding(g, out, input, kernel_size, stride, padding, (1, 1), ceil_mode)


def _plane_size(g, input):
    """``H * W`` of ``input`` as a 1-element int64 tensor."""
    size = g.spatial_size(input)
    if size is not None:
        return g.ints([size[0] * size[1]])
    spatial = g.op("Slice", g.op("Shape", input), g.ints([2]), g.ints([4]))
    return g.op("ReduceProd", spatial, keepdims=1)


def _drop_windows_in_padding(g, out, input, kernel_size, stride, padding, dilation, ceil_mode):
    """``out`` sliced to torch's output size where torch drops a last
    ceil_mode window that would start in the right padding.

    Only windows that start inside the input or its left padding count:
    ``ceil((size + pad) / stride)`` of them, at most. Slice clamps its ends
    to the size, so the slice is a no-op where the pooling dropped them
    already.
    """
    if not ceil_mode:
        return out
    size = g.spatial_size(input)
    if size is not None:
        axes = list(zip(size, kernel_size, stride, padding, dilation))
        keep = [pool_output_size(n, k, s, p, d, True) for n, k, s, p, d in axes]
        # Before opset 22: ceil((size + 2 pad - effective kernel) / stride) + 1 windows.
        kept_by_old_rule = [-(-(n + 2 * p - d * (k - 1) - 1) // s) + 1 for n, k, s, p, d in axes]
        if keep == kept_by_old_rule:
            return out
        ends = g.ints(keep)
    else:
        spatial = g.op("Slice", g.op("Shape", input), g.ints([2]), g.ints([4]))
        starts_inside = g.op("Add", spatial, g.ints([p + s - 1 for p, s in zip(padding, stride)]))
        ends = g.op("Div", starts_inside, g.ints(list(stride)))  # int64: floor division of non-negatives
    return g.op("Slice", out, g.ints([0, 0]), ends, g.ints([2, 3]))


# ------------------------------------------------------------------ dynamo
#
# torch.onnx.export(..., dynamo=True) calls these with onnxscript values,
# inside onnxscript's tracing; the annotations tell the exporter which
# arguments are ONNX attributes (Python constants) rather than tensors.


class _TracedGraph:
    """The translations' ``g`` over onnxscript's opset 18, which the dynamo exporter traces."""

    def __init__(self):
        from onnxscript import ir, opset18

        self._opset, self._ir = opset18, ir

    def op(self, op_type, *inputs, outputs=1, **attrs):
        result = getattr(self._opset, op_type)(*inputs, **attrs)
        # An operator with optional outputs yields them all; the exporter's
        # optimizer drops the ones nothing uses.
        if isinstance(result, (tuple, list)):
            return tuple(result[:outputs]) if outputs > 1 else result[0]
        return result

    def ints(self, values):
        return self._opset.Constant(value_ints=list(values))

    def scalar(self, value, like):
        return self._opset.Constant(value=self._ir.tensor([value], dtype=like.dtype))

    @staticmethod
    def spatial_size(value):
        shape = value.shape
        dims = None if shape is None or len(shape) != 4 else tuple(shape[2:])
        return dims if dims is not None and all(isinstance(d, int) for d in dims) else None


def conv2d_onnx(
    input, weight, bias=None, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1), groups: int = 1,
):
    """``torchconv::conv2d`` as ONNX ``Conv``."""
    return _conv2d(_TracedGraph(), input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d_onnx(
    input, weight, bias=None, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
    output_padding: Sequence[int] = (0, 0), groups: int = 1, dilation: Sequence[int] = (1, 1),
):
    """``torchconv::conv_transpose2d`` as ONNX ``ConvTranspose``."""
    return _conv_transpose2d(_TracedGraph(), input, weight, bias, stride, padding, output_padding, groups, dilation)


def max_pool2d_onnx(
    input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1), ceil_mode: bool = False,
):
    """``torchconv::max_pool2d`` as ONNX ``MaxPool``, values and torch's indices."""
    return _max_pool2d(_TracedGraph(), input, kernel_size, stride, padding, dilation, ceil_mode, True)


def avg_pool2d_onnx(
    input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0),
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None,
):
    """``torchconv::avg_pool2d`` as ONNX ``AveragePool`` (``divisor_override``: see the module's docstring)."""
    g = _TracedGraph()
    return _avg_pool2d(g, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


#: ``{torch.ops.torchconv.<op>.default: translation}`` for the dynamo
#: exporter's ``custom_translation_table`` argument. Not needed with
#: ``import torchconv`` (the translations are registered globally); it is
#: there for code that passes tables explicitly.
onnx_translation_table = {
    torch.ops.torchconv.conv2d.default: conv2d_onnx,
    torch.ops.torchconv.conv_transpose2d.default: conv_transpose2d_onnx,
    torch.ops.torchconv.max_pool2d.default: max_pool2d_onnx,
    torch.ops.torchconv.avg_pool2d.default: avg_pool2d_onnx,
}


def _register_dynamo() -> None:
    """Adds the translations to torch's own ONNX implementations, which
    ``ONNXRegistry.from_torchlib()`` reads for every dynamo export.

    torch's registry rather than onnxscript's torch_lib one, which
    ``from_torchlib`` reads too: torch is pinned to the release this was
    written against, onnxscript only loosely, and torch's registry is where
    torch's own implementations are moving.
    """
    from torch.onnx._internal.exporter._torchlib._torchlib_registry import onnx_impl

    for target, function in onnx_translation_table.items():
        onnx_impl(target, trace_only=True)(function)


# ------------------------------------------------------------- TorchScript


class _ScriptGraph:
    """The translations' ``g`` over the TorchScript exporter's graph context."""

    def __init__(self, g):
        self._g = g

    def op(self, op_type, *inputs, outputs=1, **attrs):
        # Every attribute here is an int or a list of ints: suffix "_i".
        return self._g.op(op_type, *inputs, outputs=outputs, **{f"{k}_i": v for k, v in attrs.items()})

    def ints(self, values):
        return self._g.op("Constant", value_t=torch.tensor(list(values), dtype=torch.int64))

    def scalar(self, value, like):
        from torch.onnx._internal.torchscript_exporter import _type_utils

        dtype = _type_utils.JitScalarType.from_value(like, _type_utils.JitScalarType.FLOAT).dtype()
        return self._g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

    @staticmethod
    def spatial_size(value):
        from torch.onnx._internal.torchscript_exporter import symbolic_helper

        sizes = symbolic_helper._get_tensor_sizes(value)
        dims = None if sizes is None or len(sizes) != 4 else tuple(sizes[2:])
        return dims if dims is not None and all(isinstance(d, int) for d in dims) else None


def _optional(value):
    """A TorchScript ``Tensor?`` argument: None for a None constant."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    return None if symbolic_helper._is_none(value) else value


def _conv2d_symbolic(g, input, weight, bias, stride, padding, dilation, groups):
    return _conv2d(_ScriptGraph(g), input, weight, _optional(bias), stride, padding, dilation, groups)


def _conv_transpose2d_symbolic(g, input, weight, bias, stride, padding, output_padding, groups, dilation):
    return _conv_transpose2d(
        _ScriptGraph(g), input, weight, _optional(bias), stride, padding, output_padding, groups, dilation
    )


def _max_pool2d_symbolic(g, input, kernel_size, stride, padding, dilation, ceil_mode):
    # A traced model that never reads the indices gets a MaxPool without
    # them (onnxruntime's faster kernel); None tells the exporter that this
    # output has no ONNX value, which it accepts only for an unused output.
    with_indices = bool(g.original_node.outputsAt(1).uses())
    return _max_pool2d(_ScriptGraph(g), input, kernel_size, stride, padding, dilation, ceil_mode, with_indices)


def _avg_pool2d_symbolic(g, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _avg_pool2d(
        _ScriptGraph(g), input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )


# torch.jit.script compiles calls of torchconv's functions (and so its
# layers) to the torchconv_functional:: ops of torchconv/_torchscript.py,
# which have torch.nn.functional's schemas: the arguments come as the user
# wrote them, so these symbolics normalise them first (as functional.py
# does) and then translate as above.


def _pair(values):
    """An ``int[2]`` argument as written: one value stands for both."""
    return list(values) * 2 if len(values) == 1 else list(values)


def _as_batched(g, input, translate):
    """``translate(4-d input)``, for a (C, H, W) input too: it gets, and its
    outputs lose, a batch dimension."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    if symbolic_helper._get_tensor_rank(input) != 3:
        return translate(input)
    out = translate(symbolic_helper._unsqueeze_helper(g, input, [0]))
    if isinstance(out, tuple):
        return tuple(None if o is None else symbolic_helper._squeeze_helper(g, o, [0]) for o in out)
    return symbolic_helper._squeeze_helper(g, out, [0])


def _functional_conv2d_symbolic(g, input, weight, bias, stride, padding, dilation, groups):
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    stride, dilation = _pair(stride), _pair(dilation)
    node = padding.node()
    mode = symbolic_helper._node_get(node, "value") if node.kind() == "onnx::Constant" else None
    if isinstance(mode, str):  # the conv2d.padding overload
        if mode == "same":
            # ONNX's (top, left, bottom, right): an even effective kernel's odd
            # row or column goes last, as torch's.
            both, extra = same_padding(symbolic_helper._get_tensor_sizes(weight)[2:], dilation)
            padding = [*both, *(p + e for p, e in zip(both, extra))]
        else:
            padding = [0, 0]
    else:
        padding = _pair(symbolic_helper._parse_arg(padding, "is"))
    return _as_batched(
        g, input, lambda x: _conv2d(_ScriptGraph(g), x, weight, _optional(bias), stride, padding, dilation, groups)
    )


def _functional_conv_transpose2d_symbolic(g, input, weight, bias, stride, padding, output_padding, groups, dilation):
    args = [_pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation)]
    return _as_batched(g, input, lambda x: _conv_transpose2d(_ScriptGraph(g), x, weight, _optional(bias), *args))


def _pool_args(kernel_size, stride, padding):
    kernel_size = _pair(kernel_size)
    return kernel_size, _pair(stride) if stride else kernel_size, _pair(padding)


def _functional_max_pool2d_symbolic(g, input, kernel_size, stride, padding, dilation, ceil_mode):
    kernel_size, stride, padding = _pool_args(kernel_size, stride, padding)
    args = [kernel_size, stride, padding, _pair(dilation), ceil_mode, False]
    return _as_batched(g, input, lambda x: _max_pool2d(_ScriptGraph(g), x, *args)[0])


def _functional_max_pool2d_with_indices_symbolic(g, input, kernel_size, stride, padding, dilation, ceil_mode):
    kernel_size, stride, padding = _pool_args(kernel_size, stride, padding)
    with_indices = bool(g.original_node.outputsAt(1).uses())
    args = [kernel_size, stride, padding, _pair(dilation), ceil_mode, with_indices]
    return _as_batched(g, input, lambda x: _max_pool2d(_ScriptGraph(g), x, *args))


def _functional_avg_pool2d_symbolic(g, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    kernel_size, stride, padding = _pool_args(kernel_size, stride, padding)
    args = [kernel_size, stride, padding, ceil_mode, count_include_pad, divisor]
    return _as_batched(g, input, lambda x: _avg_pool2d(_ScriptGraph(g), x, *args))


def _register_torchscript() -> None:
    """Registers the symbolics with ``torch.onnx.register_custom_op_symbolic``;
    ``parse_args`` turns the constant list arguments into Python values."""
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx._internal.torchscript_exporter.symbolic_helper import parse_args

    pool = ("v", "is", "is", "is", "is", "b")  # max_pool2d's arguments
    avg_pool = ("v", "is", "is", "is", "b", "b", "i")
    symbolics = {
        "torchconv::conv2d": parse_args("v", "v", "v", "is", "is", "is", "i")(_conv2d_symbolic),
        "torchconv::conv_transpose2d": parse_args("v", "v", "v", "is", "is", "is", "i", "is")(
            _conv_transpose2d_symbolic
        ),
        "torchconv::max_pool2d": parse_args(*pool)(_max_pool2d_symbolic),
        "torchconv::avg_pool2d": parse_args(*avg_pool)(_avg_pool2d_symbolic),
        # One symbolic serves both conv2d overloads: padding is a list or a string.
        "torchconv_functional::conv2d": parse_args("v", "v", "v", "is", "v", "is", "i")(_functional_conv2d_symbolic),
        "torchconv_functional::conv_transpose2d": parse_args("v", "v", "v", "is", "is", "is", "i", "is")(
            _functional_conv_transpose2d_symbolic
        ),
        "torchconv_functional::max_pool2d": parse_args(*pool)(_functional_max_pool2d_symbolic),
        "torchconv_functional::max_pool2d_with_indices": parse_args(*pool)(
            _functional_max_pool2d_with_indices_symbolic
        ),
        "torchconv_functional::avg_pool2d": parse_args(*avg_pool)(_functional_avg_pool2d_symbolic),
    }
    for name, symbolic in symbolics.items():
        register_custom_op_symbolic(name, symbolic, SCRIPT_OPSET)


# ------------------------------------------------------------ registration

_registrations = {_SCRIPT_MODULE: _register_torchscript, _DYNAMO_MODULE: _register_dynamo}
_done: set[str] = set()


def _run(module_name: str) -> None:
    if module_name in _done:
        return
    _done.add(module_name)
    try:
        _registrations[module_name]()
    except Exception as error:  # an exporter that changed must not break `import torch.onnx`
        warnings.warn(f"torchconv: ONNX translations not registered with {module_name}: {error!r}", stacklevel=2)


class _AfterImport:
    """A ``sys.meta_path`` finder that runs the pending registrations right
    after their modules finish loading (a post-import hook).

    It finds nothing itself: for a watched name it asks the other finders
    and wraps the found loader's ``exec_module``, so the module loads as it
    would and the registration follows. It leaves ``sys.meta_path`` once
    nothing is pending.
    """

    def __init__(self):
        self._searching: set[str] = set()

    def find_spec(self, name, path, target=None):
        # _searching: another finder of this kind (a reloaded module's) that
        # asks the others in turn must not bring the question back here.
        if name not in _registrations or name in _done or name in self._searching:
            return None
        self._searching.add(name)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        break
        finally:
            self._searching.discard(name)
        loader = getattr(spec, "loader", None)
        # A source file's loader is an object of its own (a class, as for
        # frozen modules, would be shared: leave those alone).
        if loader is not None and not isinstance(loader, type) and hasattr(loader, "exec_module"):
            exec_module = loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _run(name)
                self._retire_if_idle()

            loader.exec_module = exec_then_register
        return spec

    def _retire_if_idle(self):
        if _done >= _registrations.keys() and self in sys.meta_path:
            sys.meta_path.remove(self)


_hook: Optional[_AfterImport] = None


def register() -> None:
    """Registers the ONNX translations with torch's exporters (idempotent).

    An exporter already imported gets them now; one imported later gets them
    as soon as its module has loaded, so ``import torchconv`` imports neither
    ``torch.onnx`` nor ``onnxscript``. Called by ``import torchconv``.
    """
    global _hook
    for name in _registrations:
        if name in sys.modules:
            _run(name)
    if _hook is not None:
        _hook._retire_if_idle()
    if _done >= _registrations.keys() or _hook is not None:
        return
    _hook = _AfterImport()
    sys.meta_path.insert(0, _hook)


register()
