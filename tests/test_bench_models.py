"""benchmarks/bench_models.py: the script runs and prints its table (one pair,
small models, one dtype); no timing is asserted."""

import sys
from pathlib import Path

import pytest
import torch
from script_module import load_script

ROOT = Path(__file__).resolve().parents[1]
_PATH = ROOT / "benchmarks" / "bench_models.py"


bench = load_script(_PATH)


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.endswith(" met") and not line.startswith("worst")]


def test_script_prints_table(capsys):
    """main() as the command line runs it: header, the row, geomean."""
    argv = ["--models", "mnist_cnn", "--dtype", "float32", "--memory-format", "contiguous",
            "--pairs", "1", "--warmup", "0", "--no-example"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ("run as: python benchmarks/bench_models.py --models mnist_cnn --dtype float32 "
                        "--memory-format contiguous --pairs 1 --warmup 0 --no-example")
    assert f"torch {torch.__version__}" in out and "torch threads" in out and "CPU:" in out
    rows = _rows(out)
    # "mnist cnn 64x1x28x28 float32 contiguous <torch ms> <torchconv ms> <ratio> <pairs> [NOT] met"
    assert [r[3:5] for r in rows] == [["float32", "contiguous"]]
    for r in rows:
        torch_ms, ours_ms, ratio, pairs = float(r[5]), float(r[6]), float(r[7]), int(r[8])
        assert torch_ms > 0 and ours_ms > 0 and ratio > 0 and pairs == 1
    assert any(line.startswith("geomean") for line in lines)
    assert "rows met" in out


def test_torchvision_row():
    """A torchvision model converts (its convolutions and pools become
    torchconv's) and times, on a small batch; skipped where torchvision is
    missing."""
    sys.path.insert(0, str(ROOT / "tests"))
    from zoo_models import torchvision_models

    torchvision_models()  # skips the test if torchvision is not installed
    spec = bench.MODELS["resnet18"]
    torch.manual_seed(0)
    base = spec.build()
    # Batch 2 of 32x32 (the last stage is 1x1: 2 values per channel for BatchNorm).
    small = bench.Model(spec.name, spec.description, spec.build, lambda: (torch.randn(2, 3, 32, 32), torch.tensor([1, 7])), spec.loss)
    r = bench.time_row(small, base, "float32", "channels_last", pairs=1, warmup=0)
    assert r["pairs"] == 1 and r["ratio"] > 0 and r["torch_ms"] > 0
    layers = (torch.nn.Conv2d, torch.nn.MaxPool2d)
    assert r["converted"] == sum(isinstance(m, layers) for m in base.modules()) > 0


def test_row_seconds_cuts_pairs():
    """--row-seconds cuts the pairs to fit, never below MIN_PAIRS."""
    spec = bench.MODELS["dcgan_generator"]
    torch.manual_seed(0)
    base = bench.DCGANGenerator(nz=8, ngf=2)
    small = bench.Model(spec.name, spec.description, None, lambda: (torch.randn(2, 8, 1, 1), torch.rand(2, 3, 64, 64)), spec.loss)
    assert bench.time_row(small, base, "bfloat16", "contiguous", pairs=4, warmup=1, row_seconds=1e-9)["pairs"] == bench.MIN_PAIRS
    assert bench.time_row(small, base, "float32", "contiguous", pairs=2, warmup=1, row_seconds=1e-9)["pairs"] == 2


def test_example_ratio_parsing_and_command():
    line = ("torchconv / torch.nn epoch time: 1.07x; validation predictions agree on 498/500 digits; "
            "largest weight difference after training: 3.1e-05 (float rounding ...)")
    assert bench.parse_example_ratio("epoch 1/1 ...\n" + line + "\n") == 1.07
    assert bench.parse_example_ratio("no ratio here") is None
    # The flags it passes exist in the example's command line.
    sys.path.insert(0, str(ROOT / "examples"))
    import mnist_train

    args = mnist_train.parse_args(bench.example_command(1, 128, "cpp", 1)[2:])
    assert args.compare_torch and args.epochs == 1 and args.limit_train == 128 and args.threads == 1 and args.save == ""


def test_unknown_names_are_rejected(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--models", "vgg"])
    assert "unknown model 'vgg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--dtype", "float64"])
    assert "only float32, bfloat16" in capsys.readouterr().err


def test_layers_profile(capsys):
    """--layers: every distinct conv/pool layer of the row timed alone, with
    the model's own inputs, and each side's memory copies per step."""
    argv = ["--models", "mnist_cnn", "--dtype", "float32", "--memory-format", "contiguous",
            "--pairs", "1", "--warmup", "0", "--no-example", "--layers"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "layers of mnist cnn 64x1x28x28, float32, contiguous" in out
    layers = [line for line in out.splitlines() if " on 64x" in line]
    assert len(layers) == 4  # two convolutions and two max pools, each its own input
    assert any("Conv2d(1, 32" in line and "on 64x1x28x28 NCHW" in line for line in layers)
    assert any("MaxPool2d" in line and "on 64x64x14x14 NCHW" in line for line in layers)
    assert "all layers: torch" in out and "aten::copy_ per step" in out


def test_added_architectures_are_listed():
    assert {"resnext50", "shufflenet_v2", "densenet121", "lraspp"} <= set(bench.MODELS)
