"""torchconv.nn layers against their torch.nn twins: outputs, gradients, init, repr, state, errors."""

import copy
import io

import pytest
import torch

import torchconv
from conftest import device_of_test

TOL = dict(rtol=1e-4, atol=1e-5)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths")

PAIRS = {
    "Conv2d": (torchconv.Conv2d, torch.nn.Conv2d),
    "ConvTranspose2d": (torchconv.ConvTranspose2d, torch.nn.ConvTranspose2d),
    "MaxPool2d": (torchconv.MaxPool2d, torch.nn.MaxPool2d),
    "AvgPool2d": (torchconv.AvgPool2d, torch.nn.AvgPool2d),
}


def twins(name, *args, seed=1234, **kwargs):
    """(torchconv layer, torch.nn layer) built from the same seed."""
    ours_cls, torch_cls = PAIRS[name]
    torch.manual_seed(seed)
    ref = torch_cls(*args, **kwargs)
    torch.manual_seed(seed)
    ours = ours_cls(*args, **kwargs)
    return ours, ref


def assert_same_params(ours, ref):
    ours_p, ref_p = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert list(ours_p) == list(ref_p)
    for name in ref_p:
        assert ours_p[name].shape == ref_p[name].shape
        assert ours_p[name].dtype == ref_p[name].dtype
        assert torch.equal(ours_p[name], ref_p[name]), name


def check_forward_backward(ours, ref, x, *, check_layout=True, **forward_kwargs):
    """Same output (and layout) and the same input/parameter gradients."""
    assert_same_params(ours, ref)
    x_ours = x.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ours = ours(x_ours, **forward_kwargs)
    y_ref = ref(x_ref, **forward_kwargs)
    if isinstance(y_ref, tuple):  # max pooling with indices
        torch.testing.assert_close(y_ours[1], y_ref[1], rtol=0, atol=0)
        y_ours, y_ref = y_ours[0], y_ref[0]
    assert y_ours.shape == y_ref.shape
    assert y_ours.dtype == y_ref.dtype
    torch.testing.assert_close(y_ours, y_ref, **TOL)
    if check_layout:
        for fmt in (torch.contiguous_format, torch.channels_last):
            if y_ref.dim() == 4:
                assert y_ours.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), fmt
    g = torch.randn_like(y_ref)
    (y_ours * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOL)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **TOL, msg=lambda m: f"{name}: {m}")
    return y_ours


# --------------------------------------------------------------------- Conv2d

CONV_CONFIGS = [
    ((3, 8, 3), {}),
    ((3, 8, 1), {}),
    ((3, 8, 3), dict(stride=2, padding=1)),
    ((4, 6, (3, 5)), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
    ((4, 6, 3), dict(groups=2, padding=1)),
    ((4, 8, 3), dict(groups=4, padding=1, bias=False)),  # depthwise
    ((3, 5, 3), dict(bias=False, dilation=2)),
    ((3, 5, 3), dict(padding="same")),
    ((3, 5, 4), dict(padding="same")),  # even kernel: extra row/column at the end
    ((3, 5, (4, 5)), dict(padding="same", dilation=(1, 2))),
    ((3, 5, (2, 3)), dict(padding="same", dilation=2)),
    ((3, 5, 3), dict(padding="valid", stride=2)),
    ((3, 4, 3), dict(padding=(0, 2), stride=(1, 3))),
] + [
    ((4, 6, k), dict(padding=p, padding_mode=mode, **extra))
    for mode in ("reflect", "replicate", "circular")
    for k, p, extra in [
        (3, 1, {}),
        ((3, 5), (1, 2), {}),
        (3, 2, dict(stride=2, groups=2)),
        (4, "same", {}),
        (3, "same", dict(dilation=2, bias=False)),
        (3, "valid", {}),
        (3, (2, 1), dict(dilation=(1, 2))),
    ]
]


def _ids(configs):
    return [f"{a}-{kw}" for a, kw in configs]


@pytest.mark.parametrize("args,kwargs", CONV_CONFIGS, ids=_ids(CONV_CONFIGS))
def test_conv2d_matches_torch(backend, args, kwargs):
    ours, ref = twins("Conv2d", *args, **kwargs)
    x = torch.randn(2, args[0], 9, 11)
    check_forward_backward(ours, ref, x)


@pytest.mark.parametrize("args,kwargs", CONV_CONFIGS, ids=_ids(CONV_CONFIGS))
def test_conv2d_unbatched(backend, args, kwargs):
    ours, ref = twins("Conv2d", *args, **kwargs)
    x = torch.randn(args[0], 8, 7)
    y = check_forward_backward(ours, ref, x)
    assert y.dim() == 3


@pytest.mark.parametrize(
    "args,kwargs",
    [((3, 8, 3), dict(padding=1)), ((4, 6, 3), dict(groups=2, stride=2)), ((4, 6, 3), dict(padding_mode="reflect", padding=1))],
)
@pytest.mark.parametrize("where", ["input", "weight", "both"])
def test_conv2d_channels_last(backend, args, kwargs, where):
    ours, ref = twins("Conv2d", *args, **kwargs)
    x = torch.randn(2, args[0], 9, 10)
    if where in ("input", "both"):
        x = x.to(memory_format=torch.channels_last)
    if where in ("weight", "both"):
        ours.to(memory_format=torch.channels_last)
        ref.to(memory_format=torch.channels_last)
    check_forward_backward(ours, ref, x)


def test_conv2d_float64(backend):
    device = device_of_test()  # the factory kwargs are passed through to the parameters
    ours, ref = twins("Conv2d", 3, 4, 3, padding=1, device=device, dtype=torch.float64)
    assert ours.weight.dtype == torch.float64 and ours.bias.dtype == torch.float64
    assert ours.weight.device == device
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = check_forward_backward(ours, ref, x)
    assert y.dtype == torch.float64


def test_conv2d_to_float64(backend):
    ours, ref = twins("Conv2d", 3, 4, 3, padding_mode="circular", padding=1)
    ours.double()
    ref.double()
    check_forward_backward(ours, ref, torch.randn(2, 3, 6, 6, dtype=torch.float64))


def test_conv2d_padding_mode_changed_after_construction(backend):
    # torch reads padding_mode at forward time; so do we.
    ours, ref = twins("Conv2d", 3, 4, 3, padding=1)
    ours.padding_mode = ref.padding_mode = "reflect"
    check_forward_backward(ours, ref, torch.randn(1, 3, 5, 5))


# ------------------------------------------------------------ ConvTranspose2d

CONVT_CONFIGS = [
    ((3, 8, 3), {}),
    ((3, 8, 3), dict(stride=2, padding=1)),
    ((3, 8, 3), dict(stride=2, padding=1, output_padding=1)),
    ((4, 6, (3, 5)), dict(stride=(2, 3), padding=(1, 2), output_padding=(1, 2), dilation=(2, 1))),
    ((4, 6, 3), dict(groups=2, stride=2)),
    ((4, 4, 3), dict(groups=4, bias=False)),
    ((3, 5, 2), dict(stride=2)),
    ((3, 5, 3), dict(dilation=3, output_padding=2, stride=1)),  # output_padding < dilation
    ((3, 5, 1), dict(stride=3, bias=False)),
]


@pytest.mark.parametrize("args,kwargs", CONVT_CONFIGS, ids=_ids(CONVT_CONFIGS))
def test_conv_transpose2d_matches_torch(backend, args, kwargs):
    ours, ref = twins("ConvTranspose2d", *args, **kwargs)
    check_forward_backward(ours, ref, torch.randn(2, args[0], 5, 6))


@pytest.mark.parametrize("args,kwargs", CONVT_CONFIGS, ids=_ids(CONVT_CONFIGS))
def test_conv_transpose2d_unbatched(backend, args, kwargs):
    ours, ref = twins("ConvTranspose2d", *args, **kwargs)
    y = check_forward_backward(ours, ref, torch.randn(args[0], 5, 4))
    assert y.dim() == 3


@pytest.mark.parametrize("where", ["input", "weight"])
def test_conv_transpose2d_channels_last(backend, where):
    ours, ref = twins("ConvTranspose2d", 4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 5, 6)
    if where == "input":
        x = x.to(memory_format=torch.channels_last)
    else:
        ours.to(memory_format=torch.channels_last)
        ref.to(memory_format=torch.channels_last)
    check_forward_backward(ours, ref, x)


def test_conv_transpose2d_float64(backend):
    ours, ref = twins("ConvTranspose2d", 3, 4, 3, stride=2, dtype=torch.float64)
    assert ours.weight.dtype == torch.float64
    y = check_forward_backward(ours, ref, torch.randn(1, 3, 4, 4, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize(
    "input_shape,output_size",
    [
        ((2, 4, 6, 6), [12, 12]),
        ((2, 4, 6, 6), [11, 12]),
        ((2, 4, 6, 6), (11, 11)),
        ((2, 4, 6, 6), torch.Size([2, 6, 12, 11])),  # the full shape
        ((2, 4, 6, 6), [2, 6, 11, 12]),
        ((4, 6, 6), [12, 11]),  # unbatched
        ((4, 6, 6), [6, 11, 12]),  # unbatched, full shape
    ],
)
def test_conv_transpose2d_output_size(backend, input_shape, output_size):
    ours, ref = twins("ConvTranspose2d", 4, 6, 3, stride=2, padding=1)
    y = check_forward_backward(ours, ref, torch.randn(input_shape), output_size=output_size)
    assert list(y.shape[-2:]) == list(output_size)[-2:]


def test_conv_transpose2d_output_size_round_trip(backend):
    # torch's docstring example: undo a strided convolution's downsampling.
    x = torch.randn(1, 16, 12, 12)
    down = torchconv.Conv2d(16, 16, 3, stride=2, padding=1)
    up = torchconv.ConvTranspose2d(16, 16, 3, stride=2, padding=1)
    h = down(x)
    assert h.shape == (1, 16, 6, 6)
    assert up(h, output_size=x.size()).shape == x.shape
    assert up(h).shape == (1, 16, 11, 11)


@pytest.mark.parametrize(
    "input_shape,output_size,message",
    [
        ((2, 4, 6, 6), [13, 12], r"requested an output size of \[13, 12\], but valid sizes range from \[11, 11\] to \[12, 12\]"),
        ((2, 4, 6, 6), [10, 12], r"requested an output size of \[10, 12\], but valid sizes range from \[11, 11\] to \[12, 12\]"),
        ((2, 4, 6, 6), [12], r"ConvTranspose2D: for 4D input, output_size must have 2 or 4 elements \(got 1\)"),
        ((2, 4, 6, 6), [6, 12, 12], r"ConvTranspose2D: for 4D input, output_size must have 2 or 4 elements \(got 3\)"),
        ((4, 6, 6), [2, 6, 12, 12], r"ConvTranspose2D: for 3D input, output_size must have 2 or 3 elements \(got 4\)"),
        ((4, 6, 6), [6, 20, 12], r"requested an output size of \[20, 12\]"),
    ],
)
def test_conv_transpose2d_output_size_errors(input_shape, output_size, message):
    ours, ref = twins("ConvTranspose2d", 4, 6, 3, stride=2, padding=1)
    x = torch.randn(input_shape)
    with pytest.raises(ValueError, match=message) as torch_error:
        ref(x, output_size=output_size)
    with pytest.raises(ValueError, match=message) as our_error:
        ours(x, output_size=output_size)
    assert str(our_error.value) == str(torch_error.value)


def test_conv_transpose2d_padding_mode_changed_after_construction():
    ours, ref = twins("ConvTranspose2d", 3, 4, 3)
    ours.padding_mode = ref.padding_mode = "reflect"
    x = torch.randn(1, 3, 4, 4)
    msg = "Only `zeros` padding mode is supported for ConvTranspose2d"
    with pytest.raises(ValueError, match=msg):
        ref(x)
    with pytest.raises(ValueError, match=msg):
        ours(x)


# ------------------------------------------------------------------ MaxPool2d

MAXPOOL_CONFIGS = [
    ((2,), {}),
    ((3,), dict(stride=2, padding=1)),
    (((3, 2),), dict(stride=(2, 1))),
    ((3,), dict(stride=1, dilation=2)),
    ((3,), dict(stride=2, ceil_mode=True)),
    ((3,), dict(stride=2, padding=1, ceil_mode=True)),
    ((2,), dict(return_indices=True)),
    ((3,), dict(stride=2, padding=1, dilation=(1, 2), return_indices=True, ceil_mode=True)),
    (((2, 4),), dict(stride=(1, 3), padding=(1, 2), return_indices=True)),
]


@pytest.mark.parametrize("args,kwargs", MAXPOOL_CONFIGS, ids=_ids(MAXPOOL_CONFIGS))
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7)], ids=["batched", "unbatched"])
def test_max_pool2d_matches_torch(backend, args, kwargs, shape):
    ours, ref = twins("MaxPool2d", *args, **kwargs)
    out = check_forward_backward(ours, ref, torch.randn(shape))
    assert out.dim() == len(shape)


@pytest.mark.parametrize("args,kwargs", MAXPOOL_CONFIGS, ids=_ids(MAXPOOL_CONFIGS))
def test_max_pool2d_channels_last(backend, args, kwargs):
    ours, ref = twins("MaxPool2d", *args, **kwargs)
    check_forward_backward(ours, ref, torch.randn(2, 3, 9, 11).to(memory_format=torch.channels_last))


def test_max_pool2d_return_indices_feed_max_unpool(backend):
    pool = torchconv.MaxPool2d(2, return_indices=True)
    x = torch.randn(1, 2, 6, 6)
    values, indices = pool(x)
    assert indices.dtype == torch.int64
    ref_values, ref_indices = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(indices, ref_indices)
    unpooled = torch.nn.MaxUnpool2d(2)(values, indices)
    assert torch.equal(unpooled, torch.nn.MaxUnpool2d(2)(ref_values, ref_indices))


def test_max_pool2d_ceil_mode_shape(backend):
    x = torch.randn(1, 1, 5, 5)
    assert torchconv.MaxPool2d(2)(x).shape == (1, 1, 2, 2)
    assert torchconv.MaxPool2d(2, ceil_mode=True)(x).shape == (1, 1, 3, 3)


def test_max_pool2d_float64(backend):
    ours, ref = twins("MaxPool2d", 3, stride=2, padding=1)
    y = check_forward_backward(ours, ref, torch.randn(2, 3, 7, 7, dtype=torch.float64))
    assert y.dtype == torch.float64


# ------------------------------------------------------------------ AvgPool2d

AVGPOOL_CONFIGS = [
    ((2,), {}),
    ((3,), dict(stride=2, padding=1)),
    (((3, 2),), dict(stride=(2, 1))),
    ((3,), dict(stride=2, ceil_mode=True)),
    ((3,), dict(stride=2, padding=1, ceil_mode=True)),
    ((3,), dict(stride=2, padding=1, count_include_pad=False)),
    ((3,), dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((3,), dict(padding=1, divisor_override=2)),
    (((2, 4),), dict(stride=(1, 3), padding=(1, 2), divisor_override=5, ceil_mode=True)),
]


@pytest.mark.parametrize("args,kwargs", AVGPOOL_CONFIGS, ids=_ids(AVGPOOL_CONFIGS))
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7)], ids=["batched", "unbatched"])
def test_avg_pool2d_matches_torch(backend, args, kwargs, shape):
    ours, ref = twins("AvgPool2d", *args, **kwargs)
    out = check_forward_backward(ours, ref, torch.randn(shape))
    assert out.dim() == len(shape)


@pytest.mark.parametrize("args,kwargs", AVGPOOL_CONFIGS, ids=_ids(AVGPOOL_CONFIGS))
def test_avg_pool2d_channels_last(backend, args, kwargs):
    ours, ref = twins("AvgPool2d", *args, **kwargs)
    check_forward_backward(ours, ref, torch.randn(2, 3, 9, 11).to(memory_format=torch.channels_last))


def test_avg_pool2d_float64(backend):
    ours, ref = twins("AvgPool2d", 3, stride=2, padding=1, count_include_pad=False)
    y = check_forward_backward(ours, ref, torch.randn(2, 3, 7, 7, dtype=torch.float64))
    assert y.dtype == torch.float64


# ------------------------------------------- construction, repr, init, state

CONSTRUCTIONS = (
    [("Conv2d", a, k) for a, k in CONV_CONFIGS]
    + [("ConvTranspose2d", a, k) for a, k in CONVT_CONFIGS]
    + [("MaxPool2d", a, k) for a, k in MAXPOOL_CONFIGS]
    + [("AvgPool2d", a, k) for a, k in AVGPOOL_CONFIGS]
)
CONSTRUCTION_IDS = [f"{n}{a}-{k}" for n, a, k in CONSTRUCTIONS]


@pytest.mark.parametrize("name,args,kwargs", CONSTRUCTIONS, ids=CONSTRUCTION_IDS)
def test_repr_attributes_and_parameters_match_torch(name, args, kwargs):
    ours, ref = twins(name, *args, **kwargs)
    assert repr(ours) == repr(ref)
    assert ours.extra_repr() == ref.extra_repr()
    assert isinstance(ours, PAIRS[name][1])
    assert type(ours).__name__ == type(ref).__name__
    attributes = {k: v for k, v in vars(ref).items() if not k.startswith("_")}
    assert {k: v for k, v in vars(ours).items() if not k.startswith("_")} == attributes
    for private in ("_reversed_padding_repeated_twice",):
        assert getattr(ours, private, None) == getattr(ref, private, None)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert_same_params(ours, ref)  # identical init under the same seed
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_repr_examples():
    assert repr(torchconv.Conv2d(3, 8, 3)) == "Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))"
    assert (
        repr(torchconv.Conv2d(4, 8, (3, 5), stride=2, padding=1, groups=2, bias=False, padding_mode="reflect"))
        == "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), groups=2, bias=False, padding_mode=reflect)"
    )
    assert repr(torchconv.ConvTranspose2d(3, 8, 3, stride=2, output_padding=1)) == (
        "ConvTranspose2d(3, 8, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1))"
    )
    assert repr(torchconv.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(torchconv.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(torch.nn.Sequential(torchconv.Conv2d(1, 2, 3))) == repr(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))


def test_parameter_names_and_shapes():
    conv = torchconv.Conv2d(4, 6, (3, 5), groups=2)
    assert [(n, tuple(p.shape)) for n, p in conv.named_parameters()] == [("weight", (6, 2, 3, 5)), ("bias", (6,))]
    convt = torchconv.ConvTranspose2d(4, 6, (3, 5), groups=2)
    assert [(n, tuple(p.shape)) for n, p in convt.named_parameters()] == [("weight", (4, 3, 3, 5)), ("bias", (6,))]
    assert [n for n, _ in torchconv.Conv2d(1, 1, 1, bias=False).named_parameters()] == ["weight"]
    assert torchconv.Conv2d(1, 1, 1, bias=False).bias is None
    assert list(torchconv.MaxPool2d(2).parameters()) == []
    assert list(torchconv.AvgPool2d(2).parameters()) == []


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d"])
def test_identical_init_and_reset_parameters(name):
    for seed in (0, 1, 99):
        ours, ref = twins(name, 6, 4, (3, 2), groups=2, seed=seed)
        assert_same_params(ours, ref)
    torch.manual_seed(7)
    ours.reset_parameters()
    torch.manual_seed(7)
    ref.reset_parameters()
    assert_same_params(ours, ref)
    # the bias bound of torch's _ConvNd.reset_parameters
    fan_in = ours.weight[0].numel()
    assert ours.bias.abs().max() <= 1 / fan_in**0.5


@pytest.mark.parametrize(
    "name,args,kwargs",
    [
        ("Conv2d", (4, 6, 3), dict(groups=2, padding_mode="circular", padding=1)),
        ("Conv2d", (4, 6, 3), dict(bias=False)),
        ("ConvTranspose2d", (4, 6, 3), dict(stride=2, output_padding=1)),
    ],
)
def test_state_dict_loads_both_ways(backend, name, args, kwargs):
    ours_cls, torch_cls = PAIRS[name]
    ref = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)  # different (unseeded) weights
    ours.load_state_dict(ref.state_dict())  # torch -> torchconv, strict
    check_forward_backward(ours, ref, torch.randn(2, 4, 6, 6))

    ours2 = ours_cls(*args, **kwargs)
    ref2 = torch_cls(*args, **kwargs)
    ref2.load_state_dict(ours2.state_dict())  # torchconv -> torch, strict
    check_forward_backward(ours2, ref2, torch.randn(2, 4, 6, 6))


def test_save_load_and_deepcopy(backend):
    conv = torchconv.Conv2d(3, 4, 3, padding=1)
    buffer = io.BytesIO()
    torch.save(conv, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is torchconv.Conv2d
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(loaded(x), conv(x))
    clone = copy.deepcopy(conv)
    assert type(clone) is torchconv.Conv2d
    torch.testing.assert_close(clone(x), conv(x))


def test_module_paths():
    assert torchconv.nn.Conv2d is torchconv.Conv2d
    assert torchconv.nn.ConvTranspose2d is torchconv.ConvTranspose2d
    assert torchconv.nn.MaxPool2d is torchconv.MaxPool2d
    assert torchconv.nn.AvgPool2d is torchconv.AvgPool2d
    for cls in PAIRS.values():
        assert cls[0].__module__ == "torchconv.nn"
        assert "drop-in replacement" in cls[0].__doc__
        for section in ("Args:", "Shape:", "Examples::"):
            assert section in cls[0].__doc__


def test_forward_uses_torchconv_ops(monkeypatch):
    # The layers must not fall back to torch.nn.functional's conv/pool ops.
    import torch.nn.functional as F

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.nn.functional op called")

    for op in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "unfold", "fold"):
        monkeypatch.setattr(F, op, forbidden)
    monkeypatch.setattr(torch, "conv2d", forbidden)
    monkeypatch.setattr(torch, "conv_transpose2d", forbidden)
    x = torch.randn(1, 3, 8, 8)
    torchconv.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")(x)
    torchconv.Conv2d(3, 4, 3, padding="same")(x)
    torchconv.ConvTranspose2d(3, 4, 3, stride=2)(x, output_size=[18, 18])
    torchconv.MaxPool2d(2, return_indices=True)(x)
    torchconv.AvgPool2d(2)(x)


def test_torch_compile(backend):
    ours, ref = twins("Conv2d", 3, 4, 3, padding=1)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(compiled(x), ref(x), **TOL)


# --------------------------------------------------------- constructor errors

CONSTRUCTOR_ERRORS = [
    ("Conv2d", (4, 4, 3), dict(groups=0), "groups must be a positive integer"),
    ("Conv2d", (4, 4, 3), dict(groups=-1), "groups must be a positive integer"),
    ("Conv2d", (3, 4, 3), dict(groups=2), "in_channels must be divisible by groups"),
    ("Conv2d", (4, 3, 3), dict(groups=2), "out_channels must be divisible by groups"),
    ("Conv2d", (4, 4, 3), dict(padding="full"), r"Invalid padding string 'full', should be one of \{"),
    ("Conv2d", (4, 4, 3), dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
    ("Conv2d", (4, 4, 3), dict(padding="same", stride=(1, 2)), "padding='same' is not supported for strided convolutions"),
    ("Conv2d", (4, 4, 3), dict(padding_mode="mirror"), r"padding_mode must be one of \{.*\}, but got padding_mode='mirror'"),
    ("ConvTranspose2d", (4, 4, 3), dict(padding_mode="reflect"), 'Only "zeros" padding mode is supported for ConvTranspose2d'),
    ("ConvTranspose2d", (4, 4, 3), dict(padding_mode="circular"), 'Only "zeros" padding mode is supported for ConvTranspose2d'),
    ("ConvTranspose2d", (4, 4, 3), dict(groups=0), "groups must be a positive integer"),
    ("ConvTranspose2d", (3, 4, 3), dict(groups=2), "in_channels must be divisible by groups"),
    ("ConvTranspose2d", (4, 3, 3), dict(groups=2), "out_channels must be divisible by groups"),
]


@pytest.mark.parametrize(
    "name,args,kwargs,message", CONSTRUCTOR_ERRORS, ids=[f"{n}-{k}" for n, _, k, _ in CONSTRUCTOR_ERRORS]
)
def test_constructor_errors_match_torch(name, args, kwargs, message):
    ours_cls, torch_cls = PAIRS[name]
    with pytest.raises(ValueError, match=message) as torch_error:
        torch_cls(*args, **kwargs)
    with pytest.raises(ValueError, match=message) as our_error:
        ours_cls(*args, **kwargs)
    assert str(our_error.value) == str(torch_error.value)


@pytest.mark.parametrize(
    "name,args,kwargs",
    [
        ("Conv2d", (3, 4, 3), dict(stride=0)),
        ("Conv2d", (3, 4, 3), dict(padding=-1)),
        ("Conv2d", (3, 4, 3), dict(dilation=0)),
        ("ConvTranspose2d", (3, 4, 3), dict(stride=2, output_padding=2)),
        ("MaxPool2d", (3,), dict(padding=2)),
        ("MaxPool2d", (3,), dict(stride=0)),
        ("AvgPool2d", (3,), dict(padding=2)),
        ("AvgPool2d", (2,), dict(divisor_override=0)),
    ],
)
def test_bad_arguments_fail_at_forward_like_torch(backend, name, args, kwargs):
    # torch only checks these when the layer runs; so do we, with the same exception type.
    ours, ref = twins(name, *args, **kwargs)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(Exception) as torch_error:
        ref(x)
    with pytest.raises(type(torch_error.value)):
        ours(x)


@pytest.mark.parametrize(
    "name,args,shape",
    [
        ("Conv2d", (3, 4, 3), (1, 5, 8, 8)),  # wrong channel count
        ("Conv2d", (3, 4, 9), (1, 3, 4, 4)),  # kernel larger than input
        ("ConvTranspose2d", (3, 4, 3), (1, 5, 8, 8)),
        ("Conv2d", (3, 4, 3), (8, 8)),  # 2-d input
        ("MaxPool2d", (3,), (1, 3, 2, 2)),  # output would be empty
    ],
)
def test_bad_inputs_fail_like_torch(backend, name, args, shape):
    ours, ref = twins(name, *args)
    x = torch.randn(shape)
    with pytest.raises(Exception) as torch_error:
        ref(x)
    with pytest.raises(type(torch_error.value)):
        ours(x)


def test_conv2d_layer_without_input_channels(backend):
    """torch returns a tensor with no channels (not C_out channels of bias)
    and zero gradients for weight and bias."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(0, 4, 3, padding=1)
    converted = torchconv.convert(layer)
    x = torch.randn(2, 0, 5, 5, requires_grad=True)
    got, expected = converted(x), layer(x)
    assert got.shape == expected.shape == (2, 0, 5, 5)
    got_grads = torch.autograd.grad(got.sum(), (x, converted.weight, converted.bias))
    expected_grads = torch.autograd.grad(expected.sum(), (x, layer.weight, layer.bias))
    for g, e in zip(got_grads, expected_grads):
        assert g.shape == e.shape and torch.equal(g, e)
