"""Measures how far torchconv's results are from torch.nn.functional's.

For each op and a range of shapes (up to large reductions), it runs the
forward and the backward (gradients for every tensor input, for a random
``grad_output``) in float32 and float64 with torchconv and with
``torch.nn.functional`` on the same inputs, and prints, per dtype:

* ``abs``: max |torchconv - torch| over all outputs and gradients;
* ``scaled``: the error that ``torchconv.testing.TOLERANCES`` bounds,
  ``torchconv.testing.scaled_error``: max |torchconv - torch| / max(1,
  max |torch|) of each tensor, the worst over the tensors;
* for float32, ``ours~f64`` and ``torch~f64``: the same scaled error of
  torchconv and of torch against torch's float64 result on the same inputs
  (how far each is from the exact answer), forward and backward together.

Element-wise relative errors are not reported: outputs and gradients have
elements near zero, where any rounding makes them unbounded.

Inputs are N(0, 1); conv weights are N(0, 1) / sqrt(fan_in), the scale of
nn.Conv2d's default initialisation, so outputs stay O(1) at any reduction
size. Pass ``--unscaled`` for N(0, 1) weights (outputs grow like
sqrt(fan_in), and so do absolute errors).

Run: ``python scripts/measure_tolerances.py [--backend NAME] [--unscaled]``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
import torch.nn.functional as F

import torchconv
from torchconv.testing import error_scale, scaled_error

# (name, input shape, weight shape, kwargs) for convolutions; (name, input shape, kwargs) for pools
CONV2D = [
    ("small K=27", (2, 3, 16, 16), (8, 3, 3, 3), dict(padding=1)),
    ("resnet K=576", (8, 64, 32, 32), (64, 64, 3, 3), dict(padding=1)),
    ("strided K=1152", (8, 128, 28, 28), (128, 128, 3, 3), dict(stride=2, padding=1)),
    ("large K=4608", (4, 512, 14, 14), (64, 512, 3, 3), dict(padding=1)),
    ("huge K=25600", (2, 1024, 8, 8), (32, 1024, 5, 5), dict(padding=2)),
    ("grouped dilated", (4, 64, 24, 24), (64, 16, 3, 3), dict(padding=2, dilation=2, groups=4)),
    ("wgrad N*H*W=131072", (32, 16, 64, 64), (16, 16, 3, 3), dict(padding=1)),
]
CONV_T = [
    ("small", (2, 8, 8, 8), (8, 3, 4, 4), dict(stride=2, padding=1)),
    ("decoder C=256", (4, 256, 16, 16), (256, 128, 4, 4), dict(stride=2, padding=1)),
    ("large C=1024", (2, 1024, 8, 8), (1024, 64, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("grouped dilated", (4, 64, 12, 12), (64, 8, 3, 3), dict(stride=2, dilation=2, groups=8)),
]
MAXPOOL = [
    ("k2", (8, 64, 32, 32), dict(kernel_size=2)),
    ("k3 s2 p1", (8, 64, 56, 56), dict(kernel_size=3, stride=2, padding=1)),
    ("k3 dil2 ceil", (4, 32, 31, 31), dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True)),
]
AVGPOOL = [
    ("k2", (8, 64, 32, 32), dict(kernel_size=2)),
    ("k3 s2 p1 ceil", (8, 64, 56, 56), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("global 7x7", (32, 512, 7, 7), dict(kernel_size=7)),
    ("k14 on 28x28", (8, 64, 28, 28), dict(kernel_size=14)),
]


def compare(pairs):
    """(max abs error, max scaled_error) over pairs (ours, reference) of tensors."""
    worst_abs = worst_scaled = 0.0
    for ours, ref in pairs:
        scaled = scaled_error(ours, ref)
        worst_abs = max(worst_abs, scaled * error_scale(ref))
        worst_scaled = max(worst_scaled, scaled)
    return worst_abs, worst_scaled


def _forward_backward(fn, inputs, grad_output):
    leaves = [t.clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad_output)]


def run(fn_ours, fn_ref, shapes, dtype, scaled):
    """Errors of torchconv against torch in ``dtype``; for float32, also against float64."""
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for i, shape in enumerate(shapes):
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        if i == 1 and scaled:  # conv weight
            t = t / math.sqrt(math.prod(shape[1:]))
        inputs.append(t)
    y_shape = fn_ref(*inputs).shape
    grad_output = torch.randn(y_shape, generator=gen, dtype=torch.float64)
    low = [t.to(dtype) for t in inputs]
    ours = _forward_backward(fn_ours, low, grad_output.to(dtype))
    ref = _forward_backward(fn_ref, low, grad_output.to(dtype))
    row = [*compare([(ours[0], ref[0])]), *compare(zip(ours[1:], ref[1:]))]
    if dtype == torch.float32:
        exact = _forward_backward(fn_ref, inputs, grad_output)
        row += [compare(zip(ours, exact))[1], compare(zip(ref, exact))[1]]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--unscaled", action="store_true")
    args = parser.parse_args()
    cases = []
    for name, xs, ws, kw in CONV2D:
        bias = (ws[0],)
        cases.append(("conv2d", name, lambda x, w, b, kw=kw: torchconv.conv2d(x, w, b, **kw),
                      lambda x, w, b, kw=kw: F.conv2d(x, w, b, **kw), (xs, ws, bias)))
    for name, xs, ws, kw in CONV_T:
        bias = (ws[1] * kw.get("groups", 1),)
        cases.append(("conv_transpose2d", name, lambda x, w, b, kw=kw: torchconv.conv_transpose2d(x, w, b, **kw),
                      lambda x, w, b, kw=kw: F.conv_transpose2d(x, w, b, **kw), (xs, ws, bias)))
    for name, xs, kw in MAXPOOL:
        cases.append(("max_pool2d", name, lambda x, kw=kw: torchconv.max_pool2d(x, **kw),
                      lambda x, kw=kw: F.max_pool2d(x, **kw), (xs,)))
    for name, xs, kw in AVGPOOL:
        cases.append(("avg_pool2d", name, lambda x, kw=kw: torchconv.avg_pool2d(x, **kw),
                      lambda x, kw=kw: F.avg_pool2d(x, **kw), (xs,)))

    cols = ["fwd abs", "fwd scaled", "bwd abs", "bwd scaled", "ours~f64", "torch~f64"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend "
          f"{args.backend or torchconv.backends.current('cpu')}, weights "
          f"{'N(0,1)' if args.unscaled else 'N(0,1)/sqrt(fan_in)'}")
    print(f"{'op':<17} {'case':<20} {'dtype':<8} " + " ".join(f"{c:>10}" for c in cols))
    start = time.perf_counter()
    worst = {}
    for op, name, ours, ref, shapes in cases:
        for dtype in (torch.float32, torch.float64):
            with torchconv.backends.use(args.backend) if args.backend else contextlib.nullcontext():
                row = run(ours, ref, shapes, dtype, not args.unscaled)
            print(f"{op:<17} {name:<20} {str(dtype)[6:]:<8} " + " ".join(f"{v:10.2e}" for v in row), flush=True)
            w = worst.setdefault(dtype, [0.0] * len(row))
            worst[dtype] = [max(a, b) for a, b in zip(w, row)]
    for dtype, w in worst.items():
        print(f"{'worst':<17} {'':<20} {str(dtype)[6:]:<8} " + " ".join(f"{v:10.2e}" for v in w))
    print(f"({time.perf_counter() - start:.1f} s)")

if __name__ == "__main__":
    main()
