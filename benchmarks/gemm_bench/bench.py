"""Correctness tests and benchmark for csrc/cpu/gemm.{h,cpp} versus torch.mm.

    python benchmarks/gemm_bench/bench.py            # tests, then benchmark
    python benchmarks/gemm_bench/bench.py --test     # tests only
    python benchmarks/gemm_bench/bench.py --bench --pairs 31
    python benchmarks/gemm_bench/bench.py --no-march # build without -march=native
                                                     # (exercises the runtime-dispatch build)

Timing: each sample runs `reps` back-to-back products in a C++ loop (~10 ms),
ours and torch.mm alternate A B A B, and the reported numbers are medians
over all pairs (GFLOP/s) and the median of the per-pair time ratios.
"""
import argparse
import os
import random
import statistics
import sys

import torch
from torch.utils.cpp_extension import load

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.normpath(os.path.join(HERE, "..", "..", "csrc", "cpu"))


def build(march):
    # -fopenmp as in setup.py: without it at::parallel_for compiles to a
    # serial loop (torch's libgomp serves the extension too).
    flags = ["-O3", "-std=c++17", "-fopenmp"] + (["-march=native"] if march else [])
    return load(
        name="torchconv_gemm_bench" + ("" if march else "_generic"),
        sources=[os.path.join(HERE, "gemm_ext.cpp"), os.path.join(CSRC, "gemm.cpp")],
        extra_include_paths=[CSRC],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


# ---------------------------------------------------------------- tests --

def stored(rows, cols, dtype, pad):
    """A rows x cols matrix with unit column stride and row stride cols + pad."""
    base = torch.randn(rows, cols + pad, dtype=dtype)
    return base[:, :cols]


def full(view, pad):
    """The padded storage behind a view made by stored()."""
    return view.as_strided((view.size(0), view.size(1) + pad), (view.size(1) + pad, 1))


def check_one(ext, impl, M, N, K, ta, tb, alpha, beta, dtype, pad):
    a = stored(K, M, dtype, pad) if ta else stored(M, K, dtype, pad)
    b = stored(N, K, dtype, pad) if tb else stored(K, N, dtype, pad)
    c = stored(M, N, dtype, pad)
    if beta == 0:
        c.fill_(float("nan"))  # beta == 0 must not read C
    c0 = c.clone()
    pad_before = full(c, pad)[:, N:].clone() if pad and M and N else None
    ext.gemm(impl, a, b, c, ta, tb, alpha, beta)

    opa = (a.t() if ta else a).double()
    opb = (b.t() if tb else b).double()
    ref = alpha * (opa @ opb)
    scale = abs(alpha) * (opa.abs() @ opb.abs())
    if beta != 0:
        ref += beta * c0.double()
        scale += abs(beta) * c0.double().abs()
    # Error bound relative to sum_k |a_ik b_kj| (the K-scaled magnitude).
    rtol = 1e-5 if dtype == torch.float32 else 1e-13
    err = (c.double() - ref).abs()
    ok = bool(torch.isfinite(c).all()) and bool((err <= rtol * scale + 1e-30).all())
    if not ok:
        worst = (err / (scale + 1e-30)).max().item() if c.numel() else 0.0
        print(f"FAIL {impl} {dtype} M={M} N={N} K={K} transA={ta} transB={tb} "
              f"alpha={alpha} beta={beta} pad={pad}: worst rel err {worst:.3g}")
    # The padding columns of C must be untouched.
    if pad and M and N and not torch.equal(full(c, pad)[:, N:], pad_before):
        print(f"FAIL {impl} M={M} N={N} K={K}: wrote outside C")
        ok = False
    return ok


def run_tests(ext):
    assert ext.gemm_available(), "AVX-512 path not available on this machine"
    rng = random.Random(0)
    torch.manual_seed(0)
    edge = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 47, 48, 49, 63, 97]
    cases = []
    # Edge sizes x all transposes (K also hits the 8-wide pack remainders).
    for M in [0, 1, 3, 7, 8, 9, 17]:
        for N in [0, 1, 15, 16, 17, 47, 48, 49, 97]:
            for K in [0, 1, 7, 8, 9, 33]:
                cases.append((M, N, K, rng.random() < 0.5, rng.random() < 0.5,
                              1.0, 0.0, rng.choice([0, 3])))
    # Random shapes, including K > 512 (several K blocks) and N > 480 at
    # large K (several N blocks), all alpha/beta kinds, strided operands.
    for _ in range(150):
        M = rng.choice(edge + [rng.randint(1, 300)])
        N = rng.choice(edge + [rng.randint(1, 1200)])
        K = rng.choice(edge + [rng.randint(1, 1100)])
        alpha = rng.choice([1.0, -0.7, 0.0])
        beta = rng.choice([0.0, 1.0, 0.5])
        cases.append((M, N, K, rng.random() < 0.5, rng.random() < 0.5, alpha, beta,
                      rng.choice([0, 1, 5, 16])))
    # Conv-shaped products with every transpose combination.
    for (M, N, K) in [(64, 3136, 576), (256, 784, 1152), (1024, 196, 256), (32, 784, 9),
                      (576, 3136, 64), (64, 576, 3136), (24, 2000, 1500)]:
        for ta in (False, True):
            for tb in (False, True):
                cases.append((M, N, K, ta, tb, 1.0, 0.0, 0))

    total = failed = 0
    for impl in ("ours", "ours_parallel", "portable"):
        for dtype in (torch.float32, torch.float64):
            for (M, N, K, ta, tb, alpha, beta, pad) in cases:
                if impl == "portable" and M * N * K > 2_000_000:
                    continue  # the reference loop nest is slow; small shapes cover it
                for nthreads in ((1, 2) if impl == "ours_parallel" else (1,)):
                    torch.set_num_threads(nthreads)
                    total += 1
                    failed += not check_one(ext, impl, M, N, K, ta, tb, alpha, beta, dtype, pad)
    torch.set_num_threads(2)
    print(f"correctness: {total - failed}/{total} cases passed")
    return failed == 0


# ------------------------------------------------------------ benchmark --

SHAPES = [
    # (M, N, K, transA, transB, comment)
    (64, 3136, 576, False, False, "fwd 3x3 64ch 56x56"),
    (256, 784, 1152, False, False, "fwd 3x3 128->256 28x28"),
    (1024, 196, 256, False, False, "fwd 1x1 14x14"),
    (32, 784, 9, False, False, "fwd 3x3 1->32 28x28"),
    (576, 3136, 64, True, False, "grad_input W^T @ dY"),
    (64, 576, 3136, False, True, "grad_weight dY @ col^T"),
]


def bench(ext, pairs, dtype=torch.float32):
    print(f"\n{dtype}, {pairs} interleaved pairs per row. GFLOP/s: median (best) "
          f"over the pairs; ratio = median over pairs of t_mm / t_ours")
    print(f"{'threads':>7} {'M':>5} {'N':>5} {'K':>5} {'tA':>2} {'tB':>2} "
          f"{'ours':>14} {'torch.mm':>14} {'ratio':>6}  case")
    for nthreads in (1, 2):
        torch.set_num_threads(nthreads)
        impl = "ours" if nthreads == 1 else "ours_parallel"
        for (M, N, K, ta, tb, note) in SHAPES:
            a = torch.randn(K, M, dtype=dtype) if ta else torch.randn(M, K, dtype=dtype)
            b = torch.randn(N, K, dtype=dtype) if tb else torch.randn(K, N, dtype=dtype)
            c = torch.empty(M, N, dtype=dtype)
            flops = 2.0 * M * N * K
            # ~10 ms per sample at ~100 GFLOP/s.
            reps = max(1, int(1e9 / flops))
            for which in (impl, "mm"):
                ext.time_gemm(which, a, b, c, ta, tb, reps)
            ours, mm, ratio = [], [], []
            for _ in range(pairs):
                t_ours = ext.time_gemm(impl, a, b, c, ta, tb, reps)
                t_mm = ext.time_gemm("mm", a, b, c, ta, tb, reps)
                ours.append(flops * reps / t_ours / 1e9)
                mm.append(flops * reps / t_mm / 1e9)
                ratio.append(t_mm / t_ours)
            fmt = lambda v: f"{statistics.median(v):6.1f} ({max(v):5.1f})"
            print(f"{nthreads:>7} {M:>5} {N:>5} {K:>5} {int(ta):>2} {int(tb):>2} "
                  f"{fmt(ours):>14} {fmt(mm):>14} {statistics.median(ratio):6.2f}  {note}",
                  flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test", action="store_true", help="run correctness tests only")
    p.add_argument("--bench", action="store_true", help="run the benchmark only")
    p.add_argument("--pairs", type=int, default=21, help="interleaved pairs per shape")
    p.add_argument("--double", action="store_true", help="also benchmark float64")
    p.add_argument("--no-march", action="store_true",
                   help="build without -march=native (runtime-dispatch build)")
    args = p.parse_args()
    ext = build(march=not args.no_march)
    do_test = args.test or not args.bench
    do_bench = args.bench or not args.test
    if do_test and not run_tests(ext):
        sys.exit(1)
    if do_bench:
        bench(ext, args.pairs)
        if args.double:
            bench(ext, args.pairs, torch.float64)


if __name__ == "__main__":
    main()
