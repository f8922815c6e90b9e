"""torchconv.convert: swapping torch.nn conv/pool layers of a model for torchconv's."""

import copy

import pytest
import torch
from torch import nn

import torchconv
from conftest import device_of_test

TOL = dict(rtol=1e-4, atol=1e-5)
TWINS = {
    nn.Conv2d: torchconv.Conv2d,
    nn.ConvTranspose2d: torchconv.ConvTranspose2d,
    nn.MaxPool2d: torchconv.MaxPool2d,
    nn.AvgPool2d: torchconv.AvgPool2d,
}


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", groups=2),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU())
        self.branches = nn.ModuleList(
            [nn.Conv2d(6, 6, 1), nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular"))]
        )
        self.pools = nn.ModuleDict({"max": nn.MaxPool2d(3, 2, 1), "avg": nn.AvgPool2d(3, 2, 1, count_include_pad=False)})
        self.up = nn.ConvTranspose2d(12, 4, 2, stride=2, bias=False)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        x = self.branches[0](x) + self.branches[1](x)
        x = torch.cat([self.pools["max"](x), self.pools["avg"](x)], dim=1)
        return self.head(self.up(x, output_size=[x.shape[-2] * 2, x.shape[-1] * 2]))


def layer_types(model):
    return [type(m) for m in model.modules()]


def assert_converted(original, converted):
    """Same module tree; exactly the torch conv/pool layers swapped for their twins."""
    names_before = [n for n, _ in original.named_modules()]
    assert [n for n, _ in converted.named_modules()] == names_before
    for (name, before), after in zip(original.named_modules(), converted.modules()):
        assert type(after) is TWINS.get(type(before), type(before)), name


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_convert_small_cnn(backend):
    torch.manual_seed(0)
    model = small_cnn()
    before = layer_types(model)
    fast = torchconv.convert(model)
    assert fast is not model
    assert layer_types(model) == before  # the original is untouched
    assert_converted(model, fast)
    assert repr(fast) == repr(model)
    assert_same_state(fast, model)
    assert sum(type(m) in TWINS.values() for m in fast.modules()) == 5
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fast(x), model(x), **TOL)


def test_convert_small_cnn_gradients(backend):
    torch.manual_seed(0)
    model = small_cnn()
    fast = torchconv.convert(model)
    x = torch.randn(2, 3, 16, 16)
    model(x).square().sum().backward()
    fast(x).square().sum().backward()
    grads = dict(model.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, **TOL, msg=lambda m: f"{name}: {m}")


def test_convert_copies_parameters_by_default():
    model = small_cnn()
    fast = torchconv.convert(model)
    for (name, p), q in zip(model.named_parameters(), fast.parameters()):
        assert p is not q, name
        assert torch.equal(p, q)
        assert p.data_ptr() != q.data_ptr()
    with torch.no_grad():
        fast[0].weight.zero_()
    assert model[0].weight.abs().sum() > 0


def test_convert_inplace_keeps_modules_and_parameters(backend):
    model = small_cnn()
    modules = list(model.modules())
    params = list(model.parameters())
    x = torch.randn(2, 3, 16, 16)
    expected = model(x).detach()
    out = torchconv.convert(model, inplace=True)
    assert out is model
    assert list(model.modules()) == modules  # the very same module objects
    assert all(p is q for p, q in zip(model.parameters(), params))
    assert type(model[0]) is torchconv.Conv2d
    torch.testing.assert_close(model(x), expected, **TOL)


def test_convert_nested_modules(backend):
    torch.manual_seed(0)
    model = Nested().eval()
    fast = torchconv.convert(model)
    assert_converted(model, fast)
    assert type(fast.stem[0]) is torchconv.Conv2d
    assert type(fast.stem[1]) is nn.BatchNorm2d
    assert type(fast.branches[0]) is torchconv.Conv2d
    assert type(fast.branches[1][0]) is torchconv.Conv2d
    assert type(fast.pools["max"]) is torchconv.MaxPool2d
    assert type(fast.pools["avg"]) is torchconv.AvgPool2d
    assert type(fast.up) is torchconv.ConvTranspose2d
    assert type(fast.head) is torchconv.Conv2d
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(fast(x), model(x), **TOL)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(3, 3, 3, padding=2, padding_mode="replicate", groups=3),
        nn.ConvTranspose2d(3, 4, 3, stride=2, dilation=2),
        nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True),
        nn.AvgPool2d(3, 2, 1, divisor_override=4),
    ],
    ids=repr,
)
def test_convert_root_layer(backend, layer):
    for inplace in (False, True):
        original = copy.deepcopy(layer)
        converted = torchconv.convert(original, inplace=inplace)
        assert type(converted) is TWINS[type(layer)]
        assert (converted is original) == inplace
        assert repr(converted) == repr(layer)
        assert_same_state(converted, layer)
        x = torch.randn(3, 9, 9)  # unbatched, too
        for inp in (x, x.unsqueeze(0)):
            y_ref, y = layer(inp), converted(inp)
            if isinstance(y_ref, tuple):
                assert torch.equal(y[1], y_ref[1])
                y, y_ref = y[0], y_ref[0]
            torch.testing.assert_close(y, y_ref, **TOL)


def test_convert_keeps_training_mode_device_dtype(backend):
    model = Nested().double()
    model.train()
    model.stem.eval()  # mixed modes survive too
    fast = torchconv.convert(model)
    assert [m.training for m in fast.modules()] == [m.training for m in model.modules()]
    device = device_of_test()  # the model was built there
    assert all(p.dtype == torch.float64 and p.device == device for p in fast.parameters())
    assert all(b.dtype == q.dtype for b, q in zip(fast.buffers(), model.buffers()))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = fast(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, model(x))


def test_convert_keeps_requires_grad_memory_format_and_hooks(backend):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)).to(memory_format=torch.channels_last)
    model[0].bias.requires_grad_(False)
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(type(m)))
    fast = torchconv.convert(model)
    assert fast[0].bias.requires_grad is False and fast[0].weight.requires_grad is True
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 9, 9)
    y = fast(x)
    assert calls == [torchconv.Conv2d]
    assert y.is_contiguous(memory_format=torch.channels_last) == model(x).is_contiguous(
        memory_format=torch.channels_last
    )


def test_convert_leaves_other_modules_alone():
    class MyConv(nn.Conv2d):  # a user subclass: not an exact type match
        pass

    model = nn.Sequential(
        MyConv(3, 3, 1), nn.LazyConv2d(3, 1), torchconv.Conv2d(3, 3, 1), nn.Conv1d(3, 3, 1), nn.MaxPool1d(2),
        nn.AdaptiveAvgPool2d(1), nn.Linear(3, 3),
    )
    before = layer_types(model)
    fast = torchconv.convert(model)
    assert layer_types(fast) == before
    assert torchconv.convert(fast, inplace=True) is fast  # idempotent
    assert layer_types(fast) == before


def test_convert_is_idempotent(backend):
    model = torchconv.convert(small_cnn())
    again = torchconv.convert(model)
    assert layer_types(again) == layer_types(model)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(again(x), model(x))


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        torchconv.convert(torch.randn(3))


def test_training_step_after_convert(backend):
    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    fast = torchconv.convert(model)
    opt = torch.optim.SGD(fast.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x, target = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = [p.detach().clone() for p in fast.parameters()]
    for _ in range(3):
        for net, optimizer in ((fast, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x), target)
            loss.backward()
            optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, fast.parameters()))
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, **TOL, msg=lambda m: f"{name}: {m}")
    with torch.no_grad():
        final = nn.functional.cross_entropy(fast(x), target)
        first = nn.functional.cross_entropy(small_cnn_from(before)(x), target)
    assert final < first


def small_cnn_from(params):
    torch.manual_seed(0)
    model = small_cnn()
    with torch.no_grad():
        for p, value in zip(model.parameters(), params):
            p.copy_(value)
    return model


def test_training_step_inplace_with_existing_optimizer(backend):
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # built before the conversion
    torchconv.convert(model, inplace=True)
    x, target = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


class WithIndices(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.avg = nn.AvgPool2d(2)

    def forward(self, x):
        values, indices = self.pool(self.conv(x))
        return self.avg(self.up(values)), indices


def test_fx_symbolic_trace_after_convert(backend):
    # torch.nn's layers are fx leaves; converted layers are leaves too.
    model = torchconv.convert(WithIndices())
    traced = torch.fx.symbolic_trace(model)
    leaves = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert leaves == {"conv", "pool", "up", "avg"}
    x = torch.randn(2, 3, 8, 8)
    (y, i), (y_ref, i_ref) = traced(x), model(x)
    assert torch.equal(y, y_ref) and torch.equal(i, i_ref)


def test_export_and_compile_after_convert(backend):
    torch.manual_seed(0)
    model = small_cnn().eval()
    fast = torchconv.convert(model)
    x = torch.randn(2, 3, 16, 16)
    exported = torch.export.export(fast, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("torchconv.") for t in targets), targets
    assert not any("aten.convolution" in t or "aten.max_pool2d" in t or "aten.avg_pool2d" in t for t in targets)
    torch.testing.assert_close(exported.module()(x), model(x), **TOL)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), **TOL)


@pytest.mark.parametrize("module_name", ["torchconv.nn", "torchconv.convert"])
def test_docstring_examples(backend, module_name):
    import doctest
    import sys

    module = sys.modules[module_name]
    result = doctest.testmod(module, extraglobs={"torch": torch, "torchconv": torchconv, "nn": nn}, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_shared_layer_converted_once(backend):
    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    fast = torchconv.convert(model)
    assert fast[0] is fast[2] and type(fast[0]) is torchconv.Conv2d
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(fast(x), model(x), **TOL)


# ------------------------------------------------------------- weight normalisation


def _weight_normed(norm):
    torch.manual_seed(0)
    return nn.Sequential(
        norm(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.2, inplace=True), norm(nn.ConvTranspose2d(4, 2, 2, stride=2))
    )


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.parametrize(
    "norm",
    [
        torch.nn.utils.weight_norm,  # a hook recomputes a plain tensor attribute: deepcopy refuses it
        torch.nn.utils.parametrizations.weight_norm,
        torch.nn.utils.parametrizations.spectral_norm,
    ],
    ids=["weight_norm", "parametrizations.weight_norm", "parametrizations.spectral_norm"],
)
def test_weight_normalised_models_convert(backend, norm):
    model = _weight_normed(norm).to(device_of_test()).eval()
    x = torch.randn(2, 3, 8, 8)
    model(x)  # after a forward, weight_norm's weight is a non-leaf tensor
    fast = torchconv.convert(model)
    assert isinstance(fast[0], torchconv.Conv2d) and isinstance(fast[2], torchconv.ConvTranspose2d)
    torch.testing.assert_close(fast(x), model(x), **TOL)
    fast(x).square().sum().backward()
    model(x).square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), model.parameters()):
        assert p is not q, name
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=name)


def test_removing_a_parametrization_keeps_torchconvs_layer(backend):
    from torch.nn.utils import parametrize

    fast = torchconv.convert(_weight_normed(torch.nn.utils.parametrizations.weight_norm))
    parametrize.remove_parametrizations(fast[0], "weight")
    assert type(fast[0]) is torchconv.Conv2d


# ------------------------------------------------------------- in-place after a layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "layer",
    [
        lambda: nn.Conv2d(3, 8, 3, bias=False),
        lambda: nn.Conv2d(3, 8, 1, bias=False),
        lambda: nn.ConvTranspose2d(3, 8, 2, stride=2, bias=False),  # kernel == stride
        lambda: nn.ConvTranspose2d(3, 8, 3, stride=2, padding=1),
        lambda: nn.MaxPool2d(2),
        lambda: nn.AvgPool2d(3, stride=1, padding=1),
    ],
    ids=["conv", "conv1x1", "convT-k2s2", "convT", "maxpool", "avgpool"],
)
def test_inplace_op_after_a_layer(backend, layer, dtype):
    """Outputs never alias a kernel's internal buffer, so autograd lets an
    in-place activation modify them, as after torch's layers."""
    model = nn.Sequential(layer(), nn.ReLU(inplace=True)).to(device_of_test(), dtype)
    fast = torchconv.convert(model)
    x = torch.randn(2, 3, 8, 8, dtype=dtype, requires_grad=True)
    y = fast(x)
    assert y._base is None
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    (expected,) = torch.autograd.grad(torch.relu(fast[0](x)).float().sum(), x)  # out of place
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_dcgan_discriminator_with_gradient_penalty(backend):
    """A WGAN-GP critic step: LeakyReLU(inplace=True) after every layer and
    the gradient penalty's double backward."""
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(16, 1, 4, 1, 0, bias=False), nn.Flatten(),
    ).to(device_of_test()).double()
    fast = torchconv.convert(critic)
    real, fake = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.randn(4, 3, 16, 16, dtype=torch.float64)
    mix = (0.3 * real + 0.7 * fake).requires_grad_()
    losses = []
    for model in (critic, fast):
        (grad,) = torch.autograd.grad(model(mix).sum(), mix, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        loss = model(fake).mean() - model(real).mean() + 10 * penalty
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0])
    for p, q in zip(fast.parameters(), critic.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
