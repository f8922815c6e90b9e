"""Per-call overhead of torchconv's ops on tiny tensors, against torch.nn.functional.

On tensors this small (a 1x1x4x4 input, a 3x3 kernel) the arithmetic costs
next to nothing, so the time of a call is its fixed cost: argument checks,
the backend lookup, the autograd Function, the kernel's call, the layout of
the output. That cost is what every call of a small layer pays, and what a
GPU run (whose kernels are asynchronous) pays in full.

How it measures: every case builds its inputs once; one timed region runs a
call ``--inner`` times in a row (``time.perf_counter`` around the loop), and
a pair is one region of torchconv and one of torch, the side that goes first
alternating from pair to pair. The figure of a case is the median over
``--pairs`` pairs of the ratio torchconv / torch of the two regions' times
(a ratio is immune to the slow drift of a shared machine that absolute times
suffer from); the per-call times shown are the medians of each side's region
time divided by ``--inner``. Both sides are warmed up first. Regions are
kept short (5 calls by default): on a loaded machine a long region is more
often preempted, which penalises the slower side more than its share. Torch
runs one thread (``--threads`` to change it): a tiny call uses no more, and
on a shared machine a thread pool's wake-ups add millisecond stalls to random
regions.

Three measurements per op:

* ``fwd``: the forward on inputs that do not require grad (no graph);
* ``fwd (rg)``: the forward on inputs that require grad (a graph is
  recorded, nothing runs backward);
* ``fwd+bwd``: the forward, then ``torch.autograd.grad`` of the output with
  a precomputed gradient of ones, for every input that requires grad (no
  ``.grad`` accumulation, so the region holds only the two passes).

Then whole small models at batch 1 under ``torch.inference_mode``, where
every layer pays its call's fixed cost: the MNIST example's CNN (28x28) and
torchvision's ResNet-18 at 64x64, each converted with ``torchconv.convert``
against the original (the same weights), one forward per region.

The targets the table is checked against: conv2d and conv_transpose2d at
most 1.5 times torch's forward without grad, 2.0 times with requires_grad,
1.5 times forward+backward; the poolings at most 2.0 times torch's forward
(either kind) and 1.5 times forward+backward; the models at most 1.0 times.

Usage::

    python benchmarks/bench_overhead.py                 # every op, default backend
    python benchmarks/bench_overhead.py --backend reference --pairs 100
    python benchmarks/bench_overhead.py --ops conv2d,max_pool2d --models none
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

import torchconv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capability  # noqa: E402  (benchmarks/capability.py)

KINDS = ("fwd", "fwd (rg)", "fwd+bwd")
CONV_TARGETS = {"fwd": 1.5, "fwd (rg)": 2.0, "fwd+bwd": 1.5}
POOL_TARGETS = {"fwd": 2.0, "fwd (rg)": 2.0, "fwd+bwd": 1.5}
MODEL_TARGET = 1.0
OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d")
MODELS = ("mnist_cnn", "resnet18_64")


def target(op: str, kind: str) -> float:
    return (CONV_TARGETS if op.startswith("conv") else POOL_TARGETS)[kind]


def _inputs(op: str, requires_grad: bool) -> tuple[tuple, dict]:
    """(args, kwargs) of a tiny call of ``op``, the same for both sides."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_(requires_grad)

    if op == "conv2d":
        return (randn(1, 1, 4, 4), randn(1, 1, 3, 3)), {}
    if op == "conv_transpose2d":
        return (randn(1, 1, 4, 4), randn(1, 1, 3, 3)), {}
    if op == "max_pool2d":
        return (randn(1, 1, 4, 4), 2), {}
    if op == "avg_pool2d":
        return (randn(1, 1, 4, 4), 2), {}
    raise ValueError(f"unknown op {op!r}; choose from {OPS}")


def _forward(fn: Callable, args: tuple, kwargs: dict) -> Callable[[], object]:
    return lambda: fn(*args, **kwargs)


def _forward_backward(fn: Callable, args: tuple, kwargs: dict) -> Callable[[], object]:
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grad = torch.ones_like(fn(*args, **kwargs))

    def run():
        return torch.autograd.grad(fn(*args, **kwargs), leaves, grad)

    return run


def calls(op: str, kind: str) -> tuple[Callable[[], object], Callable[[], object]]:
    """The (torchconv, torch) callables that one measurement of ``op`` times."""
    ours, theirs = getattr(torchconv, op), getattr(F, op)
    args, kwargs = _inputs(op, requires_grad=kind != "fwd")
    make = _forward_backward if kind == "fwd+bwd" else _forward
    return make(ours, args, kwargs), make(theirs, args, kwargs)


def _region(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return time.perf_counter() - start


def measure(ours: Callable, theirs: Callable, pairs: int, inner: int, warmup: int = 20) -> dict:
    """Median ratio ours/theirs over ``pairs`` interleaved pairs of regions of
    ``inner`` calls, and each side's median time per call in microseconds."""
    for _ in range(warmup):
        ours()
        theirs()
    ratios, ours_s, theirs_s = [], [], []
    for i in range(pairs):
        if i % 2:
            b = _region(theirs, inner)
            a = _region(ours, inner)
        else:
            a = _region(ours, inner)
            b = _region(theirs, inner)
        ratios.append(a / b)
        ours_s.append(a)
        theirs_s.append(b)
    return {
        "ratio": statistics.median(ratios),
        "ours_us": statistics.median(ours_s) / inner * 1e6,
        "torch_us": statistics.median(theirs_s) / inner * 1e6,
    }


def model_calls(name: str) -> tuple[Callable[[], object], Callable[[], object]]:
    """The (torchconv, torch) batch-1 inference callables of model ``name``."""
    # bench_models' builders: the same torch.nn models (torchvision's imported
    # even where a plain `import torchvision` fails beside a CPU torch).
    import bench_models  # noqa: E402  (benchmarks/bench_models.py)

    if name == "mnist_cnn":
        original, x = bench_models.MODELS["mnist_cnn"].build(), torch.randn(1, 1, 28, 28)
    elif name == "resnet18_64":
        original, x = bench_models.MODELS["resnet18"].build(), torch.randn(1, 3, 64, 64)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    original.eval()
    converted = torchconv.convert(original)  # a copy with the same weights

    def forward(model):
        def run():
            with torch.inference_mode():
                return model(x)

        return run

    return forward(converted), forward(original)


def run(ops=OPS, pairs: int = 300, inner: int = 5, out=None, models=MODELS) -> list[dict]:
    """Measures every (op, kind) and prints the table (to ``out``, default
    stdout); returns its rows."""
    out = out or sys.stdout
    rows = []
    print(f"{'op':<18} {'kind':<9} {'torchconv us':>12} {'torch us':>9} {'ratio':>6} {'target':>7}", file=out)
    measurements = [(op, kind, calls(op, kind), target(op, kind), pairs, inner) for op in ops for kind in KINDS]
    # A model's forward is milliseconds long: one per region, fewer pairs.
    measurements += [(m, "inference", model_calls(m), MODEL_TARGET, max(5, pairs // 10), 1) for m in models]
    for name, kind, sides, goal, n_pairs, n_inner in measurements:
        result = measure(*sides, pairs=n_pairs, inner=n_inner)
        mark = "ok" if result["ratio"] <= goal else "OVER"
        print(
            f"{name:<18} {kind:<9} {result['ours_us']:>12.1f} {result['torch_us']:>9.1f} "
            f"{result['ratio']:>6.2f} {'<= ' + str(goal):>7} {mark}",
            file=out,
            flush=True,
        )
        rows.append({"op": name, "kind": kind, "target": goal, **result})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300, help="interleaved pairs per measurement (default 300)")
    parser.add_argument("--inner", type=int, default=5, help="calls per timed region (default 5)")
    parser.add_argument("--backend", default=None, help="torchconv backend to run (default: the fastest available)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)}, or none")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    capability.add_argument(parser)
    args = parser.parse_args(argv)
    capability.apply(args.capability)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    ops = [o for o in args.ops.split(",") if o]
    for op in ops:
        if op not in OPS:
            parser.error(f"unknown op {op!r}; choose from {','.join(OPS)}")
    models = [m for m in args.models.split(",") if m and m != "none"]
    for model in models:
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; choose from {','.join(MODELS)} or none")
    backend = args.backend or torchconv.backends.current("cpu")
    print(
        f"torch {torch.__version__}, backend {backend}, {torch.get_num_threads()} threads, "
        f"{args.pairs} pairs x {args.inner} calls; ratio = torchconv / torch (median of pairs)"
    )
    print(capability.describe())
    try:
        with torchconv.backends.use(args.backend) if args.backend else contextlib.nullcontext():
            run(ops, args.pairs, args.inner, models=models)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
