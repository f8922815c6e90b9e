"""Forward-mode AD and the torch.func transforms give torch's answers.

The ops' autograd.Functions carry jvp formulas and batching rules
(torchconv/_vmap.py), so jvp, forward_ad duals, jacfwd (vmap over jvp), grad,
jacrev, vmap, and their compositions to any order (hessian, jacfwd of jacrev,
vmap of vmap, vmap of grad) all agree with the same transforms of
torch.nn.functional, without vmap's slow per-example fallback (and its
UserWarning), also for direct ``torch.ops.torchconv.*`` calls.
"""

import contextlib
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

import torchconv

DT = torch.float64


def _case(name):
    x = torch.randn(2, 3, 7, 6, dtype=DT)
    if name == "conv2d":
        w, b = torch.randn(4, 3, 3, 2, dtype=DT), torch.randn(4, dtype=DT)
        kw = dict(stride=2, padding=1, dilation=(1, 2))
        return (lambda x, w, b: torchconv.conv2d(x, w, b, **kw)), (lambda x, w, b: F.conv2d(x, w, b, **kw)), (x, w, b)
    if name == "conv_transpose2d":
        w, b = torch.randn(3, 2, 3, 3, dtype=DT), torch.randn(2, dtype=DT)
        kw = dict(stride=2, padding=1, output_padding=1)
        return (
            (lambda x, w, b: torchconv.conv_transpose2d(x, w, b, **kw)),
            (lambda x, w, b: F.conv_transpose2d(x, w, b, **kw)),
            (x, w, b),
        )
    if name == "max_pool2d":
        kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        return (lambda x: torchconv.max_pool2d(x, **kw)), (lambda x: F.max_pool2d(x, **kw)), (x,)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    return (lambda x: torchconv.avg_pool2d(x, **kw)), (lambda x: F.avg_pool2d(x, **kw)), (x,)


OPS = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"]


@pytest.mark.parametrize("name", OPS)
def test_jvp(backend, name):
    ours, theirs, primals = _case(name)
    tangents = tuple(torch.randn_like(p) for p in primals)
    out, tangent = jvp(ours, primals, tangents)
    expected_out, expected_tangent = jvp(theirs, primals, tangents)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(tangent, expected_tangent)


@pytest.mark.parametrize("name", OPS)
def test_forward_ad_dual_tensors(backend, name):
    ours, theirs, primals = _case(name)
    tangents = [torch.randn_like(p) for p in primals]
    fwd_ad = torch.autograd.forward_ad
    results = []
    for fn in (ours, theirs):
        with fwd_ad.dual_level():
            duals = [fwd_ad.make_dual(p, t) for p, t in zip(primals, tangents)]
            results.append(fwd_ad.unpack_dual(fn(*duals)).tangent)
    assert results[0] is not None
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("name", OPS)
def test_only_some_inputs_have_tangents(backend, name):
    ours, theirs, primals = _case(name)
    fwd_ad = torch.autograd.forward_ad
    for i in range(len(primals)):
        results = []
        for fn in (ours, theirs):
            with fwd_ad.dual_level():
                args = list(primals)
                args[i] = fwd_ad.make_dual(primals[i], torch.ones_like(primals[i]))
                results.append(fwd_ad.unpack_dual(fn(*args)).tangent)
        torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("name", OPS)
def test_grad_jacrev_jacfwd(backend, name):
    ours, theirs, primals = _case(name)
    argnums = tuple(range(len(primals)))

    def loss(fn):
        return lambda *p: fn(*p).square().sum()

    for a, b in zip(grad(loss(ours), argnums)(*primals), grad(loss(theirs), argnums)(*primals)):
        torch.testing.assert_close(a, b)
    small = (primals[0][:1, :, :5, :5], *primals[1:])  # a Jacobian per input element: keep it small
    torch.testing.assert_close(jacrev(ours)(*small), jacrev(theirs)(*small))
    torch.testing.assert_close(jacfwd(ours)(*small), jacfwd(theirs)(*small))
    # Hessian-vector products: forward over reverse.
    torch.testing.assert_close(jacfwd(grad(loss(ours)))(*small), jacfwd(grad(loss(theirs)))(*small))


@pytest.mark.parametrize("name", OPS)
def test_vmap_over_samples(backend, name):
    ours, theirs, primals = _case(name)
    in_dims = (0,) + (None,) * (len(primals) - 1)
    torch.testing.assert_close(vmap(ours, in_dims)(*primals), vmap(theirs, in_dims)(*primals))


# ----------------------------------------------------------- any order, vmap rules


@contextlib.contextmanager
def no_user_warning():
    """Fails on any UserWarning inside, e.g. vmap's "There is a performance
    drop because we have not yet implemented the batching rule", and on any
    use of vmap's per-example fallback: it is made an error here, as some
    calls of it (a custom op called directly) print the warning on stderr
    rather than through Python's warnings."""
    fallback_was_enabled = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(fallback_was_enabled)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert not messages, messages


def assert_exact(actual, expected):
    """float64 agreement to 1e-10 (pytrees of tensors)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


def _pair(name, groups=2):
    """(ours, theirs, x, weight): ``f(x, weight)`` for the convolutions (with
    ``groups``), ``f(x)`` for the pools (weight None); small float64 shapes."""
    x = torch.randn(1, 4, 5, 5, dtype=DT)
    if name == "conv2d":
        kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=groups)
        w = torch.randn(6, 4 // groups, 3, 2, dtype=DT)
        return (lambda x, w: torchconv.conv2d(x, w, **kw)), (lambda x, w: F.conv2d(x, w, **kw)), x, w
    if name == "conv_transpose2d":
        kw = dict(stride=2, padding=1, output_padding=1, groups=groups)
        w = torch.randn(4, 6 // groups, 3, 3, dtype=DT)
        return (lambda x, w: torchconv.conv_transpose2d(x, w, **kw)), (lambda x, w: F.conv_transpose2d(x, w, **kw)), x, w
    ours, theirs, _ = _case(name)
    return ours, theirs, x, None


def _scalar(fn):
    """A non-quadratic scalar loss, so that every derivative order is non-trivial."""
    return lambda *args: fn(*args).sin().sum()


@pytest.mark.parametrize("name", OPS)
def test_hessian(backend, name):
    ours, theirs, x, w = _pair(name)
    args = (x,) if w is None else (x, w)
    with no_user_warning():
        for argnums in range(len(args)):  # w.r.t. the input, then the weight
            assert_exact(hessian(_scalar(ours), argnums)(*args), hessian(_scalar(theirs), argnums)(*args))


@pytest.mark.parametrize("name", OPS)
def test_forward_over_reverse_and_reverse_over_forward(backend, name):
    ours, theirs, x, w = _pair(name)
    x = x[:, :, :3, :3]
    args = (x,) if w is None else (x, w[:, :, :2, :2])
    argnums = tuple(range(len(args)))  # every block of the Hessian, cross terms too
    with no_user_warning():
        for outer, inner in ((jacfwd, jacrev), (jacrev, jacfwd)):
            got = outer(inner(_scalar(ours), argnums), argnums)(*args)
            assert_exact(got, outer(inner(_scalar(theirs), argnums), argnums)(*args))


@pytest.mark.parametrize("name", OPS)
def test_third_order(backend, name):
    ours, theirs, x, w = _pair(name)
    # Third derivatives w.r.t. the input (the weight held fixed): tiny, as
    # the result has x.numel() ** 3 entries.
    x = x[:, :2, :3, :3]
    args = (x,) if w is None else (x, w[:2, :1, :2, :2] if name == "conv2d" else w[:2, :, :2, :2])
    with no_user_warning():
        for third in (lambda f: jacrev(hessian(f)), lambda f: jacfwd(jacrev(jacrev(f)))):
            assert_exact(third(_scalar(ours))(*args), third(_scalar(theirs))(*args))


@pytest.mark.parametrize("name", OPS)
def test_forward_over_forward(backend, name):
    # torch runs a Function's jvp with forward-mode AD off: every part of a
    # jvp formula must itself be a Function for the outer level to see it.
    ours, theirs, primals = _case(name)
    inner_t = tuple(torch.randn_like(p) for p in primals)
    outer_t = tuple(torch.randn_like(p) for p in primals)

    def second(fn):
        f = lambda *args: fn(args[0].sin(), *args[1:]).cos()  # noqa: E731
        return jvp(lambda *args: jvp(f, args, inner_t)[1], primals, outer_t)[1]

    with no_user_warning():
        assert_exact(second(ours), second(theirs))


@pytest.mark.parametrize("name", OPS)
def test_forward_over_forward_over_reverse(backend, name):
    ours, theirs, x, w = _pair(name)
    x = x[:, :2, :3, :3]
    args = (x,) if w is None else (x, w[:2, :1, :2, :2] if name == "conv2d" else w[:2, :, :2, :2])
    third = lambda f: jacfwd(jacfwd(jacrev(f)))  # noqa: E731
    with no_user_warning():
        assert_exact(third(_scalar(ours))(*args), third(_scalar(theirs))(*args))


def _conv_batch(name, groups, batch=3):
    """(ours, theirs, (x, w, b)) for f(x, w, b), each operand with a leading
    dimension of ``batch`` examples to vmap over."""
    _, _, x, w = _pair(name, groups)
    x = torch.randn(batch, 2, *x.shape[1:], dtype=DT)
    w = torch.randn(batch, *w.shape, dtype=DT)
    out_channels = w.shape[1] if name == "conv2d" else w.shape[2] * groups
    b = torch.randn(batch, out_channels, dtype=DT)
    ours = {
        "conv2d": lambda x, w, b: torchconv.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=groups),
        "conv_transpose2d": lambda x, w, b: torchconv.conv_transpose2d(
            x, w, b, stride=2, padding=1, output_padding=1, groups=groups
        ),
    }[name]
    theirs = {
        "conv2d": lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=groups),
        "conv_transpose2d": lambda x, w, b: F.conv_transpose2d(
            x, w, b, stride=2, padding=1, output_padding=1, groups=groups
        ),
    }[name]
    return ours, theirs, (x, w, b)


def _batched_at(args, dims):
    """Each operand with its example dimension moved to ``dims[i]``, or one
    example of it where ``dims[i]`` is None (not vmapped)."""
    return tuple(a[0] if d is None else a.movedim(0, d) for a, d in zip(args, dims))


# (input, weight, bias) in_dims: inputs only, weights only, both, bias alone
# or with either, and dims other than 0.
CONV_IN_DIMS = [
    (0, None, None), (None, 0, None), (0, 0, None), (0, 0, 0), (None, None, 0),
    (0, None, 0), (None, 0, 0), (2, 1, None), (4, 3, 1), (None, 2, 1),
]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_vmap_conv_operands(backend, name, groups):
    ours, theirs, args = _conv_batch(name, groups)
    with no_user_warning():
        for dims in CONV_IN_DIMS:
            batched = _batched_at(args, dims)
            got = vmap(ours, dims)(*batched)
            assert_exact(got, vmap(theirs, dims)(*batched))
            # The bias left out: None is no operand to batch.
            if dims[2] is None and dims[:2] != (None, None):
                assert_exact(vmap(lambda x, w: ours(x, w, None), dims[:2])(*batched[:2]),
                             vmap(lambda x, w: theirs(x, w, None), dims[:2])(*batched[:2]))


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_vmap_pool_dims(backend, name):
    ours, theirs, _ = _case(name)
    x = torch.randn(2, 3, 4, 7, 6, dtype=DT)
    with no_user_warning():
        for dim in range(4):
            assert_exact(vmap(ours, dim)(x.movedim(0, dim)), vmap(theirs, dim)(x.movedim(0, dim)))
        # max pooling's indices are batched with its values.
        kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)
        if name == "max_pool2d":
            got = vmap(lambda x: torchconv.max_pool2d(x, **kw), 1)(x.movedim(0, 1))
            expected = vmap(lambda x: F.max_pool2d(x, **kw), 1)(x.movedim(0, 1))
            assert_exact(got[0], expected[0])
            assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_nested_vmap(backend, name):
    ours, theirs, (x, w, b) = _conv_batch(name, groups=2)
    x, w, b = x[0], w[0], b[0]  # one example
    outer, inner = 2, 3

    def batched(t, shape):
        """A random tensor: ``t``'s shape with ``(dim, size)`` inserted, in order."""
        size = list(t.shape)
        for dim, n in shape:
            size.insert(dim, n)
        return torch.randn(size, dtype=DT)

    cases = [
        # (inner in_dims, outer in_dims, operands as the outer vmap gets them)
        ((0, None, None), (0, 0, 0), (batched(x, [(0, inner), (0, outer)]), batched(w, [(0, outer)]), batched(b, [(0, outer)]))),
        ((0, 0, 0), (None, 0, None), (batched(x, [(0, inner)]), batched(w, [(0, inner), (0, outer)]), batched(b, [(0, inner)]))),
        ((1, 0, None), (2, None, 0), (batched(x, [(1, inner), (2, outer)]), batched(w, [(0, inner)]), batched(b, [(0, outer)]))),
        ((None, 1, 0), (0, 2, 1), (batched(x, [(0, outer)]), batched(w, [(1, inner), (2, outer)]), batched(b, [(0, inner), (1, outer)]))),
    ]
    with no_user_warning():
        for inner_dims, outer_dims, args in cases:
            got = vmap(vmap(ours, inner_dims), outer_dims)(*args)
            assert_exact(got, vmap(vmap(theirs, inner_dims), outer_dims)(*args))


@pytest.mark.parametrize("name", OPS)
def test_vmap_of_grad_per_sample(backend, name):
    """Per-sample gradients, vmap(grad(loss)) over examples, of every operand."""
    if name in ("conv2d", "conv_transpose2d"):
        ours, theirs, (x, w, b) = _conv_batch(name, groups=2, batch=4)
        x, w, b = x[:, 0], w[0], b[0]
        args, in_dims, argnums = (x, w, b), (0, None, None), (0, 1, 2)
    else:
        ours, theirs, _ = _case(name)
        args, in_dims, argnums = (torch.randn(4, 3, 7, 6, dtype=DT),), (0,), (0,)

    def loss(fn):
        return lambda *a: fn(*a).sin().sum()

    with no_user_warning():
        got = vmap(grad(loss(ours), argnums), in_dims)(*args)
        assert_exact(got, vmap(grad(loss(theirs), argnums), in_dims)(*args))
        # ... and a gradient of the vmapped function (vmap inside grad).
        got = grad(lambda *a: vmap(ours, in_dims)(*a).sin().sum(), argnums)(*args)
        assert_exact(got, grad(lambda *a: vmap(theirs, in_dims)(*a).sin().sum(), argnums)(*args))


def test_vmap_empty_input(backend):
    w, b = torch.randn(3, 6, 4, 3, 2, dtype=DT), torch.randn(3, 6, dtype=DT)
    x = torch.randn(3, 0, 4, 5, 5, dtype=DT)
    with no_user_warning():
        for dims in [(0, None, None), (0, 0, 0), (None, 0, 0)]:
            args = _batched_at((x, w, b), dims)
            got = vmap(torchconv.conv2d, dims)(*args)
            assert got.shape == vmap(F.conv2d, dims)(*args).shape
            grads = vmap(grad(lambda *a: torchconv.conv2d(*a).sum(), (0, 1, 2)), dims)(*args)
            expected = vmap(grad(lambda *a: F.conv2d(*a).sum(), (0, 1, 2)), dims)(*args)
            assert_exact(grads, expected)


def _op_cases():
    """(torch.ops.torchconv op, its arguments, the same computed with aten)."""
    d = dict(dtype=DT)
    x, w, b = torch.randn(4, 5, 5, **d), torch.randn(6, 2, 3, 2, **d), torch.randn(6, **d)
    conv = ([2, 1], [1, 1], [1, 2])
    g = torch.randn(6, 3, 5, **d)  # conv2d's output gradient for x, w, conv, groups 2
    wt = torch.randn(4, 3, 3, 3, **d)
    window = ([3, 3], [2, 2], [1, 1], [1, 1])
    gp = torch.randn(4, 3, 3, **d)
    indices = F.max_pool2d(x, 3, 2, 1, return_indices=True)[1]
    aten = torch.ops.aten

    def conv_weight_reference(x, g):
        return aten.convolution_backward(g[None], x[None], w, None, *conv, False, [0, 0], 2, [False, True, False])[1]

    def max_pool_backward_reference(g, i):
        return torch.zeros(4, 25, **d).scatter_add(1, i.flatten(1), g.flatten(1)).view(4, 5, 5)

    return [
        (torch.ops.torchconv.conv2d, (x[None], w, b, *conv, 2),
         lambda x, w, b, *a: F.conv2d(x, w, b, *a)),
        (torch.ops.torchconv.conv_transpose2d, (x[None], wt, b, [2, 2], [1, 1], [1, 1], 2, [1, 1]),
         lambda x, w, b, s, p, o, gr, dl: F.conv_transpose2d(x, w, b, s, p, o, gr, dl)),
        (torch.ops.torchconv.conv2d_weight, (x[None], g[None], list(w.shape), *conv, 2),
         lambda x, g, *a: conv_weight_reference(x[0], g[0])),
        (torch.ops.torchconv.max_pool2d, (x[None], *window, False),
         lambda x, *a: F.max_pool2d(x, *a, return_indices=True)),
        (torch.ops.torchconv.max_pool2d_backward, (gp[None], indices[None], [5, 5], *window),
         lambda g, i, *a: max_pool_backward_reference(g[0], i[0])[None]),
        (torch.ops.torchconv.avg_pool2d, (x[None], [3, 3], [2, 2], [1, 1], False, True, None),
         lambda x, *a: F.avg_pool2d(x, *a)),
        (torch.ops.torchconv.avg_pool2d_backward, (gp[None], [5, 5], [3, 3], [2, 2], [1, 1], False, True, None),
         lambda g, size, *a: aten.avg_pool2d_backward(g, torch.empty(1, 4, *size, **d), *a)),
    ]


def test_vmap_custom_ops_directly(backend):
    """torch.ops.torchconv.* under vmap use their batching rules: every
    combination of batched and unbatched tensor operands, at dims 0 and 1."""
    batch = 3
    with no_user_warning():
        for op, args, reference in _op_cases():
            tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
            for which in itertools.product((None, 0, 1), repeat=len(tensors)):
                if all(d is None for d in which):
                    continue
                in_dims, batched = [None] * len(args), list(args)
                for i, d in zip(tensors, which):
                    if d is not None:
                        in_dims[i] = d
                        examples = torch.randn(batch, *args[i].shape, dtype=DT)
                        if args[i].dtype == torch.int64:  # max pooling's indices, of other inputs
                            inputs = torch.randn(batch, 4, 5, 5, dtype=DT)
                            examples = F.max_pool2d(inputs, 3, 2, 1, return_indices=True)[1][:, None]
                        batched[i] = examples.movedim(0, d)
                got = vmap(op, tuple(in_dims))(*batched)
                assert_exact(got, vmap(reference, tuple(in_dims))(*batched))
