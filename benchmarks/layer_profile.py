"""Where a model's time goes, layer by layer: ``bench_models.py --layers``.

One forward pass of the torch model (under bfloat16 autocast for the
bfloat16 rows) records the input of every convolution and pooling layer
(forward hooks). Each distinct layer (its module and input: size, dtype,
memory format) is then timed alone, forward+backward, torch's module
against its torchconv conversion, interleaved (bench_ops.median_ratio),
with the gradient of a sum as the upstream gradient. The table lists
them by torch's total time (per-call time times how often the model calls
the layer), so the top rows are where a model's ratio is decided.

Apart from the layers, a step's time also holds what sits between them;
``--layers`` also prints the aten ops that copy memory (``aten::copy_``,
``contiguous``, ``to``) in one training step of each side, from the
profiler, which is where memory-format conversions around layers show.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

import torchconv
from bench_ops import median_ratio
from torchconv._memory_format import memory_format_of

LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)
COPY_OPS = ("aten::copy_", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::clone")


@dataclass
class Layer:
    module: nn.Module
    input: torch.Tensor
    calls: int = 1

    def key(self):
        x = self.input
        return (repr(self.module), tuple(x.shape), x.dtype, memory_format_of(x))

    def describe(self) -> str:
        fmt = "NHWC" if memory_format_of(self.input) == torch.channels_last else "NCHW"
        return f"{self.module!r} on {'x'.join(map(str, self.input.shape))} {fmt}"


def _autocast(dtype_name: str):
    return torch.autocast("cpu", torch.bfloat16) if dtype_name == "bfloat16" else contextlib.nullcontext()


def distinct_layers(model: nn.Module, x: torch.Tensor, dtype_name: str) -> list[Layer]:
    """The model's convolution and pooling layers with the input each gets
    in one forward pass, one entry per distinct (module, input)."""
    seen: dict = {}
    hooks = []

    def record(module, args, _output):
        layer = Layer(module, args[0].detach().clone(memory_format=torch.preserve_format))
        if layer.key() in seen:
            seen[layer.key()].calls += 1
        else:
            seen[layer.key()] = layer

    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad(), _autocast(dtype_name):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return list(seen.values())


def _fwd_bwd(module: nn.Module, x: torch.Tensor, dtype_name: str):
    x = x.detach().requires_grad_(x.is_floating_point())

    def run():
        module.zero_grad(set_to_none=True)
        with _autocast(dtype_name):
            y = module(x)
        (y[0] if isinstance(y, tuple) else y).float().sum().backward()

    return run


def time_layers(model: nn.Module, x: torch.Tensor, dtype_name: str, pairs: int) -> list[dict]:
    rows = []
    for layer in distinct_layers(model, x, dtype_name):
        theirs = copy.deepcopy(layer.module)
        ours = torchconv.convert(copy.deepcopy(layer.module))
        ratio, t_ours, t_theirs, _ = median_ratio(_fwd_bwd(ours, layer.input, dtype_name),
                                                  _fwd_bwd(theirs, layer.input, dtype_name), pairs, 1)
        rows.append(dict(layer=layer.describe(), calls=layer.calls, ratio=ratio,
                         torch_ms=t_theirs * 1e3 * layer.calls, ours_ms=t_ours * 1e3 * layer.calls))
    return sorted(rows, key=lambda r: -r["torch_ms"])


def copy_times(step, steps: int = 2) -> dict[str, tuple[int, float]]:
    """(calls, ms) per training step of each memory-copying aten op of ``step``."""
    step()  # warm
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    found = {}
    for event in prof.key_averages():
        if event.key in COPY_OPS:
            found[event.key] = (event.count // steps, event.self_cpu_time_total / 1e3 / steps)
    return found


def print_profile(print_line, description: str, rows: list[dict], copies_ours: dict, copies_theirs: dict) -> None:
    total_torch = sum(r["torch_ms"] for r in rows) or 1.0
    print_line(f"  layers of {description}, by torch's time (fwd+bwd of the layer alone x calls per step):")
    print_line(f"  {'torch ms':>9s} {'share':>6s} {'ratio':>6s} {'calls':>5s}  layer")
    for r in rows:
        print_line(f"  {r['torch_ms']:9.2f} {r['torch_ms'] / total_torch:6.1%} {r['ratio']:6.2f} {r['calls']:5d}  {r['layer']}")
    total_ours = sum(r["ours_ms"] for r in rows)
    print_line(f"  all layers: torch {total_torch:.1f} ms, torchconv {total_ours:.1f} ms, ratio {total_ours / total_torch:.2f}")
    for name in COPY_OPS:
        if name in copies_ours or name in copies_theirs:
            o, t = copies_ours.get(name, (0, 0.0)), copies_theirs.get(name, (0, 0.0))
            print_line(f"  {name} per step: torchconv {o[0]} calls {o[1]:.2f} ms (self), torch {t[0]} calls {t[1]:.2f} ms")
