"""TorchScript: torch.jit.trace and torch.jit.script of torchconv layers and of
models holding them, saved, loaded and run as the eager model.

A traced graph records the ``torchconv::`` ops; a scripted one calls the
``torchconv_functional::`` ops (torchconv/_torchscript.py). Either file names
only dispatcher ops, so it saves and loads in any process that has imported
torchconv.
"""

import io
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import torchconv

# torch 2.13 marks TorchScript deprecated; these tests are about it.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

LAYERS = {
    "conv": lambda: torchconv.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1),
    "conv-dilated-groups-nobias": lambda: torchconv.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2, bias=False),
    "conv-same": lambda: torchconv.Conv2d(4, 6, 4, padding="same", dilation=(1, 2)),
    "conv-valid": lambda: torchconv.Conv2d(4, 6, 3, padding="valid"),
    "conv-reflect": lambda: torchconv.Conv2d(4, 6, 3, padding=(1, 2), padding_mode="reflect"),
    "conv-circular": lambda: torchconv.Conv2d(4, 6, 3, padding=1, padding_mode="circular"),
    "conv_transpose": lambda: torchconv.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
    "conv_transpose-groups-dilated": lambda: torchconv.ConvTranspose2d(4, 6, 3, stride=(2, 1), groups=2, dilation=(1, 2)),
    "max_pool": lambda: torchconv.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    "max_pool-dilated": lambda: torchconv.MaxPool2d((2, 3), dilation=(2, 1)),
    "max_pool-indices": lambda: torchconv.MaxPool2d(2, return_indices=True),
    "avg_pool": lambda: torchconv.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    "avg_pool-divisor": lambda: torchconv.AvgPool2d(2, divisor_override=3),
}


def _saved_and_loaded(module):
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _assert_same_run(eager, compiled, x):
    """Same outputs and same input and parameter gradients, to the bit (the same kernels run)."""
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs_eager, outs_compiled = _outputs(eager(x_eager)), _outputs(compiled(x_compiled))
    for a, b in zip(outs_eager, outs_compiled, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)
    outs_eager[0].pow(2).sum().backward()
    outs_compiled[0].pow(2).sum().backward()
    assert torch.equal(x_eager.grad, x_compiled.grad)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize("name", LAYERS)
def test_script_save_load(backend, name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(2, 4, 9, 10)
    loaded = _saved_and_loaded(torch.jit.script(layer))
    _assert_same_run(layer, loaded, x)
    _assert_same_run(layer, loaded, x[0])  # unbatched
    assert "torchconv_functional::" in str(loaded.inlined_graph)


@pytest.mark.parametrize("name", LAYERS)
def test_trace_save_load(backend, name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(2, 4, 9, 10)
    loaded = _saved_and_loaded(torch.jit.trace(layer, x))
    _assert_same_run(layer, loaded, x)
    graph = str(loaded.inlined_graph)
    assert "torchconv::" in graph and "PythonOp" not in graph


def test_script_conv_transpose_output_size(backend):
    layer = torchconv.ConvTranspose2d(3, 2, 3, stride=2)
    scripted = _saved_and_loaded(torch.jit.script(layer))
    x = torch.randn(2, 3, 5, 5)
    for size in ([11, 11], [12, 12], [2, 2, 12, 11]):
        assert torch.equal(scripted(x, size), layer(x, output_size=size))
    with pytest.raises(torch.jit.Error, match="requested an output size of"):  # torch's ValueError, as TorchScript raises it
        scripted(x, [14, 14])


def test_scripted_layer_raises_torchs_errors():
    scripted = torch.jit.script(torchconv.Conv2d(3, 4, 3))
    with pytest.raises(RuntimeError, match=r"expected input\[2, 5, 8, 8\] to have 3 channels, but got 5 channels"):
        scripted(torch.randn(2, 5, 8, 8))


def test_scripted_functional_ops():
    @torch.jit.script
    def f(x: torch.Tensor, w: torch.Tensor):
        y = torchconv.conv2d(x, w, None, 1, "same")
        y = torchconv.conv_transpose2d(y, w, stride=2)
        values, indices = torchconv.functional.max_pool2d_with_indices(y, 2)
        return torchconv.avg_pool2d(torchconv.max_pool2d(values, 2, 1), 2, ceil_mode=True), indices

    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    y = torchconv.conv_transpose2d(torchconv.conv2d(x, w, padding="same"), w, stride=2)
    values, indices = torchconv.max_pool2d(y, 2, return_indices=True)
    expected = torchconv.avg_pool2d(torchconv.max_pool2d(values, 2, 1), 2, ceil_mode=True)
    out, out_indices = f(x, w)
    assert torch.equal(out, expected) and torch.equal(out_indices, indices)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)
        self.head = nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        return self.head(self.up(self.features(x)).flatten(1))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_converted_model(backend, how):
    torch.manual_seed(0)
    model = torchconv.convert(SmallCNN()).eval()
    x = torch.randn(3, 1, 28, 28)
    compiled = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    loaded = _saved_and_loaded(compiled)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_converted_resnet18_scripts():
    from zoo_models import torchvision_models

    torch.manual_seed(0)
    model = torchconv.convert(torchvision_models().resnet18(num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    loaded = _saved_and_loaded(torch.jit.script(model))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = torchconv.convert(SmallCNN()).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "traced.pt")
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import torch, torchconv
        data = torch.load({str(tmp_path / "io.pt")!r})
        for name in ("scripted", "traced"):
            model = torch.jit.load({str(tmp_path)!r} + "/" + name + ".pt")
            assert torch.equal(model(data["x"]), data["y"]), name
        print("ok")
        """
    )
    env = dict(os.environ, TORCHCONV_BACKEND=torchconv.backends.current("cpu"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
