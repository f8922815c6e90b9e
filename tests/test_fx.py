"""torch.fx: torchconv's layers are leaves (``call_module``) as torch.nn's are,
the functional ops trace with Proxies (``call_function``), and FX passes and
quantization's fusion treat a converted model as docs/export.md says."""

import copy

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

import torchconv


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x):
        values, indices = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.avg(self.up(values)), indices


def _trained_net():
    torch.manual_seed(0)
    model = Net()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    return model.eval()


def test_layers_are_leaves(backend):
    model = torchconv.convert(_trained_net())
    traced = torch.fx.symbolic_trace(model)
    calls = [(n.op, n.target) for n in traced.graph.nodes if n.op in ("call_module", "call_function")]
    assert [target for op, target in calls if op == "call_module"] == ["conv", "bn", "pool", "up", "avg"]
    modules = dict(traced.named_modules())
    assert isinstance(modules["conv"], torchconv.Conv2d) and isinstance(modules["up"], torchconv.ConvTranspose2d)
    x = torch.randn(2, 3, 8, 8)
    (y, i), (y_ref, i_ref) = traced(x), model(x)
    assert torch.equal(y, y_ref) and torch.equal(i, i_ref)


def test_leaves_like_torch_nn():
    torch_graph = torch.fx.symbolic_trace(_trained_net()).graph
    ours_graph = torch.fx.symbolic_trace(torchconv.convert(_trained_net())).graph
    shape = [(n.op, str(n.target)) for n in torch_graph.nodes]
    assert [(n.op, str(n.target)) for n in ours_graph.nodes] == shape


def test_functional_ops_trace_with_proxies(backend):
    def f(x, w, b):
        y = torchconv.conv2d(x, w, b, padding="same")
        values, indices = torchconv.max_pool2d(y, 2, return_indices=True)
        y = torchconv.conv_transpose2d(values, w, stride=2, output_padding=1)
        return torchconv.avg_pool2d(torchconv.functional.max_pool2d_with_indices(y, 2, 1)[0], 2), indices

    traced = torch.fx.symbolic_trace(f)
    targets = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    functional = torchconv.functional
    for op in (functional.conv2d, functional.max_pool2d, functional.conv_transpose2d, functional.avg_pool2d):
        assert op in targets
    x, w, b = torch.randn(2, 3, 9, 9), torch.randn(5, 3, 3, 3), torch.randn(5)
    (y, i), (y_ref, i_ref) = traced(x, w, b), f(x, w, b)
    assert torch.equal(y, y_ref) and torch.equal(i, i_ref)
    assert "torchconv.functional" in traced.code or "torchconv_functional" in traced.code


def test_tracer_with_its_own_leaf_rule_traces_into_layers():
    class IntoTorchconv(torch.fx.Tracer):
        def is_leaf_module(self, module, qualified_name):
            return not type(module).__module__.startswith("torchconv") and super().is_leaf_module(module, qualified_name)

    model = torchconv.convert(_trained_net())
    graph = IntoTorchconv().trace(model)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["bn"]
    targets = {n.target for n in graph.nodes if n.op == "call_function"}
    assert {torchconv.functional.conv2d, torchconv.functional.max_pool2d} <= targets
    traced = torch.fx.GraphModule(model, graph)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(traced(x)[0], model(x)[0])


def test_shape_propagation():
    from torch.fx.passes.shape_prop import ShapeProp

    traced = torch.fx.symbolic_trace(torchconv.convert(_trained_net()))
    ShapeProp(traced).propagate(torch.randn(2, 3, 8, 8))
    shapes = {n.target: n.meta["tensor_meta"] for n in traced.graph.nodes if n.op == "call_module"}
    assert shapes["conv"].shape == (2, 8, 8, 8) and shapes["up"].shape == (2, 4, 8, 8)


def test_fx_fuse_leaves_torchconv_layers_unfused():
    # fx.experimental.optimization.fuse matches exact torch.nn types: it
    # fuses nothing here, and the model still computes the same.
    model = torchconv.convert(_trained_net())
    fused = fuse(model)
    assert isinstance(dict(fused.named_modules())["bn"], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fused(x)[0], model(x)[0])


def test_quantization_fuse_modules_with_torchconv_mapping():
    from torch.ao.quantization import fuse_modules
    from torch.ao.quantization.fuser_method_mappings import fuse_conv_bn

    model = torchconv.convert(_trained_net())
    with pytest.raises(AssertionError, match="did not find fuser method for"):
        fuse_modules(copy.deepcopy(model), [["conv", "bn"]])
    config = {"additional_fuser_method_mapping": {(torchconv.Conv2d, nn.BatchNorm2d): fuse_conv_bn}}
    fused = fuse_modules(model, [["conv", "bn"]], fuse_custom_config_dict=config)
    assert type(fused.conv) is torchconv.Conv2d and isinstance(fused.bn, nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fused(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)
