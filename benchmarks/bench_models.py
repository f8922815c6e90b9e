"""Whole-model training steps: torchconv-converted models against the originals.

A training step is the forward pass, the loss, the backward pass and an
optimizer step (``torch.optim.SGD`` with momentum 0.9), with the model in
training mode (BatchNorm uses batch statistics, Dropout is active). For each
model the torch side is built once (seeded), and the torchconv side is
``torchconv.convert`` of a ``copy.deepcopy`` of it, so both start from the
same weights; each side has its own optimizer.

Models (``--models``, comma-separated names or ``all``):

* ``resnet18``, ``mobilenet_v2``: torchvision's, ``weights=None``,
  ``num_classes=1000`` (torchvision's default ImageNet head), batch 8 of
  3x112x112, cross-entropy against fixed random labels;
* ``resnext50`` (grouped 3x3, 32 groups; batch 4), ``shufflenet_v2``
  (``shufflenet_v2_x1_0``: depthwise and 1x1 layers, channel shuffles),
  ``densenet121`` (dense blocks of concatenations; batch 4): torchvision's,
  likewise at 3x112x112;
* ``lraspp``: torchvision's ``lraspp_mobilenet_v3_large`` segmentation
  model (an encoder-decoder; ``weights_backbone=None``, 21 classes), batch
  4 of 3x128x128, per-pixel cross-entropy on its ``"out"``;
* ``mnist_cnn``: the ``cnn`` model of ``examples/mnist_train.py`` (imported,
  built from ``torch.nn`` layers), batch 64 of 1x28x28, cross-entropy;
* ``dcgan_generator``: the standard DCGAN generator (Radford et al., as in
  PyTorch's examples: latent 100 -> 3x64x64, ngf 64; ``tests/zoo_models.py``
  has only a scaled-down 32x32 one), batch 16, mean squared error against a
  fixed random image.

Each model runs in every requested dtype (``float32``; ``bfloat16`` = the
forward and the loss under ``torch.autocast("cpu", torch.bfloat16)``, weights
stay float32) and memory format (``contiguous``; ``channels_last`` = model and
input converted with ``.to(memory_format=torch.channels_last)``).

Timing is ``benchmarks/bench_ops.py``'s (its ``median_ratio``): after a
warm-up step of each side, the two sides are timed alternately in one process
(A B A B ..., which one goes first alternating), one step per timed region
with ``time.perf_counter``, and the row reports the median of the per-pair
ratios torchconv / torch (a ratio is immune to the slow drift of a shared
machine that absolute times suffer from) next to the median time per step of
each side. A row times ``--pairs`` pairs, or fewer (at least 3) where the
warm-up pair's time says they would last longer than ``--row-seconds``: on
CPUs without AVX512-BF16 a torch bfloat16 step of ResNet-18 takes seconds.
The target is that every whole-model step takes at most 1.0x torch's time.
The table ends with the geometric mean of the ratios and the worst row.

Last, ``examples/mnist_train.py --compare-torch`` is run in a subprocess
(a short run: ``--epochs`` and ``--limit-train``; the same thread count and
backend as here) and its printed torchconv / torch.nn epoch-time ratio is
reported: a full training loop (data augmentation, AdamW, validation) around
the MNIST CNN.

Usage::

    python benchmarks/bench_models.py                       # every model, dtype and memory format
    python benchmarks/bench_models.py --quick               # fewer pairs and a shorter example run
    python benchmarks/bench_models.py --models resnet18 --dtype bfloat16 --memory-format channels_last
    python benchmarks/bench_models.py --pairs 20 --backend cpp --no-example
    python benchmarks/bench_models.py --models resnet18 --dtype bfloat16 --layers   # where the time goes
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import torchconv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import capability  # noqa: E402
import layer_profile  # noqa: E402
from bench_ops import PerfCounterTimer, check_backend, geomean, header, median_ratio, parse_dtypes  # noqa: E402

EXAMPLE = ROOT / "examples" / "mnist_train.py"
TARGET = 1.0  # every whole-model training step at most this times torch's
LR = 1e-4  # small, so that hundreds of timed steps leave the weights near their start (no drift to inf/NaN)
MOMENTUM = 0.9
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPE_NAMES = ("float32", "bfloat16")  # bfloat16 = autocast; the parameters stay float32

# Pairs per row: at most --pairs, and fewer (never below MIN_PAIRS) where the
# warm-up step says that --pairs would take longer than --row-seconds; without
# that cap the rows where torch's bfloat16 convolutions take seconds a step
# (CPUs without AVX512-BF16) would take most of the run.
DEFAULT_PAIRS, QUICK_PAIRS, MIN_PAIRS = 7, 3, 3
DEFAULT_ROW_SECONDS, QUICK_ROW_SECONDS = 30.0, 10.0
# One warm-up step per side: the first step creates oneDNN's primitives and
# fills the allocator's caches; a step lasts long enough that the next is warm.
DEFAULT_WARMUP = QUICK_WARMUP = 1
# The example's run: (--epochs, --limit-train); an epoch of 2,560 digits is 40 steps of 64.
DEFAULT_EXAMPLE_RUN, QUICK_EXAMPLE_RUN = (2, 2560), (1, 640)


# --------------------------------------------------------------------------- models


class TorchvisionMissing(Exception):
    """torchvision is not installed (its rows are skipped)."""


def _torchvision(name: str, task: str = "", **kwargs) -> Callable[[], nn.Module]:
    """torchvision.models[.task].name(weights=None, **kwargs) (default: 1000 classes)."""
    kwargs = kwargs or {"num_classes": 1000}

    def build():
        if importlib.util.find_spec("torchvision") is None:
            raise TorchvisionMissing("torchvision is not installed")
        # tests/zoo_models.py imports torchvision.models also where plain
        # `import torchvision` fails (a CUDA wheel of it beside a CPU torch).
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            from zoo_models import torchvision_models
        finally:
            sys.path.remove(str(ROOT / "tests"))
        models = torchvision_models()
        return getattr(getattr(models, task) if task else models, name)(weights=None, **kwargs)

    return build


def _mnist_cnn() -> nn.Module:
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        from mnist_train import build_model  # the module runs nothing on import (main() is guarded)
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return build_model("cnn", "torch.nn")


class DCGANGenerator(nn.Module):
    """The DCGAN generator of PyTorch's examples: latent (N, nz, 1, 1) to an
    image (N, nc, 64, 64); ConvTranspose2d without bias, BatchNorm, ReLU, Tanh."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 32x32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


def _classification(n: int, shape: tuple, classes: int):
    def make():
        return torch.randn(n, *shape), torch.randint(classes, (n,))

    return make


def _cross_entropy(out, target):
    return F.cross_entropy(out, target)


def _segmentation(n: int, shape: tuple, classes: int):
    def make():
        return torch.randn(n, *shape), torch.randint(classes, (n, *shape[1:]))

    return make


def _pixel_cross_entropy(out, target):
    return F.cross_entropy(out["out"], target)  # torchvision's segmentation models return a dict


def _mse(out, target):
    return F.mse_loss(out.float(), target)


@dataclass
class Model:
    name: str
    description: str
    build: Callable[[], nn.Module]  # the torch.nn model
    make_batch: Callable[[], tuple]  # (input, target)
    loss: Callable


MODELS = {
    m.name: m
    for m in [
        Model("resnet18", "resnet18 8x3x112x112", _torchvision("resnet18"), _classification(8, (3, 112, 112), 1000), _cross_entropy),
        Model("mobilenet_v2", "mobilenet_v2 8x3x112x112", _torchvision("mobilenet_v2"), _classification(8, (3, 112, 112), 1000), _cross_entropy),
        Model("resnext50", "resnext50_32x4d 4x3x112x112", _torchvision("resnext50_32x4d"),
              _classification(4, (3, 112, 112), 1000), _cross_entropy),
        Model("shufflenet_v2", "shufflenet_v2 8x3x112x112", _torchvision("shufflenet_v2_x1_0"),
              _classification(8, (3, 112, 112), 1000), _cross_entropy),
        Model("densenet121", "densenet121 4x3x112x112", _torchvision("densenet121"),
              _classification(4, (3, 112, 112), 1000), _cross_entropy),
        Model("lraspp", "lraspp_mnv3 4x3x128x128",
              _torchvision("lraspp_mobilenet_v3_large", "segmentation", num_classes=21, weights_backbone=None),
              _segmentation(4, (3, 128, 128), 21), _pixel_cross_entropy),
        Model("mnist_cnn", "mnist cnn 64x1x28x28", _mnist_cnn, _classification(64, (1, 28, 28), 10), _cross_entropy),
        Model("dcgan_generator", "dcgan G 16x100 -> 3x64x64", DCGANGenerator,
              lambda: (torch.randn(16, 100, 1, 1), torch.rand(16, 3, 64, 64) * 2 - 1), _mse),
    ]
}


# --------------------------------------------------------------------------- one row


def count_converted(model: nn.Module) -> int:
    """How many of ``model``'s modules are torchconv layers."""
    return sum(type(m).__module__.startswith("torchconv") for m in model.modules())


def make_step(model: nn.Module, x, target, loss_fn, dtype_name: str) -> Callable[[], None]:
    """One training step of ``model`` on a fixed batch, with its own SGD."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast("cpu", torch.bfloat16) if dtype_name == "bfloat16" else contextlib.nullcontext())
        with autocast:
            loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()

    return step


def prepare_row(spec: Model, base: nn.Module, memory_format: str):
    """A row's (input, target, torch model, torchconv model): the seeded
    batch and two copies of ``base``, one converted, in ``memory_format``."""
    fmt = MEMORY_FORMATS[memory_format]
    torch.manual_seed(0)
    x, target = spec.make_batch()
    x = x.contiguous(memory_format=fmt)
    theirs = copy.deepcopy(base).to(memory_format=fmt)
    ours = torchconv.convert(copy.deepcopy(base), inplace=True).to(memory_format=fmt)
    return x, target, theirs, ours


def time_row(spec: Model, base: nn.Module, dtype_name: str, memory_format: str, pairs: int, warmup: int,
             row_seconds: float = 0.0) -> dict:
    """Times a training step of ``base`` and of its torchconv conversion,
    interleaved: ``warmup`` steps of each side, then at most ``pairs`` timed
    pairs, fewer (at least MIN_PAIRS) if the last warm-up pair says ``pairs``
    would last longer than ``row_seconds`` (0: no cap)."""
    x, target, theirs, ours = prepare_row(spec, base, memory_format)
    step_ours = make_step(ours, x, target, spec.loss, dtype_name)
    step_theirs = make_step(theirs, x, target, spec.loss, dtype_name)
    timer = PerfCounterTimer()
    pair_s = None
    for _ in range(warmup):
        pair_s = timer(step_ours) + timer(step_theirs)
    if row_seconds > 0 and pair_s:
        pairs = max(min(pairs, MIN_PAIRS), min(pairs, int(row_seconds / pair_s)))
    ratio, t_ours, t_theirs, _ = median_ratio(step_ours, step_theirs, pairs, 0, timer)
    return dict(ratio=ratio, ours_ms=t_ours * 1e3, torch_ms=t_theirs * 1e3, pairs=pairs, converted=count_converted(ours))


def profile_row(spec: Model, base: nn.Module, dtype_name: str, memory_format: str, pairs: int) -> None:
    """--layers: the row's layers timed alone, and each side's memory copies per step."""
    x, target, theirs, ours = prepare_row(spec, base, memory_format)
    rows = layer_profile.time_layers(theirs, x, dtype_name, max(pairs, 3))
    copies_ours = layer_profile.copy_times(make_step(ours, x, target, spec.loss, dtype_name))
    copies_theirs = layer_profile.copy_times(make_step(theirs, x, target, spec.loss, dtype_name))
    layer_profile.print_profile(_print, f"{spec.description}, {dtype_name}, {memory_format}", rows, copies_ours,
                                copies_theirs)


# --------------------------------------------------------------------------- the example's ratio

EXAMPLE_RATIO = re.compile(r"torchconv / torch\.nn epoch time: ([0-9.]+)x")


def parse_example_ratio(output: str) -> float | None:
    """The ``torchconv / torch.nn epoch time: R.RRx`` figure that
    ``examples/mnist_train.py --compare-torch`` prints (None if absent)."""
    match = EXAMPLE_RATIO.search(output)
    return float(match.group(1)) if match else None


def example_command(epochs: int, limit_train: int, backend: str, threads: int) -> list[str]:
    # --threads: the same count as the table (without it the example picks one
    # from the load average and may drop to 1 mid-run); --save '': no checkpoint.
    return [
        sys.executable, str(EXAMPLE), "--compare-torch", "--epochs", str(epochs), "--limit-train", str(limit_train),
        "--backend", backend, "--threads", str(threads), "--save", "", "--no-progress",
    ]


def run_example(epochs: int, limit_train: int, backend: str, threads: int, timeout: float = 600) -> tuple[float | None, str]:
    """Runs the example with --compare-torch; (its epoch-time ratio, its output)."""
    out = subprocess.run(
        example_command(epochs, limit_train, backend, threads), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    text = out.stdout + out.stderr
    return (parse_example_ratio(text) if out.returncode == 0 else None), text


# --------------------------------------------------------------------------- command line


def _choices(text: str, known, what: str) -> list[str]:
    """A comma-separated list of names from ``known`` (or ``all``), in the given order."""
    names = []
    for part in (p.strip() for p in text.split(",")):
        for name in known if part == "all" else (part,):
            if name not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; choose from {', '.join(known)}, a comma-separated list, or all")
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return names


def _dtypes(text: str) -> list[str]:
    names = parse_dtypes(text)
    bad = [n for n in names if n not in DTYPE_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"dtype {bad[0]!r}: only {', '.join(DTYPE_NAMES)} (autocast) here")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda t: _choices(t, tuple(MODELS), "model"), default=list(MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)} (default all)")
    parser.add_argument("--dtype", type=_dtypes, default=list(DTYPE_NAMES),
                        help="float32, bfloat16 (autocast), comma-separated, or all (default all)")
    parser.add_argument("--memory-format", type=lambda t: _choices(t, tuple(MEMORY_FORMATS), "memory format"),
                        default=list(MEMORY_FORMATS), help="contiguous, channels_last, comma-separated, or all (default all)")
    parser.add_argument("--pairs", type=int, default=None, help=f"timed pairs per row (default {DEFAULT_PAIRS}, --quick {QUICK_PAIRS})")
    parser.add_argument("--warmup", type=int, default=None, help=f"warm-up steps of each side per row (default {DEFAULT_WARMUP})")
    parser.add_argument("--row-seconds", type=float, default=None,
                        help=f"cut a row's pairs (to no fewer than {MIN_PAIRS}) to fit about this many seconds "
                             f"(default {DEFAULT_ROW_SECONDS:g}, --quick {QUICK_ROW_SECONDS:g}; 0: always --pairs)")
    parser.add_argument("--backend", default=None, help="torchconv backend (default: the fastest available on the CPU)")
    capability.add_argument(parser)
    parser.add_argument("--quick", action="store_true",
                        help=f"at most {QUICK_PAIRS} pairs, --row-seconds {QUICK_ROW_SECONDS:g}, a {QUICK_EXAMPLE_RUN[0]}-epoch example run on {QUICK_EXAMPLE_RUN[1]} digits")
    parser.add_argument("--no-example", action="store_true", help="skip the examples/mnist_train.py --compare-torch run")
    parser.add_argument("--layers", action="store_true",
                        help="after each row, where its time goes: every distinct conv/pool layer timed alone "
                             "(torch vs torchconv), and the memory copies of a step (benchmarks/layer_profile.py)")
    return parser


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def _print(line: str = "") -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pairs = args.pairs if args.pairs is not None else (QUICK_PAIRS if args.quick else DEFAULT_PAIRS)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    row_seconds = args.row_seconds if args.row_seconds is not None else (QUICK_ROW_SECONDS if args.quick else DEFAULT_ROW_SECONDS)
    if pairs < 1 or warmup < 0 or row_seconds < 0:
        parser.error("--pairs must be at least 1, --warmup and --row-seconds at least 0")
    capability.apply(args.capability)
    device = torch.device("cpu")
    backend = check_backend(parser, args.backend, device)

    _print("run as: python benchmarks/bench_models.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    _print(header(device, backend, args.dtype, pairs, warmup)[0])
    _print(capability.describe())
    _print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), "
           f"{torch.get_num_threads()} torch threads; 1-minute load average {os.getloadavg()[0]:.2f}")
    cap = f", fewer (>= {MIN_PAIRS}) where they would take over {row_seconds:g} s" if row_seconds else ""
    _print(f"training step: forward + loss + backward + SGD(lr={LR:g}, momentum={MOMENTUM:g}), train mode; "
           f"{warmup} warm-up step(s) per side, then the median of {pairs} interleaved pairs{cap}; "
           f"ratio = torchconv time / torch time; target: every row <= {TARGET:.1f}")
    head = (f"{'model':26s} {'dtype':8s} {'memory format':13s} {'torch ms/step':>13s} "
            f"{'torchconv ms':>12s} {'ratio':>6s} {'pairs':>5s}  target <= {TARGET:.1f}")
    _print()
    _print(head)
    _print("-" * len(head))
    rows, skipped = [], []
    with torchconv.backends.use(backend):
        for name in args.models:
            spec = MODELS[name]
            torch.manual_seed(0)
            try:
                base = spec.build()
            except TorchvisionMissing as error:
                skipped.append(f"{name}: skipped ({error})")
                _print(f"{spec.description:26s} skipped: {error}")
                continue
            for dtype_name in args.dtype:
                for memory_format in args.memory_format:
                    r = time_row(spec, base, dtype_name, memory_format, pairs, warmup, row_seconds)
                    verdict = "met" if r["ratio"] <= TARGET else "NOT met"
                    rows.append((spec.description, dtype_name, memory_format, r["ratio"]))
                    _print(f"{spec.description:26s} {dtype_name:8s} {memory_format:13s} {r['torch_ms']:13.1f} "
                           f"{r['ours_ms']:12.1f} {r['ratio']:6.2f} {r['pairs']:5d}  {verdict}")
                    if args.layers:
                        profile_row(spec, base, dtype_name, memory_format, pairs)
            del base
    if rows:
        ratios = [r[3] for r in rows]
        worst = max(rows, key=lambda r: r[3])
        met = sum(r <= TARGET for r in ratios)
        _print("-" * len(head))
        _print(f"{'geomean':26s} {'':8s} {'':13s} {'':13s} {'':12s} {geomean(ratios):6.2f}")
        _print(f"worst: {worst[0]}, {worst[1]}, {worst[2]} ({worst[3]:.2f}); "
               f"target (every step <= {TARGET:.1f}x torch): {met} of {len(rows)} rows met")

    if not args.no_example:
        epochs, limit = QUICK_EXAMPLE_RUN if args.quick else DEFAULT_EXAMPLE_RUN
        threads = torch.get_num_threads()
        _print()
        _print("examples/mnist_train.py, full training loop (augmentation, AdamW, validation) of the torchconv CNN "
               "and its torch.nn twin, epochs interleaved:")
        _print("  " + shlex.join(["python", "examples/mnist_train.py", *example_command(epochs, limit, backend, threads)[2:]]))
        t0 = time.perf_counter()
        ratio, output = run_example(epochs, limit, backend, threads)
        if ratio is None:
            _print("  the run failed or printed no ratio; its last lines:")
            for line in output.strip().splitlines()[-10:]:
                _print("    " + line)
            return 1
        _print(f"  torchconv / torch.nn epoch time: {ratio:.2f}x ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
