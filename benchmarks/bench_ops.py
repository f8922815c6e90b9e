"""torchconv against torch.nn.functional, side by side, in one process.

Each case times torchconv and torch alternately (A B A B ...), and reports the
median of the per-pair time ratios torchconv / torch: a ratio is immune to the
slow drift of a shared machine that absolute times suffer from. Ratios below
1 mean torchconv is faster.

Usage::

    python benchmarks/bench_ops.py                  # every case, fwd and fwd+bwd
    python benchmarks/bench_ops.py --pairs 30 --backend cpp
    python benchmarks/bench_ops.py --cases resnet   # names containing 'resnet'
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import torchconv


@dataclass
class Case:
    name: str
    make: Callable[[], tuple]  # returns (args, kwargs) for both ops, tensors requiring grad
    torchconv_op: Callable
    torch_op: Callable


def _conv(n, c_in, hw, c_out, k, **kw):
    groups = kw.get("groups", 1)

    def make():
        x = torch.randn(n, c_in, hw, hw, requires_grad=True)
        w = torch.randn(c_out, c_in // groups, k, k, requires_grad=True)
        b = torch.randn(c_out, requires_grad=True)
        return (x, w, b), kw

    return make


def _conv_t(n, c_in, hw, c_out, k, **kw):
    def make():
        x = torch.randn(n, c_in, hw, hw, requires_grad=True)
        w = torch.randn(c_in, c_out, k, k, requires_grad=True)
        b = torch.randn(c_out, requires_grad=True)
        return (x, w, b), kw

    return make


def _pool(n, c, hw, *args, **kw):
    def make():
        return (torch.randn(n, c, hw, hw, requires_grad=True), *args), kw

    return make


CASES = [
    Case("mnist conv 64x1x28x28 -> 32 k3 p1", _conv(64, 1, 28, 32, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("mnist conv 64x32x14x14 -> 64 k3 p1", _conv(64, 32, 14, 64, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("mnist maxpool 2x2 64x32x28x28", _pool(64, 32, 28, 2), torchconv.max_pool2d, F.max_pool2d),
    Case("resnet conv 16x64x56x56 -> 64 k3 p1", _conv(16, 64, 56, 64, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("resnet conv 16x128x28x28 -> 256 k3 s2 p1", _conv(16, 128, 28, 256, 3, stride=2, padding=1), torchconv.conv2d, F.conv2d),
    Case("resnet conv 16x256x14x14 -> 1024 1x1", _conv(16, 256, 14, 1024, 1), torchconv.conv2d, F.conv2d),
    Case("depthwise 16x128x28x28 g128 k3 p1", _conv(16, 128, 28, 128, 3, padding=1, groups=128), torchconv.conv2d, F.conv2d),
    Case("convT 16x64x14x14 -> 32 k4 s2 p1", _conv_t(16, 64, 14, 32, 4, stride=2, padding=1), torchconv.conv_transpose2d, F.conv_transpose2d),
    Case("convT 64x32x7x7 -> 16 k3 s2 p1 op1", _conv_t(64, 32, 7, 16, 3, stride=2, padding=1, output_padding=1), torchconv.conv_transpose2d, F.conv_transpose2d),
    Case("maxpool 3x3 s2 p1 16x64x112x112", _pool(16, 64, 112, 3, 2, 1), torchconv.max_pool2d, F.max_pool2d),
    Case("avgpool 2x2 32x64x28x28", _pool(32, 64, 28, 2), torchconv.avg_pool2d, F.avg_pool2d),
]


def _runner(op, args, kwargs, backward: bool):
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def run():
        if not backward:
            with torch.no_grad():
                op(*args, **kwargs)
            return
        for t in tensors:
            t.grad = None
        op(*args, **kwargs).sum().backward()

    return run


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ratio(ours, theirs, pairs: int, warmup: int = 2) -> tuple[float, float, float]:
    """Median of per-pair ratios ours/theirs, and the median times (s) of each."""
    for _ in range(warmup):
        ours()
        theirs()
    ratios, t_ours, t_theirs = [], [], []
    for i in range(pairs):
        # Alternate which goes first, so neither always runs on a warmer cache.
        if i % 2 == 0:
            a, b = _time(ours), _time(theirs)
        else:
            b, a = _time(theirs), _time(ours)
        ratios.append(a / b)
        t_ours.append(a)
        t_theirs.append(b)
    return statistics.median(ratios), statistics.median(t_ours), statistics.median(t_theirs)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_child(which: str, backend: str) -> None:
    """Runs in a fresh process: prints by how many bytes the resident set peaks
    above its starting size during one forward+backward of the ResNet 3x3 case.

    Resident memory counts every byte the process touches (torch's allocator,
    oneDNN's and our kernels' scratch buffers alike), so both sides compare
    fairly. Linux resets the peak (VmHWM) when 5 is written to clear_refs.
    """
    torch.manual_seed(0)
    case = CASES[3]
    inputs, kwargs = case.make()
    op = case.torch_op if which == "torch" else case.torchconv_op
    with torchconv.backends.use(backend):
        small_input = inputs[0][:1].detach().requires_grad_()
        _runner(op, (small_input, *inputs[1:]), kwargs, True)()  # loads code, touches little memory
        run = _runner(op, inputs, kwargs, True)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _status_kib("VmRSS")
        run()
        peak = _status_kib("VmHWM")
    print((peak - before) * 1024)


def peak_memory(which: str, backend: str) -> int:
    """Peak RSS growth of one forward+backward, measured in a fresh process."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", which, "--backend", backend],
        check=True, capture_output=True, text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=15, help="timed pairs per case (default 15)")
    parser.add_argument("--backend", default=None, help="torchconv backend (default: the fastest available)")
    parser.add_argument("--cases", default="", help="only cases whose name contains this text")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory comparison")
    parser.add_argument("--memory-child", choices=["torch", "torchconv"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _peak_rss_child(args.memory_child, args.backend or torchconv.backends.current("cpu"))
        return 0

    backend = args.backend or torchconv.backends.current("cpu")
    print(f"torchconv backend {backend!r} vs torch {torch.__version__} (oneDNN/MKL), float32, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"median of {args.pairs} interleaved pairs; ratio = torchconv time / torch time\n")
    header = f"{'case':44s} {'fwd ratio':>9s} {'fwd+bwd ratio':>13s} {'torch fwd+bwd ms':>16s}"
    print(header)
    print("-" * len(header))
    fwd_ratios, both_ratios = [], []
    with torchconv.backends.use(backend):
        for case in CASES:
            if args.cases not in case.name:
                continue
            torch.manual_seed(0)
            inputs, kwargs = case.make()
            fwd, _, _ = median_ratio(
                _runner(case.torchconv_op, inputs, kwargs, False), _runner(case.torch_op, inputs, kwargs, False), args.pairs
            )
            both, _, t_torch = median_ratio(
                _runner(case.torchconv_op, inputs, kwargs, True), _runner(case.torch_op, inputs, kwargs, True), args.pairs
            )
            fwd_ratios.append(fwd)
            both_ratios.append(both)
            print(f"{case.name:44s} {fwd:9.2f} {both:13.2f} {t_torch * 1e3:16.2f}", flush=True)
        if fwd_ratios:
            geo = lambda r: math.exp(sum(map(math.log, r)) / len(r))  # noqa: E731
            print("-" * len(header))
            print(f"{'geomean':44s} {geo(fwd_ratios):9.2f} {geo(both_ratios):13.2f}")
            print(f"{'worst':44s} {max(fwd_ratios):9.2f} {max(both_ratios):13.2f}")
    if not args.no_memory:
        ours, theirs = peak_memory("torchconv", backend), peak_memory("torch", backend)
        print(f"\npeak memory (RSS growth), one fwd+bwd of {CASES[3].name}: torchconv "
              f"{ours / 2**20:.1f} MiB, torch {theirs / 2**20:.1f} MiB, ratio {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
