"""torch.compile through torchconv's ops: no graph breaks, same results as eager.

The ops are ``torch.library`` custom ops with fake kernels and registered
autograd, so dynamo should put a whole model built from them in one graph
(``fullgraph=True`` raises on any graph break), AOTAutograd should trace
their backward, and dynamic shapes should not recompile for a new batch size.
Most tests use the ``aot_eager`` backend (it runs dynamo, fake tensors and
AOTAutograd, everything but code generation); one runs inductor end to end.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch import nn

import torchconv


# Emitted by torch's own compile stack, not by torchconv.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Net(nn.Module):
    """Every torchconv op, with padding='same' (even kernel), return_indices and unbatched inputs."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 3, 2, 2) * 0.3)  # even kernel: 'same' pads unevenly
        self.b1 = nn.Parameter(torch.randn(4) * 0.1)
        self.w2 = nn.Parameter(torch.randn(4, 2, 3, 3) * 0.3)  # grouped, dilated
        self.wt = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)  # transposed: 4 -> 3 channels
        self.bt = nn.Parameter(torch.randn(3) * 0.1)

    def forward(self, x):
        y = torchconv.conv2d(x, self.w1, self.b1, padding="same")
        y = torch.relu(y)
        y = torchconv.conv2d(y, self.w2, None, stride=1, padding=2, dilation=2, groups=2)
        y, indices = torchconv.max_pool2d(y, 2, stride=2, return_indices=True)
        y = y + torchconv.max_pool2d(y, 3, stride=1, padding=1)
        y = torchconv.conv_transpose2d(y, self.wt, self.bt, stride=2, padding=1, output_padding=1)
        y = torchconv.avg_pool2d(y, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        z = torchconv.avg_pool2d(y, 2, stride=1, divisor_override=3)
        return y.sum() + z.square().mean(), indices


def _run(model, x):
    """Output, indices and gradients of params and input."""
    x = x.detach().clone().requires_grad_()
    loss, indices = model(x)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return loss.detach(), indices, grads


def _assert_same(eager, compiled):
    (l1, i1, g1), (l2, i2, g2) = eager, compiled
    torch.testing.assert_close(l2, l1, rtol=1e-4, atol=1e-4)
    assert torch.equal(i1, i2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def _counting():
    return torch._dynamo.testing.CompileCounterWithBackend("aot_eager")


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 8, 8)], ids=["batched", "unbatched"])
def test_fullgraph_aot_eager_matches_eager(backend, shape):
    model = Net()
    x = torch.randn(shape)
    counter = _counting()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    _assert_same(_run(model, x), _run(compiled, x))
    assert counter.frame_count == 1  # one graph for the whole forward
    assert counter.op_count > 0


def test_fullgraph_inductor_matches_eager(backend):
    model = Net()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)  # inductor
    _assert_same(_run(model, x), _run(compiled, x))


def test_explain_reports_no_graph_break(backend):
    model = Net()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 8, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # The graph calls torchconv's ops, not torch's.
    names = {
        str(node.target)
        for graph in explanation.graphs
        for node in graph.graph.nodes
        if node.op == "call_function"
    }
    assert any("torchconv" in n for n in names), names


def test_graph_contains_torchconv_ops(backend):
    """AOTAutograd's forward and backward graphs hold the torchconv:: ops."""
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    backend_fn = aot_autograd(fw_compiler=record, bw_compiler=record)
    model = Net()
    compiled = torch.compile(model, backend=backend_fn, fullgraph=True)
    _run(compiled, torch.randn(2, 3, 8, 8))
    ops = {s for s in seen if s.startswith("torchconv.")}
    for op in ("conv2d", "conv_transpose2d", "conv2d_weight", "max_pool2d", "max_pool2d_backward",
               "avg_pool2d", "avg_pool2d_backward"):
        assert f"torchconv.{op}.default" in ops, ops
    assert not any(("conv" in s or "pool" in s) and not s.startswith("torchconv.") for s in seen), seen


def test_dynamic_batch_sizes_one_graph(backend):
    model = Net()
    counter = _counting()
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for batch in (2, 5):
        x = torch.randn(batch, 3, 8, 8)
        _assert_same(_run(model, x), _run(compiled, x))
    assert counter.frame_count == 1, "a new batch size recompiled"


def test_dynamic_after_automatic_recompile(backend):
    """Without dynamic=True, the second batch size recompiles once, dynamically; no graph breaks either way."""
    model = Net()
    counter = _counting()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for batch in (2, 3, 4):
        x = torch.randn(batch, 3, 8, 8)
        _assert_same(_run(model, x), _run(compiled, x))
    assert counter.frame_count <= 2


def test_functional_ops_compile_individually(backend):
    """Each public function, traced on its own with fullgraph=True, including argument checks and unbatched inputs."""

    def fn(x, w, wt):
        a = torchconv.conv2d(x, w, padding="same", dilation=(1, 2))
        b = torchconv.conv_transpose2d(a, wt, stride=(2, 1), output_padding=(1, 0), dilation=(1, 2))
        c, idx = torchconv.max_pool2d(b, (2, 3), stride=1, padding=1, dilation=(2, 1), ceil_mode=True,
                                     return_indices=True)
        d = torchconv.avg_pool2d(c, 2, ceil_mode=True)
        return d, idx

    x, w, wt = torch.randn(3, 7, 6), torch.randn(4, 3, 4, 2), torch.randn(4, 2, 3, 3)
    counter = _counting()
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    (d1, i1), (d2, i2) = fn(x, w, wt), compiled(x, w, wt)
    torch.testing.assert_close(d2, d1)
    assert torch.equal(i1, i2)
    assert d2.dim() == 3  # unbatched in, unbatched out
    assert counter.frame_count == 1


def test_bad_arguments_raise_under_compile(backend):
    """The argument checks run at trace time and raise torch's errors."""

    def fn(x, w):
        return torchconv.conv2d(x, w, stride=0)

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="non-positive stride is not supported"):
        compiled(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3))
