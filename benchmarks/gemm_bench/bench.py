"""Speed of the CPU kernels' GEMM (csrc/cpu/gemm.h) against torch.mm.

    python benchmarks/gemm_bench/bench.py --pairs 31
    python benchmarks/gemm_bench/bench.py --double   # float64 too
    python benchmarks/gemm_bench/bench.py --no-march # build without -march=native
                                                     # (the runtime-dispatch build)

On CPUs with AVX-512 the GEMM is this project's (csrc/cpu/gemm_avx512.cpp);
elsewhere it is the BLAS torch.mm uses too, and the ratios say nothing.
Its correctness tests are tests/test_gemm.py.

Timing: each sample runs `reps` back-to-back products in a C++ loop (~10 ms),
the GEMM and torch.mm alternate A B A B, and the reported numbers are medians
over all pairs (GFLOP/s) and the median of the per-pair time ratios. One
thread times the single-threaded GEMM, two its split over blocks of C.
"""
import argparse
import os
import statistics

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
        sources=[os.path.join(HERE, "gemm_ext.cpp"), os.path.join(CSRC, "gemm.cpp"),
                 os.path.join(CSRC, "gemm_avx512.cpp"), os.path.join(CSRC, "gemm_avx512_bf16.cpp"),
                 os.path.join(CSRC, "capability.cpp")],
        extra_include_paths=[CSRC],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


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
          f"over the pairs; ratio = median over pairs of t_mm / t_gemm")
    print(f"{'threads':>7} {'M':>5} {'N':>5} {'K':>5} {'tA':>2} {'tB':>2} "
          f"{'gemm':>14} {'torch.mm':>14} {'ratio':>6}  case")
    for nthreads in (1, 2):
        torch.set_num_threads(nthreads)
        for (M, N, K, ta, tb, note) in SHAPES:
            a = torch.randn(K, M, dtype=dtype) if ta else torch.randn(M, K, dtype=dtype)
            b = torch.randn(N, K, dtype=dtype) if tb else torch.randn(K, N, dtype=dtype)
            c = torch.empty(M, N, dtype=dtype)
            flops = 2.0 * M * N * K
            # ~10 ms per sample at ~100 GFLOP/s.
            reps = max(1, int(1e9 / flops))
            for which in ("gemm", "mm"):
                ext.time_gemm(which, a, b, c, ta, tb, reps)
            ours, mm, ratio = [], [], []
            for _ in range(pairs):
                t_gemm = ext.time_gemm("gemm", a, b, c, ta, tb, reps)
                t_mm = ext.time_gemm("mm", a, b, c, ta, tb, reps)
                ours.append(flops * reps / t_gemm / 1e9)
                mm.append(flops * reps / t_mm / 1e9)
                ratio.append(t_mm / t_gemm)
            fmt = lambda v: f"{statistics.median(v):6.1f} ({max(v):5.1f})"
            print(f"{nthreads:>7} {M:>5} {N:>5} {K:>5} {int(ta):>2} {int(tb):>2} "
                  f"{fmt(ours):>14} {fmt(mm):>14} {statistics.median(ratio):6.2f}  {note}",
                  flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=21, help="interleaved pairs per shape")
    p.add_argument("--double", action="store_true", help="also benchmark float64")
    p.add_argument("--no-march", action="store_true",
                   help="build without -march=native (runtime-dispatch build)")
    args = p.parse_args()
    ext = build(march=not args.no_march)
    level = ext.capability()
    print(f"torchconv capability {level} (TORCHCONV_CPU_CAPABILITY lowers it), "
          f"ATen {torch.backends.cpu.get_cpu_capability()}")
    if level in ("default", "avx2"):
        print("note: at this level the GEMM is torch's BLAS, the same as torch.mm's")
    bench(ext, args.pairs)
    if args.double:
        bench(ext, args.pairs, torch.float64)


if __name__ == "__main__":
    main()
