"""benchmarks/bench_overhead.py runs and prints its table (tiny pair counts; no timing assertions)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import torchconv
from script_module import load_script

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_overhead.py"




bench = load_script(_PATH)


def _needs_torchvision():
    # find_spec, not importorskip: a plain `import torchvision` fails beside a
    # CPU torch, while bench_models' builders import its models anyway.
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (the test extra has torchvision==0.28.0)")


def _rows(out, name, kind):
    return [line for line in out.splitlines() if line[:18].strip() == name and line[19:28].strip() == kind]


def test_every_op_kind_and_model_prints_a_row(capsys):
    _needs_torchvision()
    bench.main(["--pairs", "2", "--inner", "1"])
    out = capsys.readouterr().out
    assert "ratio = torchconv / torch" in out
    for op in bench.OPS:
        for kind in bench.KINDS:
            rows = _rows(out, op, kind)
            assert len(rows) == 1, (op, kind, out)
            assert f"<= {bench.target(op, kind)}" in rows[0]
    for model in bench.MODELS:
        rows = _rows(out, model, "inference")
        assert len(rows) == 1 and "<= 1.0" in rows[0], (model, out)


def test_model_sides_agree():
    _needs_torchvision()
    for model in bench.MODELS:
        ours, theirs = bench.model_calls(model)
        torch.testing.assert_close(ours(), theirs(), rtol=1e-4, atol=1e-4)


def test_backend_option_runs_that_backend(capsys):
    bench.main(["--pairs", "1", "--inner", "1", "--backend", "reference", "--ops", "conv2d", "--models", "none"])
    out = capsys.readouterr().out
    assert "backend reference" in out
    assert sum(line.startswith("conv2d ") for line in out.splitlines()) == len(bench.KINDS)
    assert not any(line.startswith(bench.MODELS) for line in out.splitlines())


def test_measure_returns_a_ratio():
    result = bench.measure(lambda: None, lambda: None, pairs=3, inner=2, warmup=1)
    assert set(result) == {"ratio", "ours_us", "torch_us"} and result["ratio"] > 0


def test_fwd_and_bwd_callables_compute_gradients():
    ours, theirs = bench.calls("conv2d", "fwd+bwd")
    for (a, b) in zip(ours(), theirs()):
        assert a.shape == b.shape
    assert torchconv.backends.current("cpu")
