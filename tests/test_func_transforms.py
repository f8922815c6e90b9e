"""Forward-mode AD and the torch.func transforms give torch's answers.

The ops' autograd.Functions carry jvp formulas (and let torch.func generate
vmap rules), so jvp, forward_ad duals, jacfwd (vmap over jvp), grad, jacrev
and vmap all agree with the same transforms of torch.nn.functional.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jacfwd, jacrev, jvp, vmap

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
