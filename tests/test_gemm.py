"""The CPU kernels' GEMM (csrc/cpu/gemm.h) against a float64 product.

``torch.ops.torchconv_cpp.gemm`` (csrc/cpu/gemm_op.cpp) runs the one GEMM
entry the convolution kernels call, ``c = alpha * op(a) @ op(b) + beta * c``
in place, at each CPU capability level the machine supports (the
``capability`` fixture): the BLAS torch carries (default, avx2), this
project's AVX-512 GEMM (avx512) and, for bfloat16 operands, its AVX512-BF16
GEMM (avx512_bf16).

Shapes: every edge size of the micro-tile and panels (1, primes, 8 +- 1,
16 +- 1, 48 +- 1) in all transposes; random shapes up to several K blocks
and N blocks, with every kind of alpha and beta and leading dimensions
larger than the width; the convolutions' own products; and products at
the block boundaries (K around the float64 and float32 K blocks, M around
the largest M that reads B in place, a B whose rows are 4 KiB apart). Each
at one thread and two (the product split over blocks of C).

Each element of the result must be within ``tolerance(dtype)`` (the
package's table, torchconv.testing) of the float64 product, relative to
``sum_k |alpha a_ik b_kj| + |beta c_ij|``: the error bound of a sum of that
many terms whatever their order. beta == 0 must not read c (it holds NaN
here), alpha == 0 must not read a or b (NaN too), and the columns of a
wider c past its width must stay untouched.
"""

import random

import pytest
import torch

import torchconv
from torchconv.testing import tolerance

from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (m, n, k, transpose_a, transpose_b, alpha, beta, pad): pad is how much
# wider than its width each stored matrix is (its leading dimension).
EDGE = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 47, 48, 49, 63, 97]


def _cases():
    rng = random.Random(0)
    edge_sizes = []
    # Edge sizes in all transposes (k also hits the 8-wide packing remainders).
    for m in [0, 1, 3, 7, 8, 9, 17]:
        for n in [0, 1, 15, 16, 17, 47, 48, 49, 97]:
            for k in [0, 1, 7, 8, 9, 33]:
                edge_sizes.append((m, n, k, rng.random() < 0.5, rng.random() < 0.5, 1.0, 0.0, rng.choice([0, 3])))
    # Random shapes, k > 512 (several K blocks) and n > 480 at large k
    # (several N blocks) included, every kind of alpha and beta, strided operands.
    random_shapes = []
    for _ in range(150):
        m = rng.choice(EDGE + [rng.randint(1, 300)])
        n = rng.choice(EDGE + [rng.randint(1, 1200)])
        k = rng.choice(EDGE + [rng.randint(1, 1100)])
        alpha = rng.choice([1.0, -0.7, 0.0])
        beta = rng.choice([0.0, 1.0, 0.5])
        random_shapes.append((m, n, k, rng.random() < 0.5, rng.random() < 0.5, alpha, beta, rng.choice([0, 1, 5, 16])))
    # The convolutions' products (forward, input and weight gradients), every transpose.
    conv_shapes = [
        (m, n, k, ta, tb, 1.0, 0.0, 0)
        for (m, n, k) in [(64, 3136, 576), (256, 784, 1152), (1024, 196, 256), (32, 784, 9),
                          (576, 3136, 64), (64, 576, 3136), (24, 2000, 1500)]
        for ta in (False, True)
        for tb in (False, True)
    ]
    # Block boundaries: k around the K blocks (256 doubles, 512 floats), m
    # around the largest m that reads B in place (256), n = 1024 (rows of B
    # 4 KiB apart in float32: always packed) and n = 24 (one float64 panel).
    block_edges = [
        (m, n, k, ta, tb, 1.0, 0.5, 0)
        for m in (256, 257)
        for n in (24, 1024)
        for k in (255, 257, 513)
        for ta, tb in ((False, False), (True, True))
    ]
    return {"edge_sizes": edge_sizes, "random_shapes": random_shapes, "conv_shapes": conv_shapes,
            "block_edges": block_edges}


CASES = _cases()


def _stored(rows, cols, dtype, pad, generator):
    """A rows x cols matrix with unit column stride and rows cols + pad apart."""
    return torch.randn(rows, cols + pad, dtype=dtype, generator=generator)[:, :cols]


def _storage(view, pad):
    """The whole padded matrix behind a view made by _stored."""
    return view.as_strided((view.size(0), view.size(1) + pad), (view.size(1) + pad, 1))


def _failures(case, dtype, generator):
    """What went wrong with `case`, at one thread and at two (empty if nothing).
    Half operands (`dtype` float16 or bfloat16) go with a float32 c: the GEMM
    of the half convolutions, whose sums are float32 ones."""
    m, n, k, ta, tb, alpha, beta, pad = case
    a = _stored(k, m, dtype, pad, generator) if ta else _stored(m, k, dtype, pad, generator)
    b = _stored(n, k, dtype, pad, generator) if tb else _stored(k, n, dtype, pad, generator)
    c_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    c = _stored(m, n, c_dtype, pad, generator)
    if alpha == 0:  # must not be read
        a.fill_(float("nan"))
        b.fill_(float("nan"))
    if beta == 0:  # must not be read
        c.fill_(float("nan"))

    expected = torch.zeros(m, n, dtype=torch.float64)
    scale = torch.zeros(m, n, dtype=torch.float64)
    if alpha != 0:
        op_a, op_b = (a.t() if ta else a).double(), (b.t() if tb else b).double()
        expected += alpha * (op_a @ op_b)
        scale += abs(alpha) * (op_a.abs() @ op_b.abs())
    if beta != 0:
        expected += beta * c.double()
        scale += abs(beta) * c.double().abs()
    bound = tolerance(c_dtype) * scale + 1e-30  # the sums are in c's dtype

    failures = []
    threads_before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            result = _storage(c, pad).clone()[:, :n]
            torch.ops.torchconv_cpp.gemm(a, b, result, ta, tb, alpha, beta)
            error = (result.double() - expected).abs()
            if not (torch.isfinite(result).all() and (error <= bound).all()):
                worst = (error / bound).nan_to_num(float("inf")).max().item() if result.numel() else 0.0
                failures.append(f"{case}, {threads} threads: error {worst:.3g} times the bound")
            elif not torch.equal(_storage(result, pad)[:, n:], _storage(c, pad)[:, n:]):
                failures.append(f"{case}, {threads} threads: wrote past c's width")
    finally:
        torch.set_num_threads(threads_before)
    return failures


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("group", list(CASES))
def test_gemm_matches_float64_product(group, dtype):
    generator = torch.Generator().manual_seed(0)
    failures = [f for case in CASES[group] for f in _failures(case, dtype, generator)]
    assert not failures, f"{len(failures)} failures in {len(CASES[group])} {group} cases:\n" + "\n".join(failures[:10])


def test_gemm_refuses_operands_that_do_not_fit():
    gemm = torch.ops.torchconv_cpp.gemm
    a, b, c = torch.randn(3, 4), torch.randn(4, 5), torch.empty(3, 5)
    with pytest.raises(RuntimeError, match="does not give c's size"):
        gemm(a, torch.randn(5, 4), c, False, False, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="unit column stride"):
        gemm(a, torch.randn(5, 4).t(), c, False, False, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="dtype"):
        gemm(a.double(), b, c, False, False, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        gemm(a.half(), b.half(), c.half(), False, False, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="both half with a float32 c"):
        gemm(a.bfloat16(), b.half(), c, False, False, 1.0, 0.0)
