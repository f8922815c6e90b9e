"""ONNX export (torchconv/_onnx.py): both of torch's exporters write the
standard ONNX operators, and onnxruntime's answers equal the eager model's.

Every case below is exported with the TorchScript exporter
(``dynamo=False``, one small export each, per CPU backend: the tracing runs
the kernels) and, all cases in one model, once with the dynamo exporter
(which traces with fake tensors; its export is slow, a few seconds each).
Then: a ``torch.jit.script`` model, an export with dynamic spatial sizes,
the MNIST CNN of examples/ and torchvision's resnet18 converted with
``torchconv.convert``, and the lazy registration in a fresh interpreter.

Skipped without onnx, onnxscript and onnxruntime (``pip install torchconv[onnx]``).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
STANDARD_DOMAINS = ("", "ai.onnx")


class Fn(nn.Module):
    """A functional call as a module: ``fn(x, *tensors)``, the tensors kept as parameters."""

    def __init__(self, fn: Callable, *tensors):
        super().__init__()
        self.fn = fn
        self.tensors = nn.ParameterList(tensors)

    def forward(self, x):
        return self.fn(x, *self.tensors)


class WithOutputSize(nn.Module):
    """``ConvTranspose2d.forward(x, output_size)``: the size picks the output_padding."""

    def __init__(self, layer, output_size):
        super().__init__()
        self.layer, self.output_size = layer, output_size

    def forward(self, x):
        return self.layer(x, output_size=self.output_size)


@dataclass
class Case:
    id: str
    build: Callable[[], nn.Module]
    shape: tuple
    ops: tuple  # ONNX op types the graph must have
    integer_input: bool = False  # small integers: ties in max pooling
    torch_indices: Callable | None = None  # x -> torch's own max_pool2d indices (the reference)


def _r(*shape):
    return torch.randn(*shape)


CASES = [
    # conv2d
    Case("conv-stride-pad", lambda: torchconv.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 9, 10), ("Conv",)),
    Case(
        "conv-dilation-groups-nobias",
        lambda: torchconv.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=False),
        (2, 4, 9, 10), ("Conv",),
    ),
    Case("conv-depthwise", lambda: torchconv.Conv2d(4, 8, 3, groups=4, padding=1), (1, 4, 7, 7), ("Conv",)),
    Case("conv-same-even-kernel", lambda: torchconv.Conv2d(3, 5, 4, padding="same"), (2, 3, 8, 9), ("Pad", "Conv")),
    Case("conv-same-dilated", lambda: torchconv.Conv2d(3, 5, 3, padding="same", dilation=2), (2, 3, 8, 9), ("Conv",)),
    Case(
        "conv-reflect", lambda: torchconv.Conv2d(3, 4, 3, padding=2, padding_mode="reflect"), (2, 3, 8, 9), ("Pad", "Conv")
    ),
    Case("conv-unbatched", lambda: torchconv.Conv2d(3, 4, 3), (3, 8, 9), ("Conv",)),
    Case(
        "conv-functional",
        lambda: Fn(
            lambda x, w, b: torchconv.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)), _r(5, 3, 3, 3), _r(5)
        ),
        (2, 3, 9, 10), ("Conv",),
    ),
    # conv_transpose2d
    Case(
        "convT-output-padding",
        lambda: torchconv.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
        (2, 4, 5, 6), ("ConvTranspose",),
    ),
    Case(
        "convT-groups-dilation-nobias",
        lambda: torchconv.ConvTranspose2d(
            4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(0, 2), groups=2, dilation=(1, 2), bias=False
        ),
        (2, 4, 5, 6), ("ConvTranspose",),
    ),
    Case(
        "convT-output-size",
        lambda: WithOutputSize(torchconv.ConvTranspose2d(4, 3, 3, stride=3, padding=1), [14, 17]),
        (2, 4, 5, 6), ("ConvTranspose",),
    ),
    Case(
        "convT-functional-unbatched",
        lambda: Fn(lambda x, w: torchconv.conv_transpose2d(x, w, stride=2, groups=2), _r(4, 2, 2, 3)),
        (4, 5, 6), ("ConvTranspose",),
    ),
    # max_pool2d
    Case("maxpool-ceil-pad", lambda: torchconv.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 8, 9), ("MaxPool",)),
    Case(
        "maxpool-dilation", lambda: torchconv.MaxPool2d((3, 2), (2, 1), (1, 0), dilation=(2, 1)), (2, 3, 9, 7), ("MaxPool",)
    ),
    # ceil_mode where torch drops a last window that would start in the padding
    Case("maxpool-ceil-drop", lambda: torchconv.MaxPool2d(2, 2, 1, ceil_mode=True), (2, 3, 5, 7), ("MaxPool", "Slice")),
    Case(
        "maxpool-indices",
        lambda: torchconv.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True, return_indices=True),
        (2, 3, 9, 10), ("MaxPool", "Mod"),
        torch_indices=lambda x: F.max_pool2d(x, 3, 2, 1, (1, 2), ceil_mode=True, return_indices=True)[1],
    ),
    Case(
        "maxpool-indices-drop",
        lambda: torchconv.MaxPool2d(2, 2, 1, ceil_mode=True, return_indices=True),
        (2, 3, 5, 7), ("MaxPool", "Mod", "Slice"),
        torch_indices=lambda x: F.max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True)[1],
    ),
    Case(
        "maxpool-indices-ties",
        lambda: torchconv.MaxPool2d(3, 2, 1, return_indices=True),
        (2, 3, 8, 8), ("MaxPool", "Mod"), integer_input=True,
        torch_indices=lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
    ),
    Case(
        "maxpool-functional-unbatched",
        lambda: Fn(lambda x: torchconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)),
        (3, 8, 9), ("MaxPool", "Mod"),
        torch_indices=lambda x: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)[1],
    ),
    # avg_pool2d
    Case("avgpool-include-pad", lambda: torchconv.AvgPool2d(3, 2, 1), (2, 3, 8, 9), ("AveragePool",)),
    Case(
        "avgpool-exclude-pad", lambda: torchconv.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 8, 9), ("AveragePool",)
    ),
    Case("avgpool-ceil-include", lambda: torchconv.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 3, 8, 9), ("AveragePool",)),
    Case(
        "avgpool-ceil-exclude-drop",
        lambda: torchconv.AvgPool2d(2, 2, 1, ceil_mode=True, count_include_pad=False),
        (2, 3, 5, 7), ("AveragePool", "Slice"),
    ),
    Case(
        "avgpool-divisor", lambda: torchconv.AvgPool2d((3, 2), 2, divisor_override=5), (2, 3, 8, 9), ("AveragePool", "Mul")
    ),
    Case(
        "avgpool-divisor-ceil-pad",
        lambda: torchconv.AvgPool2d(2, 2, 1, ceil_mode=True, divisor_override=3),
        (2, 3, 5, 8), ("Pad", "AveragePool", "Mul", "Slice"),
    ),
    Case(
        "avgpool-functional-unbatched",
        lambda: Fn(lambda x: torchconv.avg_pool2d(x, 3, stride=(1, 2), padding=(1, 0), count_include_pad=False)),
        (3, 8, 9), ("AveragePool",),
    ),
]


def _input(case: Case) -> torch.Tensor:
    x = torch.randn(case.shape)
    return x.round() if case.integer_input else x


def export(model, args, path: Path, dynamo: bool, **kwargs):
    """``torch.onnx.export`` of ``model`` to ``path``; the loaded ModelProto."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, torch.export's notes
        torch.onnx.export(model, args, str(path), dynamo=dynamo, verbose=False, **kwargs)
    return onnx.load(str(path))


def run(path: Path, *inputs) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(y) for y in session.run(None, feeds)]


def outputs_of(y) -> list[torch.Tensor]:
    return [t.detach() for t in (y if isinstance(y, (tuple, list)) else (y,))]


def assert_standard(model, ops=()):
    """Standard ONNX operators only, ``ops`` among them; the declared shapes
    agree with ONNX's own shape inference (strict: a mismatch raises)."""
    nodes = list(model.graph.node)
    assert [n.op_type for n in nodes if n.domain not in STANDARD_DOMAINS] == []
    assert len(model.functions) == 0
    types = {n.op_type for n in nodes}
    assert set(ops) <= types, f"{sorted(set(ops) - types)} missing from {sorted(types)}"
    assert not types & {"ATen", "PythonOp"}
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)


def assert_same(actual: list, expected: list, label=""):
    assert len(actual) == len(expected), label
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{label}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        if e.dtype == torch.int64:  # max_pool2d's indices: exactly torch's
            assert torch.equal(a, e), label
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=lambda m: f"{label}: {m}")


def maxpool_outputs(model) -> list[int]:
    """Number of (named) outputs of each MaxPool node."""
    return [sum(1 for o in n.output if o) for n in model.graph.node if n.op_type == "MaxPool"]


# ----------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_torchscript_export(case, cpu_backend, tmp_path):
    model, x = case.build().eval(), _input(case)
    model_proto = export(model, (x,), tmp_path / "m.onnx", dynamo=False)
    assert_standard(model_proto, case.ops)
    actual = run(tmp_path / "m.onnx", x)
    assert_same(actual, outputs_of(model(x)), case.id)
    if case.torch_indices is not None:
        assert torch.equal(actual[1], case.torch_indices(x))
    elif "MaxPool" in case.ops:  # indices unused: a MaxPool without them
        assert maxpool_outputs(model_proto) == [1]


# --------------------------------------------------------------------- dynamo


class AllCases(nn.Module):
    """Every case in one model, one input each: one dynamo export for all."""

    def __init__(self):
        super().__init__()
        self.cases = nn.ModuleList(case.build() for case in CASES)

    def forward(self, *inputs):
        outs = []
        for module, x in zip(self.cases, inputs):
            y = module(x)
            outs.extend(y if isinstance(y, tuple) else (y,))
        return tuple(outs)


@pytest.fixture(scope="module")
def dynamo_all_cases(tmp_path_factory):
    """(model, inputs, exported ModelProto, onnxruntime's outputs)."""
    model = AllCases().eval()
    inputs = tuple(_input(case) for case in CASES)
    path = tmp_path_factory.mktemp("onnx") / "all.onnx"
    model_proto = export(model, inputs, path, dynamo=True)
    return model, inputs, model_proto, run(path, *inputs)


def test_dynamo_export_standard_ops(dynamo_all_cases):
    _, _, model_proto, _ = dynamo_all_cases
    assert_standard(model_proto, {op for case in CASES for op in case.ops})
    # Unused indices leave MaxPool with its values only (the exporter's
    # optimizer drops the output); used ones keep both.
    expected = [2 if "Mod" in case.ops else 1 for case in CASES if "MaxPool" in case.ops]
    assert sorted(maxpool_outputs(model_proto)) == sorted(expected)


def test_dynamo_export_matches_eager(dynamo_all_cases, cpu_backend):
    model, inputs, _, outputs = dynamo_all_cases
    outputs = iter(outputs)
    for case, module, x in zip(CASES, model.cases, inputs):
        expected = outputs_of(module(x))
        actual = [next(outputs) for _ in expected]
        assert_same(actual, expected, case.id)
        if case.torch_indices is not None:
            assert torch.equal(actual[1], case.torch_indices(x)), case.id
    assert next(outputs, None) is None


def test_custom_translation_table(tmp_path):
    """The documented route, an explicit table, works as well (the same translations)."""
    model, x = torchconv.MaxPool2d(2, return_indices=True), torch.randn(1, 2, 6, 6)
    path = tmp_path / "m.onnx"
    assert_standard(
        export(model, (x,), path, dynamo=True, custom_translation_table=torchconv.onnx_translation_table),
        ("MaxPool", "Mod"),
    )
    assert_same(run(path, x), outputs_of(model(x)))


class Scripted(nn.Module):
    """For torch.jit.script: layers and functional calls, arguments as users
    write them (one int for both sides, 'same' and 'valid', unbatched inputs,
    a pool's default stride)."""

    def __init__(self):
        super().__init__()
        self.same = torchconv.Conv2d(3, 4, 4, padding="same")
        self.conv = torchconv.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False)
        self.up = torchconv.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1)
        self.pool = torchconv.MaxPool2d(2, 2, 1, ceil_mode=True, return_indices=True)
        self.avg = torchconv.AvgPool2d(3, 1, 1, divisor_override=2)
        self.weight = nn.Parameter(torch.randn(5, 3, 3, 3))

    def forward(self, x):
        values, indices = self.pool(self.same(x))
        return (
            self.avg(values),
            indices,
            self.up(self.conv(values)),
            torchconv.max_pool2d(x, 2),
            torchconv.conv2d(x[0], self.weight, None, 1, "valid"),
            torchconv.avg_pool2d(x[0], 3, padding=1, count_include_pad=False),
        )


def test_scripted_model(tmp_path):
    """A torch.jit.script model holds torchconv_functional:: ops (F's
    schemas) rather than torchconv:: ones: the TorchScript exporter takes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own
        model = torch.jit.script(Scripted().eval())
    x, path = torch.randn(2, 3, 9, 11), tmp_path / "m.onnx"
    model_proto = export(model, (x,), path, dynamo=False)
    assert_standard(model_proto, ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Mod", "Slice"))
    assert sorted(maxpool_outputs(model_proto)) == [1, 2]
    assert_same(run(path, x), outputs_of(model(x)))


# ------------------------------------------------------------- dynamic sizes


class Pyramid(nn.Module):
    """Ops whose translations compute from the input's size: the indices'
    plane size and the ceil_mode window that torch drops at some sizes."""

    def __init__(self):
        super().__init__()
        self.conv = torchconv.Conv2d(2, 3, 3, padding=1)
        self.pool = torchconv.MaxPool2d(2, 2, 1, ceil_mode=True, return_indices=True)
        self.avg = torchconv.AvgPool2d(2, 2, 1, ceil_mode=True, divisor_override=3)
        self.avg_exclude = torchconv.AvgPool2d(2, 2, 1, ceil_mode=True, count_include_pad=False)

    def forward(self, x):
        y = self.conv(x)
        values, indices = self.pool(y)
        return values, indices, self.avg(y), self.avg_exclude(y)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_dynamic_spatial_sizes(dynamo, tmp_path):
    model, path = Pyramid().eval(), tmp_path / "m.onnx"
    x = torch.randn(2, 2, 8, 6)
    if dynamo:
        dim = torch.export.Dim.DYNAMIC
        kwargs = dict(dynamic_shapes=({0: dim, 2: dim, 3: dim},))
    else:
        kwargs = dict(input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    model_proto = export(model, (x,), path, dynamo=dynamo, **kwargs)
    assert_standard(model_proto, ("Conv", "MaxPool", "AveragePool", "Mod", "Slice"))
    # At 5 and 7 rows or columns torch drops the last ceil_mode window (it
    # would start in the right padding), at 8, 6, 11 and 4 it does not.
    for shape in [(2, 2, 8, 6), (1, 2, 5, 7), (3, 2, 11, 4)]:
        x = torch.randn(shape)
        assert_same(run(path, x), outputs_of(model(x)), str(shape))


# ---------------------------------------------------------------- real models


def test_mnist_cnn(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from mnist_train import build_model
    finally:
        sys.path.remove(str(ROOT / "examples"))
    model, x = build_model("cnn").eval(), torch.randn(4, 1, 28, 28)
    expected = outputs_of(model(x))
    for dynamo in (False, True):
        path = tmp_path / f"cnn-{dynamo}.onnx"
        assert_standard(export(model, (x,), path, dynamo=dynamo), ("Conv", "MaxPool"))
        assert_same(run(path, x), expected, f"dynamo={dynamo}")


def test_resnet18_converted(tmp_path):
    """torchvision's resnet18, converted; with the dynamo exporter (the
    default), the TorchScript one being covered by the cases and the CNN."""
    from zoo_models import torchvision_models

    model = torchconv.convert(torchvision_models().resnet18(weights=None)).eval()
    x, path = torch.randn(1, 3, 64, 64), tmp_path / "resnet18.onnx"
    model_proto = export(model, (x,), path, dynamo=True)
    assert_standard(model_proto, ("Conv", "MaxPool"))
    assert maxpool_outputs(model_proto) == [1]
    (actual,) = run(path, x)
    # 20 layers deep: onnxruntime sums in another order
    torch.testing.assert_close(actual, model(x).detach(), rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------- registration


REGISTRATION_CHECK = """
import sys
import torch
import torchconv
assert "torch.onnx" not in sys.modules and "onnxscript" not in sys.modules, "import torchconv imported an exporter"
import torch.onnx
from torch.onnx._internal.torchscript_exporter import registration
for name in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"):
    assert registration.registry.is_registered_op(f"torchconv::{name}", 20), name
    assert registration.registry.is_registered_op(f"torchconv_functional::{name}", 20), name
# What ONNXRegistry.from_torchlib() imports and reads (without loading all of onnxscript's torch_lib)
from torch.onnx._internal.exporter._torchlib import ops
from torch.onnx._internal.exporter._torchlib._torchlib_registry import _registry
assert {m.fx_target for m in _registry} >= set(torchconv.onnx_translation_table)
assert torchconv._onnx._hook not in sys.meta_path, "the import hook stays after registering"
torchconv._onnx.register()  # idempotent
assert sum(m.fx_target is torch.ops.torchconv.conv2d.default for m in _registry) == 1
print("ok")
"""


def test_registration_is_lazy_and_global():
    """``import torchconv`` loads no exporter; importing one registers the
    translations with it (the in-process exports above use the same route:
    conftest imports torchconv before any exporter)."""
    process = subprocess.run([sys.executable, "-c", REGISTRATION_CHECK], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0 and process.stdout.strip() == "ok", process.stderr[-3000:]


def test_registration_hook(monkeypatch):
    """The post-import hook: an already loaded module's registration runs at
    once, a later one's right after that module loads; then the hook leaves."""
    calls = []
    fresh = "colorsys"  # a small pure-Python module, imported anew below
    monkeypatch.delitem(sys.modules, fresh, raising=False)
    registrations = {"json": lambda: calls.append("json"), fresh: lambda: calls.append(fresh)}
    monkeypatch.setattr(torchconv._onnx, "_registrations", registrations)
    monkeypatch.setattr(torchconv._onnx, "_done", set())
    monkeypatch.setattr(torchconv._onnx, "_hook", None)
    import json  # noqa: F401  (loaded: registered at once)

    torchconv._onnx.register()
    hook = torchconv._onnx._hook
    assert calls == ["json"] and hook in sys.meta_path
    try:
        __import__(fresh)
        assert calls == ["json", fresh]
        assert hook not in sys.meta_path
        torchconv._onnx.register()
        assert calls == ["json", fresh]
    finally:
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
