"""Real architectures converted with torchconv.convert give torch's answers.

Models (tests/zoo_models.py): torchvision 0.28.0's resnet18, mobilenet_v2,
googlenet, squeezenet1_1 and densenet121 (``weights=None``, 10 classes,
batch 2 at 64x64, squeezenet 32x32), and, written there, a DCGAN generator
(ConvTranspose2d/BatchNorm/ReLU/Tanh; also a variant that starts with a
Linear projection), a DCGAN discriminator (Conv2d without bias,
LeakyReLU(0.2, inplace=True)) and a small U-Net (Conv2d/ReLU(inplace=True)
blocks, MaxPool2d down, ConvTranspose2d up, concatenated skips), batch 2 at
32x32. Every check builds the model with torch.nn layers, converts a copy
(``torchconv.convert``: same weights, every conv/pool layer swapped) and runs
both on the same input with the same seed (dropout) and BatchNorm state, then
compares outputs, the input's gradient, every parameter's gradient and the
BatchNorm running statistics:

* ``test_float64``: eval and train mode, contiguous and channels_last: equal
  to ~1e-10 relative, and with torch's strides (outputs and gradients);
* ``test_float32``, ``test_bfloat16_model`` (``model.to(torch.bfloat16)``),
  ``test_autocast_bfloat16`` (float32 models under ``torch.autocast("cpu",
  dtype=torch.bfloat16)``): dtypes and strides are torch's; torch's and
  torchconv's results are each compared with the float64 truth (torch's
  model on the same weights and input in float64): torchconv's error is at
  most 4x torch's plus a small absolute term, for the whole model and for
  every torchconv layer rerun alone on the input it had in the model (see
  ``layer_errors``: a ReLU or max-pool near-tie can go one way in torch's
  float32 run and the other in ours, which moves whole-model gradients by
  ~1e-3, so those get more room);
* ``test_vmap_per_sample_gradients``: ``torch.func`` ``functional_call`` +
  ``grad`` + ``vmap`` per-sample gradients are torch's;
* ``test_training_steps``: 3 SGD steps of the DCGAN discriminator and the
  U-Net (in-place activations right after convolutions), and
  ``test_wgan_gp_training``: a WGAN-GP loop (gradient penalty with
  ``torch.autograd.grad(..., create_graph=True)``, i.e. double backward
  through the critic): torch's loss trajectories and final weights;
* ``test_weight_norm``: ``torch.nn.utils.weight_norm`` and its
  parametrization on converted layers.

Each runs on the CPU backends (``torchconv.backends.available("cpu")``;
``cuda-emulated``, which tests/conftest.py registers, only in the full run).

CI time: by default the small models run in every check and each
torchvision model in one or a few; everything else (e.g. densenet121 in every
mode) is marked ``zoo_full`` and deselected (pyproject.toml's addopts has
``-m "not zoo_full"``); run it with::

    python -m pytest -m zoo_full tests/test_model_zoo.py

(``-m ""`` runs both.) Without torchvision installed the torchvision models
skip; the models written here still run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import torchconv
from zoo_models import ZOO, DCGANDiscriminator, DCGANGenerator, UNet

ZOO_FULL = pytest.mark.zoo_full

# The CPU backends; "cuda-emulated" (registered by conftest.py) only in the full run.
BACKENDS = [
    pytest.param(name, marks=ZOO_FULL) if name == "cuda-emulated" else name
    for name in torchconv.backends.available("cpu")
]

SMALL = ["dcgan_generator", "dcgan_generator_linear", "dcgan_discriminator", "unet"]
# What of the small models runs by default: all of it for these three, the
# contiguous layout for dcgan_generator_linear (its channels_last runs differ
# from dcgan_generator's in the first layer only).
SMALL_DEFAULT = {
    "dcgan_generator": "all",
    "dcgan_discriminator": "all",
    "unet": "all",
    "dcgan_generator_linear": [{"layout": "contiguous"}],
}
TORCHVISION = ["resnet18", "mobilenet_v2", "googlenet", "squeezenet1_1", "densenet121"]
ALL_MODELS = SMALL + TORCHVISION

TORCH_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)
TORCHCONV_TYPES = (torchconv.Conv2d, torchconv.ConvTranspose2d, torchconv.MaxPool2d, torchconv.AvgPool2d)


def cases(models, default: dict, **axes):
    """pytest params (model, tc_backend, *axes) for the models, every backend and
    every combination of the ``axes`` values.

    ``default`` maps a model name to the combinations of ``axes`` values
    (dicts, or "all") that run by default; every other combination, and all
    of a model not in ``default``, gets the ``zoo_full`` mark.
    """
    names = list(axes)
    out = []
    for model in models:
        for combo in itertools.product(*axes.values()):
            values = dict(zip(names, combo))
            spec = default.get(model)
            is_default = spec == "all" or (
                spec is not None and any(all(values[k] == v for k, v in s.items()) for s in spec)
            )
            for backend in BACKENDS:
                bname = backend.values[0] if hasattr(backend, "values") else backend
                marks = [] if is_default and bname != "cuda-emulated" else [ZOO_FULL]
                ident = "-".join([model, bname, *(str(v) for v in combo)])
                out.append(pytest.param(model, bname, *combo, marks=marks, id=ident))
    return "model,tc_backend" + "".join("," + n for n in names), out


# --------------------------------------------------------------------------- running a model


@dataclasses.dataclass
class Result:
    out: torch.Tensor
    x_grad: torch.Tensor | None
    grads: dict[str, torch.Tensor | None]
    buffers: dict[str, torch.Tensor]


def convert(model: nn.Module) -> nn.Module:
    """``torchconv.convert(model)`` (which converts a deep copy), checked to have
    swapped every torch.nn conv/pool layer and nothing else, with its own
    copies of the parameters."""
    converted = torchconv.convert(model)
    assert converted is not model
    assert not {id(p) for p in model.parameters()} & {id(p) for p in converted.parameters()}
    swapped = 0
    for (name, before), after in zip(model.named_modules(), converted.modules()):
        if type(before) in TORCH_TYPES:
            assert isinstance(after, TORCHCONV_TYPES), f"{name}: {type(after)} not converted"
            swapped += 1
        else:
            assert type(after) is type(before), name
    assert swapped > 0
    return converted


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """``eval``; ``train``; or ``train-nodropout``: train mode (BatchNorm uses the
    batch statistics) with dropout off, for comparisons across dtypes (the
    dropout masks of a float32 and a float64 tensor differ)."""
    model.train(mode != "eval")
    if mode == "train-nodropout":
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
    return model


def make_input(zm, dtype, memory_format=torch.contiguous_format, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(zm.input_shape, generator=gen, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


def grad_output(out: torch.Tensor, seed=1) -> torch.Tensor:
    """A fixed random gradient for ``out``: the same values whatever its dtype,
    with its strides (as the gradient of an elementwise loss has)."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return torch.empty_like(out).copy_(values)


def run(model, x, backend=None, autocast=False, seed=0) -> Result:
    """Forward and backward of ``model`` on (a fresh leaf copy of) ``x``."""
    x = x.detach().clone().requires_grad_(x.is_floating_point())
    with contextlib.ExitStack() as stack:
        if backend is not None:
            stack.enter_context(torchconv.backends.use(backend))
        torch.random.default_generator.manual_seed(seed)  # dropout
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            out = model(x)
        out.backward(grad_output(out))
    return Result(
        out.detach(),
        x.grad,
        {name: p.grad for name, p in model.named_parameters()},
        {name: b.detach().clone() for name, b in model.named_buffers()},
    )


def tensors(result: Result):
    """(name, group, tensor) of everything a run produces, in a fixed order.

    ``group``: the output; the input's gradient; the gradients of one module's
    parameters; the floating-point buffers of one module.
    """
    yield "output", "output", result.out
    yield "input.grad", "input.grad", result.x_grad
    for name, g in result.grads.items():
        yield f"{name}.grad", ("grad", name.rpartition(".")[0]), g
    for name, b in result.buffers.items():
        if b.is_floating_point():
            yield f"buffer {name}", ("buffer", name.rpartition(".")[0]), b


def _group_scales(result: Result, measure) -> dict:
    """The largest ``measure`` of the tensors of each group of ``tensors(result)``.

    Errors are measured against the size of a tensor's whole group, not of the
    tensor alone: some are zero up to rounding, e.g. the gradient of a
    BatchNorm bias that feeds, through linear layers, a BatchNorm in train
    mode (which removes the mean), or the running mean of a BatchNorm whose
    input is a 1x1 convolution of such a BatchNorm's output. Their size is
    rounding noise, and so is any relative error; the module's other
    gradients (buffers) give the scale they are computed at.
    """
    scales = {}
    for _, group, t in tensors(result):
        if t is not None and t.numel():
            scales[group] = max(scales.get(group, 0.0), measure(t))
    return scales


def _mismatch(name, a, b):
    if a is None or b is None:
        if (a is None) != (b is None):
            return f"{name}: ours {'None' if a is None else 'set'}, torch's {'None' if b is None else 'set'}"
        return None
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{name}: {a.dtype} {tuple(a.shape)} vs torch's {b.dtype} {tuple(b.shape)}"
    return None


def assert_tight(ours: Result, theirs: Result, rtol=1e-10):
    """Every tensor within ~rtol of torch's, relative to the largest entry of
    its group (float64 runs)."""
    scales = _group_scales(theirs, lambda t: t.abs().max().item())
    problems = []
    for (name, group, a), (_, _, b) in zip(tensors(ours), tensors(theirs), strict=True):
        problem = _mismatch(name, a, b)
        if problem or a is None or not b.numel():
            problems += [problem] if problem else []
            continue
        diff = (a - b).abs().max().item()
        if not diff <= rtol * scales[group]:
            problems.append(f"{name}: max |ours - torch's| = {diff:.3g}, torch's max |.| = "
                            f"{b.abs().max().item():.3g} (its group's {scales[group]:.3g})")
    assert not problems, "differences from torch:\n  " + "\n  ".join(problems)


def _rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


def errors_against_truth(ours: Result, theirs: Result, truth: Result, factor: float, atol: float,
                         grad_atol: float | None = None, prefix: str = "") -> list[str]:
    """Tensor by tensor, ours' error against ``truth`` must be at most ``factor``
    times theirs' plus ``atol`` (``grad_atol`` for the gradients), both RMS
    errors relative to the RMS of the tensor's group in ``truth``; the dtypes
    must be theirs'. Returns what is not."""
    scales = _group_scales(truth, _rms)
    problems = []
    for (name, group, a), (_, _, b), (_, _, t) in zip(tensors(ours), tensors(theirs), tensors(truth), strict=True):
        problem = _mismatch(prefix + name, a, b)
        if problem or a is None or not t.numel():
            problems += [problem] if problem else []
            continue
        if not a.isfinite().all():
            problems.append(f"{prefix}{name}: not finite")
            continue
        scale = max(scales[group], 1e-300)
        ours_err, torch_err = _rms(a.double() - t) / scale, _rms(b.double() - t) / scale
        bound = factor * torch_err + (atol if grad_atol is None or not name.endswith("grad") else grad_atol)
        if not ours_err <= bound:
            problems.append(f"{prefix}{name}: relative error {ours_err:.3g}, torch's {torch_err:.3g} (bound {bound:.3g})")
    return problems


def assert_close_to_truth(*args, **kwargs):
    problems = errors_against_truth(*args, **kwargs)
    assert not problems, "errors against the float64 truth:\n  " + "\n  ".join(problems)


TORCH_TWIN = {
    torchconv.Conv2d: nn.Conv2d,
    torchconv.ConvTranspose2d: nn.ConvTranspose2d,
    torchconv.MaxPool2d: nn.MaxPool2d,
    torchconv.AvgPool2d: nn.AvgPool2d,
}


@contextlib.contextmanager
def recording_layer_inputs(model: nn.Module):
    """Yields a list that gets (name, layer, copy of its input) for every call of
    a torchconv layer of ``model`` inside the block."""
    records, handles = [], []
    for name, module in model.named_modules():
        if type(module) in TORCH_TWIN:
            hook = lambda m, args, name=name: records.append((name, m, args[0].detach().clone()))  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def layer_errors(records, backend, factor: float, atol: float, autocast=False) -> list[str]:
    """Every recorded torchconv layer, rerun alone on its recorded input (the
    activations of the real model, in their layout) with a random output
    gradient, against its torch twin on the same input: ours' errors against
    the float64 truth within ``factor`` times torch's plus ``atol``.

    Unlike the whole model's gradients, this has no discrete decisions
    upstream: in a float32 run, a ReLU gate or a max-pool argmax whose
    float64 values nearly tie can go either way, and where it goes differently
    in torch's run and ours (their roundings differ), the gradients of every
    layer before it differ by that unit's share (~1e-3 relative, seen in
    googlenet and in mobilenet_v2 in train mode).
    """
    problems = []
    for name, layer, x in records:
        layer = copy.deepcopy(layer)
        layer._forward_pre_hooks.clear()
        twin = copy.deepcopy(layer)
        twin.__class__ = TORCH_TWIN[type(layer)]
        truth_twin = copy.deepcopy(twin).double()
        results = [
            run(layer, x, backend, autocast=autocast),
            run(twin, x, autocast=autocast),
            run(truth_twin, x.double()),
        ]
        problems += errors_against_truth(*results, factor=factor, atol=atol, prefix=f"layer {name} ({tuple(x.shape)}) ")
    return problems


def assert_same_layouts(ours: Result, theirs: Result):
    """Output and gradients with torch's strides."""
    problems = []
    for (name, _, a), (_, _, b) in zip(tensors(ours), tensors(theirs), strict=True):
        if name.startswith("buffer") or a is None or b is None:
            continue
        if a.stride() != b.stride():
            problems.append(f"{name} {tuple(a.shape)}: strides {a.stride()}, torch's {b.stride()}")
    assert not problems, "layouts differ from torch's:\n  " + "\n  ".join(problems)


def build(name: str, dtype=torch.float64, memory_format=torch.contiguous_format) -> nn.Module:
    model = ZOO[name].build().to(dtype)
    return model.to(memory_format=memory_format) if memory_format is not torch.contiguous_format else model


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


# --------------------------------------------------------------------------- float64


@pytest.mark.parametrize(
    *cases(
        ALL_MODELS,
        default={
            **SMALL_DEFAULT,
            "resnet18": [{"mode": "train", "layout": "contiguous"}],
            "mobilenet_v2": [{"mode": "train", "layout": "contiguous"}],
            "squeezenet1_1": [{"mode": "eval", "layout": "contiguous"}],
            "googlenet": [{"mode": "train", "layout": "contiguous"}],
            "densenet121": [{"mode": "train", "layout": "contiguous"}],
        },
        mode=["eval", "train"],
        layout=["contiguous", "channels_last"],
    )
)
def test_float64(model, tc_backend, mode, layout):
    """float64: outputs, every gradient and the BatchNorm statistics match torch's to ~1e-10;
    layouts are torch's."""
    zm, fmt = ZOO[model], MEMORY_FORMATS[layout]
    reference = set_mode(build(model, torch.float64, fmt), mode)
    ours = convert(reference)
    x = make_input(zm, torch.float64, fmt)
    expected = run(reference, x)
    got = run(ours, x, tc_backend)
    assert_tight(got, expected)
    assert_same_layouts(got, expected)


# --------------------------------------------------------------------------- float32, bfloat16, autocast


def truth_mode(model: str) -> str:
    """The mode of the comparisons with a float64 truth. The small models: train
    mode, dropout off (BatchNorm over >= 32 values per channel). torchvision's:
    eval mode; in train mode their last BatchNorms see 8 values per channel and
    amplify rounding ~1e3 (torch's own float32 input gradient of mobilenet_v2
    is 2.5e-4 off), which leaves a float32 comparison little to say."""
    return "train-nodropout" if model in SMALL else "eval"


def check_against_truth(model, tc_backend, dtype, layout, *, autocast=False, atol, grad_atol):
    """Runs torch's model and torchconv's (``dtype``, ``layout``, under autocast if
    asked) and the float64 truth (the same weights and input in float64, no
    autocast): dtypes and layouts are torch's; the output and the BatchNorm
    statistics are within 4x torch's error + ``atol``, the gradients within 4x
    + ``grad_atol`` (room for a near-tie decided differently, see
    :func:`layer_errors`); and every torchconv layer, rerun alone on the input
    it had, within 4x + ``atol``."""
    zm, fmt = ZOO[model], MEMORY_FORMATS[layout]
    reference = set_mode(build(model, dtype, fmt), truth_mode(model))
    ours = convert(reference)
    truth_model = copy.deepcopy(reference).double()
    x = make_input(zm, dtype, fmt)
    truth = run(truth_model, x.double())
    expected = run(reference, x, autocast=autocast)
    with recording_layer_inputs(ours) as records:
        got = run(ours, x, tc_backend, autocast=autocast)
    assert got.out.dtype == expected.out.dtype, f"output dtype {got.out.dtype}, torch's {expected.out.dtype}"
    assert_same_layouts(got, expected)
    problems = errors_against_truth(got, expected, truth, factor=4.0, atol=atol, grad_atol=grad_atol)
    problems += layer_errors(records, tc_backend, factor=4.0, atol=atol, autocast=autocast)
    assert not problems, "errors against the float64 truth:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize(
    *cases(
        ALL_MODELS,
        default={
            **SMALL_DEFAULT,
            "resnet18": [{"layout": "channels_last"}],
            "mobilenet_v2": [{"layout": "contiguous"}],
            "googlenet": [{"layout": "contiguous"}],
            "squeezenet1_1": [{"layout": "channels_last"}],
        },
        layout=["contiguous", "channels_last"],
    )
)
def test_float32(model, tc_backend, layout):
    """float32, contiguous and channels_last: errors against the float64 truth
    within 4x torch's (+1e-6); layouts are torch's."""
    check_against_truth(model, tc_backend, torch.float32, layout, atol=1e-6, grad_atol=1e-2)


# bfloat16: 2**-8 is half a unit in the last place (relative); atol ~2.5 of them.
BF16_ATOL = 2e-2
# Whole-model gradients in bfloat16 are ~10-100% off (torch's too), and near-ties
# decided differently add ~10% (googlenet's max-pools): only a sanity bound.
BF16_GRAD_ATOL = 0.25


@pytest.mark.parametrize(
    *cases(
        ALL_MODELS,
        default={**SMALL_DEFAULT, "resnet18": [{"layout": "contiguous"}], "squeezenet1_1": [{"layout": "contiguous"}]},
        layout=["contiguous", "channels_last"],
    )
)
def test_bfloat16_model(model, tc_backend, layout):
    """``model.to(torch.bfloat16)``: dtypes and layouts are torch's, errors against
    the float64 truth of the same bfloat16 weights within 4x torch's."""
    check_against_truth(model, tc_backend, torch.bfloat16, layout, atol=BF16_ATOL, grad_atol=BF16_GRAD_ATOL)


@pytest.mark.parametrize(
    *cases(
        ALL_MODELS,
        default={**{m: [{"layout": "contiguous"}] for m in SMALL}, "squeezenet1_1": [{"layout": "contiguous"}]},
        layout=["contiguous", "channels_last"],
    )
)
def test_autocast_bfloat16(model, tc_backend, layout):
    """float32 model under ``torch.autocast("cpu", dtype=torch.bfloat16)``: the
    dtypes of the output and of every gradient and the layouts are torch's;
    errors against the float64 truth (no autocast) within 4x torch's."""
    check_against_truth(model, tc_backend, torch.float32, layout, autocast=True, atol=BF16_ATOL, grad_atol=BF16_GRAD_ATOL)


# --------------------------------------------------------------------------- per-sample gradients


@pytest.mark.parametrize(
    *cases(
        ["dcgan_discriminator", "unet", "dcgan_generator", "resnet18"],
        default={"dcgan_discriminator": "all", "unet": "all", "dcgan_generator": "all"},
    )
)
def test_vmap_per_sample_gradients(model, tc_backend):
    """Per-sample parameter gradients, ``vmap(grad(functional_call(...)))`` in
    eval mode, float64: torch's."""
    zm = ZOO[model]
    reference = build(model, torch.float64).eval()
    ours = convert(reference)
    x = make_input(zm, torch.float64)
    with torch.no_grad():
        out_shape = reference(x[:1]).shape[1:]
    weights = torch.randn(x.shape[0], *out_shape, dtype=torch.float64)

    def per_sample_grads(m):
        params = {k: v.detach() for k, v in m.named_parameters()}
        buffers = {k: v.detach() for k, v in m.named_buffers()}

        def loss(params, sample, w):
            out = functional_call(m, (params, buffers), (sample.unsqueeze(0),))
            return (out.squeeze(0) * w).sum()

        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, weights)

    expected = per_sample_grads(reference)
    with torchconv.backends.use(tc_backend):
        got = per_sample_grads(ours)
    assert list(got) == list(expected)
    for name in expected:
        atol = 1e-10 * expected[name].abs().max().item()
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=atol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------- training


def _train_data(name, steps, dtype):
    gen = torch.Generator().manual_seed(7)
    zm = ZOO[name]
    data = []
    for _ in range(steps):
        x = torch.randn(zm.input_shape, generator=gen, dtype=torch.float64).to(dtype)
        if name == "dcgan_discriminator":
            target = torch.randint(0, 2, (zm.input_shape[0],), generator=gen).to(dtype)
        else:  # unet: a class per pixel
            target = torch.randint(0, 2, (zm.input_shape[0], *zm.input_shape[2:]), generator=gen)
        data.append((x, target))
    return data


def _train(model, name, data, backend=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    with torchconv.backends.use(backend) if backend else contextlib.nullcontext():
        for x, target in data:
            opt.zero_grad()
            out = model(x)
            if name == "dcgan_discriminator":
                loss = F.binary_cross_entropy_with_logits(out, target)
            else:
                loss = F.cross_entropy(out, target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ["dcgan_discriminator", "unet"])
@pytest.mark.parametrize("tc_backend", BACKENDS)
def test_training_steps(tc_backend, name, dtype):
    """3 SGD steps (train mode; LeakyReLU/ReLU(inplace=True) right after the
    convolutions): torch's losses and final weights."""
    reference = build(name, dtype).train()
    ours = convert(reference)
    data = _train_data(name, 3, dtype)
    expected = _train(reference, name, data)
    got = _train(ours, name, data, tc_backend)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(
        torch.tensor(got), torch.tensor(expected), rtol=rtol, atol=0, msg=lambda m: f"losses {got} vs torch's {expected}: {m}"
    )
    for (key, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        if a.is_floating_point():
            atol = rtol * b.abs().max().item()
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")


def _wgan_gp(generator, critic, steps, dtype, backend=None, gp_weight=10.0):
    """WGAN-GP: per step one critic update (Wasserstein loss plus the gradient
    penalty at real/fake interpolates, which needs double backward through the
    critic) and one generator update. Returns the losses per step."""
    gen = torch.Generator().manual_seed(11)
    opt_c = torch.optim.SGD(critic.parameters(), lr=0.01)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
    history = []
    with torchconv.backends.use(backend) if backend else contextlib.nullcontext():
        for _ in range(steps):
            real = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64).to(dtype)
            z = torch.randn(2, generator.nz, 1, 1, generator=gen, dtype=torch.float64).to(dtype)
            alpha = torch.rand(2, 1, 1, 1, generator=gen, dtype=torch.float64).to(dtype)
            # critic
            opt_c.zero_grad()
            fake = generator(z).detach()
            interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)
            penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
            critic_loss = critic(fake).mean() - critic(real).mean() + gp_weight * penalty
            critic_loss.backward()
            opt_c.step()
            # generator
            opt_g.zero_grad()
            generator_loss = -critic(generator(z)).mean()
            generator_loss.backward()
            opt_g.step()
            history.append([critic_loss.item(), penalty.item(), generator_loss.item()])
    return history


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("tc_backend", BACKENDS)
def test_wgan_gp_training(tc_backend, dtype):
    """3 WGAN-GP iterations (DCGAN generator, BatchNorm-free DCGAN critic with
    LeakyReLU(0.2, inplace=True)): torch's critic losses, penalties, generator
    losses and final weights."""
    torch.random.default_generator.manual_seed(3)
    generator, critic = DCGANGenerator().to(dtype), DCGANDiscriminator(batch_norm=False).to(dtype)
    ours_g, ours_c = convert(generator), convert(critic)
    expected = _wgan_gp(generator, critic, 3, dtype)
    got = _wgan_gp(ours_g, ours_c, 3, dtype, tc_backend)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(
        torch.tensor(got),
        torch.tensor(expected),
        rtol=rtol,
        atol=0,
        msg=lambda m: f"[critic loss, penalty, generator loss] per step {got} vs torch's {expected}: {m}",
    )
    for ours, theirs in ((ours_g, generator), (ours_c, critic)):
        for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            if a.is_floating_point():
                atol = rtol * b.abs().max().item()
                torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")


# --------------------------------------------------------------------------- weight_norm


def _weight_norm_model(kind):
    torch.random.default_generator.manual_seed(5)
    wn = nn.utils.weight_norm if kind == "weight_norm" else nn.utils.parametrizations.weight_norm
    with warnings.catch_warnings():
        # torch.nn.utils.weight_norm is deprecated in favour of the parametrization.
        warnings.simplefilter("ignore", FutureWarning)
        return nn.Sequential(
            wn(nn.Conv2d(3, 8, 3, padding=1)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            wn(nn.Conv2d(8, 8, 3, padding=1, bias=False), dim=None),
            nn.LeakyReLU(0.2),
            wn(nn.ConvTranspose2d(8, 4, 2, stride=2)),
        ).double()


@pytest.mark.parametrize("kind", ["weight_norm", "parametrizations.weight_norm"])
@pytest.mark.parametrize("tc_backend", BACKENDS)
def test_weight_norm(tc_backend, kind):
    """A model with weight-normalised Conv2d/ConvTranspose2d layers converts
    (``torchconv.convert(model)``, not in place: the deprecated
    ``torch.nn.utils.weight_norm`` keeps a non-leaf ``weight`` tensor that a
    plain ``copy.deepcopy`` refuses) and gives torch's outputs and gradients
    (of ``weight_g``/``weight_v`` or the parametrization's ``original0/1``)."""
    reference = _weight_norm_model(kind)
    ours = torchconv.convert(reference)
    assert ours is not reference
    assert isinstance(ours[2], torchconv.MaxPool2d)
    if kind == "weight_norm":
        # Plain layers with a pre-forward hook: converted, the hook kept.
        assert isinstance(ours[0], torchconv.Conv2d) and isinstance(ours[5], torchconv.ConvTranspose2d)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = run(reference, x)
    got = run(ours, x, tc_backend)
    assert_tight(got, expected)
    # The converted copy has its own parameters: a step on it leaves the original alone.
    assert all(a is not b for a, b in zip(ours.parameters(), reference.parameters()))
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(1.0)
    again = run(reference, x)
    assert torch.equal(again.out, expected.out)
