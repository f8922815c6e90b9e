"""torchconv against torch.nn.functional, side by side, in one process.

Each case times torchconv and torch alternately (A B A B ...), and reports the
median of the per-pair time ratios torchconv / torch: a ratio is immune to the
slow drift of a shared machine that absolute times suffer from. Ratios below
1 mean torchconv is faster. Each table ends with the geometric mean of the
forward and forward+backward ratios and the worst case; then the peak memory
of one forward+backward of the ResNet 3x3 case, both sides.

On the CPU (the default) a call is timed with ``time.perf_counter``; the peak
memory is the growth of the resident set, measured in a fresh process.

On CUDA (``--device cuda``) the cases are the CPU ones with every batch
multiplied by 8, torch runs cuDNN, and TF32 is off on both sides
(``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
set to False; ``torch.backends.cudnn.benchmark`` is left at its default). Both
sides are warmed up first; then each side's time in a pair is measured with a
pair of ``torch.cuda.Event(enable_timing=True)`` recorded around the call
(synchronize, record start, run, record end, synchronize on it, elapsed_time).
When one call is shorter than about 1 ms, the timed region repeats it (the
same number of times on both sides) so that a region lasts at least ~1 ms.
The peak memory is ``torch.cuda.max_memory_allocated`` above what was
allocated before one forward+backward. ``--dtype`` takes a comma-separated
list (or ``all`` = float32,bfloat16): one table per dtype.

Usage::

    python benchmarks/bench_ops.py                  # every case, fwd and fwd+bwd, CPU float32
    python benchmarks/bench_ops.py --pairs 30 --backend cpp
    python benchmarks/bench_ops.py --cases resnet   # names containing 'resnet'
    python benchmarks/bench_ops.py --device cuda --dtype float32,bfloat16 --pairs 30
    python benchmarks/bench_ops.py --device cuda --dtype all --backend reference
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import torchconv
from torchconv._precision import full_float32

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capability  # noqa: E402  (benchmarks/capability.py)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
ALL_DTYPES = ("float32", "bfloat16")  # what `--dtype all` means
BATCH_SCALE = {"cpu": 1, "cuda": 8}  # every case's batch is multiplied by this on the device type
CUDA_MIN_REGION_S = 1e-3  # on CUDA, repeat short calls until a timed region lasts this long
CUDA_MAX_REPS = 10_000
CUDA_TARGET = 2.0  # the spec's target: CUDA float32 geomean fwd+bwd ratio at most this


@dataclass
class Case:
    """A benchmark case; ``name`` has ``{n}`` where the (scaled) batch goes."""

    template: str
    batch: int
    factory: Callable  # (n, device, dtype) -> (args, kwargs) for both ops, tensors requiring grad
    torchconv_op: Callable
    torch_op: Callable

    def name(self, scale: int = 1) -> str:
        return self.template.format(n=self.batch * scale)

    def make(self, scale: int = 1, device="cpu", dtype: torch.dtype = torch.float32) -> tuple:
        """Fresh inputs with the batch multiplied by ``scale``, on ``device``, of ``dtype``."""
        return self.factory(self.batch * scale, torch.device(device), dtype)


def _leaf(shape, like, memory_format=torch.contiguous_format):
    """A leaf tensor requiring grad, in ``memory_format`` (channels_last for 4-d operands)."""
    t = torch.randn(shape, device=like["device"], dtype=like["dtype"])
    if len(shape) == 4:
        t = t.contiguous(memory_format=memory_format)
    return t.requires_grad_()


def _conv(c_in, hw, c_out, k, memory_format=torch.contiguous_format, **kw):
    groups = kw.get("groups", 1)

    def make(n, device, dtype):
        like = dict(device=device, dtype=dtype)
        x = _leaf((n, c_in, hw, hw), like, memory_format)
        w = _leaf((c_out, c_in // groups, k, k), like, memory_format)
        b = _leaf((c_out,), like)
        return (x, w, b), kw

    return make


def _conv_t(c_in, hw, c_out, k, memory_format=torch.contiguous_format, **kw):
    def make(n, device, dtype):
        like = dict(device=device, dtype=dtype)
        x = _leaf((n, c_in, hw, hw), like, memory_format)
        w = _leaf((c_in, c_out, k, k), like, memory_format)
        b = _leaf((c_out,), like)
        return (x, w, b), kw

    return make


def _pool(c, hw, *args, **kw):
    def make(n, device, dtype):
        return (torch.randn(n, c, hw, hw, device=device, dtype=dtype, requires_grad=True), *args), kw

    return make


def _pool_cl(c, hw, *args, **kw):
    """_pool's case with a channels_last input (output and gradient channels_last too)."""
    def make(n, device, dtype):
        x = torch.randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        return (x.requires_grad_(), *args), kw

    return make


CASES = [
    Case("mnist conv {n}x1x28x28 -> 32 k3 p1", 64, _conv(1, 28, 32, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("mnist conv {n}x32x14x14 -> 64 k3 p1", 64, _conv(32, 14, 64, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("mnist maxpool 2x2 {n}x32x28x28", 64, _pool(32, 28, 2), torchconv.max_pool2d, F.max_pool2d),
    Case("resnet conv {n}x64x56x56 -> 64 k3 p1", 16, _conv(64, 56, 64, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("resnet conv {n}x128x28x28 -> 256 k3 s2 p1", 16, _conv(128, 28, 256, 3, stride=2, padding=1), torchconv.conv2d, F.conv2d),
    Case("resnet conv {n}x256x14x14 -> 1024 1x1", 16, _conv(256, 14, 1024, 1), torchconv.conv2d, F.conv2d),
    Case("depthwise {n}x128x28x28 g128 k3 p1", 16, _conv(128, 28, 128, 3, padding=1, groups=128), torchconv.conv2d, F.conv2d),
    Case("convT {n}x64x14x14 -> 32 k4 s2 p1", 16, _conv_t(64, 14, 32, 4, stride=2, padding=1), torchconv.conv_transpose2d, F.conv_transpose2d),
    Case("convT {n}x32x7x7 -> 16 k3 s2 p1 op1", 64, _conv_t(32, 7, 16, 3, stride=2, padding=1, output_padding=1), torchconv.conv_transpose2d, F.conv_transpose2d),
    Case("maxpool 3x3 s2 p1 {n}x64x112x112", 16, _pool(64, 112, 3, 2, 1), torchconv.max_pool2d, F.max_pool2d),
    Case("avgpool 2x2 {n}x64x28x28", 32, _pool(64, 28, 2), torchconv.avg_pool2d, F.avg_pool2d),
    Case("mnist maxpool 2x2 {n}x32x28x28 channels_last", 64, _pool_cl(32, 28, 2), torchconv.max_pool2d, F.max_pool2d),
    Case("maxpool 3x3 s2 p1 {n}x64x112x112 channels_last", 16, _pool_cl(64, 112, 3, 2, 1), torchconv.max_pool2d, F.max_pool2d),
    Case("avgpool 2x2 {n}x64x28x28 channels_last", 32, _pool_cl(64, 28, 2), torchconv.avg_pool2d, F.avg_pool2d),
    # Shapes where a per-sample GEMM has little to work with: one sample (the
    # threads must share an image), dilation, a wide kernel.
    Case("batch1 conv {n}x64x56x56 -> 64 k3 p1", 1, _conv(64, 56, 64, 3, padding=1), torchconv.conv2d, F.conv2d),
    Case("dilated conv {n}x64x28x28 -> 64 k3 p2 d2", 8, _conv(64, 28, 64, 3, padding=2, dilation=2), torchconv.conv2d, F.conv2d),
    Case("conv5x5 {n}x32x28x28 -> 64 k5 p2", 16, _conv(32, 28, 64, 5, padding=2), torchconv.conv2d, F.conv2d),
    # channels_last (NHWC) inputs and weights: torch keeps the layout.
    Case("resnet NHWC conv {n}x64x56x56 -> 64 k3 p1", 16, _conv(64, 56, 64, 3, memory_format=torch.channels_last, padding=1), torchconv.conv2d, F.conv2d),
    Case("resnet NHWC conv {n}x256x14x14 -> 1024 1x1", 16, _conv(256, 14, 1024, 1, memory_format=torch.channels_last), torchconv.conv2d, F.conv2d),
    Case("mnist NHWC conv {n}x32x14x14 -> 64 k3 p1", 64, _conv(32, 14, 64, 3, memory_format=torch.channels_last, padding=1), torchconv.conv2d, F.conv2d),
    Case("convT NHWC {n}x64x14x14 -> 32 k4 s2 p1", 16, _conv_t(64, 14, 32, 4, memory_format=torch.channels_last, stride=2, padding=1), torchconv.conv_transpose2d, F.conv_transpose2d),
]
MEMORY_CASE = 3  # index in CASES of the case whose peak memory benchmarks/README.md quotes
# Peak memory is compared on every convolution case and on one large image,
# where a whole image's im2col matrix (576 x 512*512 floats, 576 MiB) would
# dwarf torch's footprint; it is only measured, not timed.
LARGE_IMAGE_CASE = Case(
    "large image conv {n}x64x512x512 -> 64 k3 p1", 1, _conv(64, 512, 64, 3, padding=1), torchconv.conv2d, F.conv2d
)


def memory_cases() -> list[Case]:
    return [c for c in CASES if "conv" in c.name()] + [LARGE_IMAGE_CASE]


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


# --- timers: seconds per call of fn, over a region that calls it `reps` times ---


class PerfCounterTimer:
    """CPU: wall time with time.perf_counter. One call per region (min_region 0)."""

    min_region = 0.0

    def __call__(self, fn, reps: int = 1) -> float:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps


class CudaEventTimer:
    """CUDA: GPU time between two CUDA events recorded around the region.

    The stream is drained first, so the region holds only this side's work;
    ``end.synchronize()`` waits for the region's kernels before reading the
    elapsed time. ``event`` and ``synchronize`` can be replaced (tests run this
    logic with fake events on a machine without a GPU).
    """

    min_region = CUDA_MIN_REGION_S

    def __init__(self, device=None, event=None, synchronize=None):
        event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self.start, self.end = event(), event()
        self.synchronize = synchronize or (lambda: torch.cuda.synchronize(device))

    def __call__(self, fn, reps: int = 1) -> float:
        self.synchronize()
        self.start.record()
        for _ in range(reps):
            fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3 / reps  # elapsed_time is in ms


def make_timer(device):
    device = torch.device(device)
    return CudaEventTimer(device) if device.type == "cuda" else PerfCounterTimer()


def choose_reps(ours, theirs, timer) -> int:
    """Calls per timed region, the same for both sides: enough that the faster
    side's region lasts ``timer.min_region`` (1 where that is 0, as on CPU)."""
    if timer.min_region <= 0:
        return 1
    fastest = min(min(timer(ours), timer(theirs)) for _ in range(3))
    if fastest <= 0:
        return CUDA_MAX_REPS
    return max(1, min(CUDA_MAX_REPS, math.ceil(timer.min_region / fastest)))


def median_ratio(ours, theirs, pairs: int, warmup: int = 2, timer=None) -> tuple[float, float, float, int]:
    """Median of per-pair ratios ours/theirs, the median times (s per call) of
    each, and the calls per timed region."""
    timer = timer or PerfCounterTimer()
    for _ in range(warmup):
        ours()
        theirs()
    reps = choose_reps(ours, theirs, timer)
    ratios, t_ours, t_theirs = [], [], []
    for i in range(pairs):
        # Alternate which goes first, so neither always runs on a warmer cache.
        if i % 2 == 0:
            a, b = timer(ours, reps), timer(theirs, reps)
        else:
            b, a = timer(theirs, reps), timer(ours, reps)
        ratios.append(a / b)
        t_ours.append(a)
        t_theirs.append(b)
    return statistics.median(ratios), statistics.median(t_ours), statistics.median(t_theirs), reps


# --- peak memory ---


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_child(which: str, backend: str, dtype: torch.dtype, index: int = -1) -> None:
    """Runs in a fresh process: prints by how many bytes the resident set peaks
    above its starting size during one forward+backward of ``memory_cases()[index]``
    (by default the ResNet 3x3 case).

    Resident memory counts every byte the process touches (torch's allocator,
    oneDNN's and our kernels' scratch buffers alike), so both sides compare
    fairly. Linux resets the peak (VmHWM) when 5 is written to clear_refs.
    """
    torch.manual_seed(0)
    case = CASES[MEMORY_CASE] if index < 0 else memory_cases()[index]
    inputs, kwargs = case.make(dtype=dtype)
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


def peak_memory_cpu(which: str, backend: str, dtype_name: str = "float32", index: int = -1) -> int:
    """Peak RSS growth of one forward+backward of ``memory_cases()[index]``
    (default: the ResNet 3x3 case), measured in a fresh process."""
    import subprocess

    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", which, "--backend", backend, "--dtype", dtype_name,
         "--memory-index", str(index)],
        check=True, capture_output=True, text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def peak_memory_cuda(which: str, backend: str, dtype: torch.dtype, device) -> int:
    """Bytes that torch's CUDA allocator peaks at above what was allocated
    before one forward+backward of the ResNet 3x3 case (batch x8). Counts every
    tensor and workspace allocated through torch (cuDNN's workspace included)."""
    torch.manual_seed(0)
    case = CASES[MEMORY_CASE]
    inputs, kwargs = case.make(BATCH_SCALE["cuda"], device, dtype)
    op = case.torch_op if which == "torch" else case.torchconv_op
    with torchconv.backends.use(backend):
        run = _runner(op, inputs, kwargs, True)
        run()  # loads kernels, allocates any persistent workspace before the measurement
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.grad = None
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    return peak - before


# --- command line ---


def parse_dtypes(text: str) -> list[str]:
    """``float32``, ``float32,bfloat16`` or ``all`` -> a list of DTYPES' names."""
    names = []
    for part in text.split(","):
        part = part.strip()
        for name in ALL_DTYPES if part == "all" else (part,):
            if name not in DTYPES:
                raise argparse.ArgumentTypeError(
                    f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}, a comma-separated list, or 'all'"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no dtype given")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (or cuda:N); CUDA runs every batch x8")
    parser.add_argument(
        "--dtype", type=parse_dtypes, default=["float32"],
        help="float32 (default), bfloat16, float64, a comma-separated list, or all (= float32,bfloat16): one table each",
    )
    parser.add_argument("--pairs", type=int, default=15, help="timed pairs per case (default 15)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up calls of each side per case (default 2 on CPU, 10 on CUDA)"
    )
    parser.add_argument("--backend", default=None, help="torchconv backend (default: the fastest available for the device)")
    parser.add_argument("--cases", default="", help="only cases whose name contains this text")
    capability.add_argument(parser)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory comparison")
    parser.add_argument("--memory-child", choices=["torch", "torchconv"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-index", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold-start measurement")
    parser.add_argument("--cold-start-child", choices=["torch", "torchconv"], help=argparse.SUPPRESS)
    return parser


def check_device(parser: argparse.ArgumentParser, text: str) -> torch.device:
    """The torch.device for ``--device``; exits with a message (parser.error) if unusable."""
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device {text}: not a device (use cpu or cuda)")
    if device.type not in BATCH_SCALE:
        parser.error(f"--device {text}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            parser.error(
                f"--device {text}: no CUDA GPU is available (torch.cuda.is_available() is False; "
                f"torch {torch.__version__} is {built}). Run it on a machine with an NVIDIA GPU and a "
                f"CUDA build of torch, or drop --device cuda to benchmark the CPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def check_backend(parser: argparse.ArgumentParser, name: str | None, device: torch.device) -> str:
    """The torchconv backend that will run on ``device`` (``name`` or the default)."""
    try:
        if name is None:
            return torchconv.backends.current(device)
        with torchconv.backends.use(name):
            return torchconv.backends.current(device)
    except (ValueError, RuntimeError) as error:
        parser.error(f"--backend {name}: {error}")


def precision(cuda: bool):
    """On CUDA, TF32 off for cuBLAS and cuDNN while the block runs (torchconv's
    GEMMs are cuBLAS through ATen too); nothing to change on the CPU."""
    return full_float32() if cuda else contextlib.nullcontext()


def header(device: torch.device, backend: str, dtypes: list[str], pairs: int, warmup: int) -> list[str]:
    names = ", ".join(dtypes)
    if device.type == "cuda":
        return [
            f"torchconv backend {backend!r} vs torch {torch.__version__} (cuDNN) on {torch.cuda.get_device_name(device)} "
            f"({device}), CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {names}",
            f"TF32 off: torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
            f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}; "
            f"torch.backends.cudnn.benchmark={torch.backends.cudnn.benchmark} (default)",
            f"batch x{BATCH_SCALE['cuda']} of the CPU cases; {warmup} warm-up calls per side, then median of {pairs} "
            f"interleaved pairs timed with CUDA events (calls repeated per region to >= {CUDA_MIN_REGION_S * 1e3:g} ms, "
            f"same reps both sides); ratio = torchconv time / torch time",
        ]
    return [
        f"torchconv backend {backend!r} vs torch {torch.__version__} (oneDNN/MKL), {names}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        capability.describe(),
        f"median of {pairs} interleaved pairs; ratio = torchconv time / torch time",
        "(on a GPU: --device cuda --dtype float32,bfloat16 --pairs 30 runs the cases at batch x8 against cuDNN, "
        "timed with CUDA events, TF32 off)",
    ]


def select_cases(cases: list[Case], text: str, scale: int) -> list[Case]:
    """Cases whose name (at batch x1 or at the device's scale) contains ``text``."""
    return [c for c in cases if text in c.name(1) or text in c.name(scale)]


def geomean(ratios: list[float]) -> float:
    return math.exp(sum(map(math.log, ratios)) / len(ratios))


def _print(line: str) -> None:
    print(line, flush=True)


def run_table(cases, device, dtype_name: str, scale: int, pairs: int, warmup: int, timer, out=_print, cuda=None) -> dict:
    """Times every case in one dtype and prints its table (through ``out``);
    returns the case names and their fwd and fwd+bwd ratios. ``cuda`` (default:
    whether ``device`` is a CUDA device) selects the CUDA table's extras."""
    dtype = DTYPES[dtype_name]
    if cuda is None:
        cuda = torch.device(device).type == "cuda"
    head = f"{'case':44s} {'fwd ratio':>9s} {'fwd+bwd ratio':>13s} {'torch fwd+bwd ms':>16s}"
    if cuda:
        head += f" {'reps fwd/bwd':>12s}"
    out(f"\n[{dtype_name}]")
    out(head)
    out("-" * len(head))
    result = {"names": [], "fwd": [], "both": []}
    for case in cases:
        torch.manual_seed(0)
        inputs, kwargs = case.make(scale, device, dtype)
        fwd, _, _, reps_fwd = median_ratio(
            _runner(case.torchconv_op, inputs, kwargs, False), _runner(case.torch_op, inputs, kwargs, False),
            pairs, warmup, timer,
        )
        both, _, t_torch, reps_both = median_ratio(
            _runner(case.torchconv_op, inputs, kwargs, True), _runner(case.torch_op, inputs, kwargs, True),
            pairs, warmup, timer,
        )
        del inputs
        name = case.name(scale)
        result["names"].append(name)
        result["fwd"].append(fwd)
        result["both"].append(both)
        row = f"{name:44s} {fwd:9.2f} {both:13.2f} {t_torch * 1e3:16.{3 if cuda else 2}f}"
        if cuda:
            row += f" {f'{reps_fwd}/{reps_both}':>12s}"
        out(row)
    if result["fwd"]:
        out("-" * len(head))
        out(f"{'geomean':44s} {geomean(result['fwd']):9.2f} {geomean(result['both']):13.2f}")
        out(f"{'worst':44s} {max(result['fwd']):9.2f} {max(result['both']):13.2f}")
        worst = max(range(len(result["both"])), key=result["both"].__getitem__)
        out(f"worst fwd+bwd case: {result['names'][worst]} ({result['both'][worst]:.2f})")
        if cuda and dtype_name == "float32":
            g = geomean(result["both"])
            verdict = "met" if g <= CUDA_TARGET else "NOT met"
            out(f"target (CUDA float32 geomean fwd+bwd <= {CUDA_TARGET:g}): {g:.2f}, {verdict}")
    return result


COLD_START_RUNS = 3  # fresh processes per side; the median is reported


def _cold_start_child(which: str, backend: str, device: str) -> None:
    """Runs in a fresh process (this file run as a script, so torch and
    torchconv are imported and nothing has run): prints the seconds of the
    first call of a small conv2d forward+backward, torchconv's or torch's,
    and the median of 20 later (warm) calls."""
    x = torch.randn(2, 3, 16, 16, device=device, requires_grad=True)
    w = torch.randn(8, 3, 3, 3, device=device, requires_grad=True)
    conv = torchconv.conv2d if which == "torchconv" else F.conv2d
    timer = make_timer(device)
    with torchconv.backends.use(backend):
        step = lambda: conv(x, w, padding=1).sum().backward()  # noqa: E731
        first = timer(step, 1)
        warm = statistics.median(timer(step, 1) for _ in range(20))
    print(first, warm)


def cold_start(which: str, backend: str, device: str) -> tuple[float, float]:
    """(first call s, warm call s) of ``which``, medians over fresh processes."""
    import subprocess

    runs = []
    for _ in range(COLD_START_RUNS):
        out = subprocess.run(
            [sys.executable, __file__, "--cold-start-child", which, "--backend", backend, "--device", device],
            check=True, capture_output=True, text=True,
        )
        runs.append([float(v) for v in out.stdout.split()[-2:]])
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def import_time() -> float:
    """Seconds ``import torchconv`` takes after ``import torch``, median over fresh processes."""
    import subprocess

    probe = "import time, torch; t = time.perf_counter(); import torchconv; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout)
        for _ in range(COLD_START_RUNS)
    ]
    return statistics.median(times)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.memory_child:
        _peak_rss_child(args.memory_child, args.backend or torchconv.backends.current("cpu"), DTYPES[args.dtype[0]],
                        args.memory_index)
        return 0
    if args.cold_start_child:
        _cold_start_child(args.cold_start_child, args.backend, args.device)
        return 0
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    capability.apply(args.capability)

    device = check_device(parser, args.device)
    backend = check_backend(parser, args.backend, device)
    cuda = device.type == "cuda"
    scale = BATCH_SCALE[device.type]
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    cases = select_cases(CASES, args.cases, scale)
    if not cases:
        parser.error(f"--cases {args.cases!r}: no case name contains it")
    if cuda and device.index is not None:
        torch.cuda.set_device(device)
    timer = make_timer(device)

    print("run as: python benchmarks/bench_ops.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    with precision(cuda), torchconv.backends.use(backend):
        for line in header(device, backend, args.dtype, args.pairs, warmup):
            print(line)
        for dtype_name in args.dtype:
            run_table(cases, device, dtype_name, scale, args.pairs, warmup, timer)
            if args.no_memory:
                continue
            mem_name = CASES[MEMORY_CASE].name(scale)
            if not cuda:
                print(f"\npeak memory (RSS growth, fresh process per side), one fwd+bwd, {dtype_name}:")
                worst = 0.0
                for index, case in enumerate(memory_cases()):
                    if args.cases and case is not LARGE_IMAGE_CASE and case not in cases:
                        continue
                    ours = peak_memory_cpu("torchconv", backend, dtype_name, index)
                    theirs = peak_memory_cpu("torch", backend, dtype_name, index)
                    worst = max(worst, ours / theirs)
                    print(f"  {case.name():44s} torchconv {ours / 2**20:7.1f} MiB, torch {theirs / 2**20:7.1f} MiB, "
                          f"ratio {ours / theirs:.2f}", flush=True)
                print(f"  {'worst ratio':44s} {worst:.2f}")
                continue
            if cuda:
                ours = peak_memory_cuda("torchconv", backend, DTYPES[dtype_name], device)
                theirs = peak_memory_cuda("torch", backend, DTYPES[dtype_name], device)
                how = "torch.cuda.max_memory_allocated growth"
            else:
                ours = peak_memory_cpu("torchconv", backend, dtype_name)
                theirs = peak_memory_cpu("torch", backend, dtype_name)
                how = "RSS growth"
            print(f"\npeak memory ({how}), one fwd+bwd of {mem_name}, {dtype_name}: torchconv "
                  f"{ours / 2**20:.1f} MiB, torch {theirs / 2**20:.1f} MiB, ratio {ours / theirs:.2f}")
    if not args.no_cold_start:
        print(f"\ncold start (fresh processes, median of {COLD_START_RUNS}; conv2d 2x3x16x16, 3x3, fwd+bwd):")
        print(f"  import torchconv (after torch): {import_time() * 1e3:.0f} ms")
        for which in ("torchconv", "torch"):
            first, warm = cold_start(which, backend, str(device))
            print(f"  {which:9s}: first call {first * 1e3:.2f} ms, warm call {warm * 1e6:.0f} us, "
                  f"first/warm {first / warm:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
