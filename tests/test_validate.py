"""``python -m torchconv.validate``: in-process, as a command, and against a broken backend."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import torchconv
from conftest import CPU_BACKENDS
from torchconv import validate
from torchconv.backends import Backend, reference
from torchconv.testing import TOLERANCES

ROOT = Path(__file__).resolve().parent.parent
OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d")


def _row(op, backend, device, check, result):
    """A table row: op, backend, device, check and result in their columns."""
    return re.compile(
        rf"^{re.escape(op)}\s+{re.escape(backend)}\s+{re.escape(device)}\s+{re.escape(check)}\s+{result}\b",
        re.MULTILINE,
    )


def _assert_all_pass(output, backends, device="cpu"):
    for backend in backends:
        for op in OPS:
            for check in validate.checks_of(op):
                assert _row(op, backend, device, check, "PASS").search(output), (op, backend, check, output)
    assert not re.search(r"\bFAIL\b", output.split("validation:")[0]), output
    assert "validation: OK" in output


def _unavailable_are_listed(output):
    for backend in torchconv.backends.registered().values():
        if not backend.is_available():
            assert backend.name in output
            assert backend.how_to_enable in output


def test_checks_cover_every_op_and_tensor_input():
    assert set(validate.OPS) == set(OPS)
    assert validate.checks_of("conv2d") == [
        "forward float32", "backward float32", "forward float64", "backward float64",
        "forward float16", "backward float16", "forward bfloat16", "backward bfloat16",
        "forward complex64", "backward complex64", "forward complex128", "backward complex128",
        "forward int64", "forward int32", "forward uint8", "gradcheck", "gradgradcheck",
    ]
    assert validate.checks_of("avg_pool2d")[-3:] == ["forward int64", "gradcheck", "gradgradcheck"]
    for op in OPS:
        assert set(validate.checks_of(op)) <= set(validate.CHECKS)
    for op in ("conv2d", "conv_transpose2d"):
        assert any(case.bias for case in validate.OPS[op].grad_cases), op


def test_every_op_has_a_channels_last_case():
    for op, spec in validate.OPS.items():
        assert any(case.channels_last for case in spec.cases), op


def test_agreement_checks_compare_memory_format_and_strides():
    expected = torch.randn(2, 3, 4, 5)
    tally = validate._Tally()
    tally.compare("output", expected.contiguous(memory_format=torch.channels_last), expected)
    assert len(tally.problems) == 1 and "memory format" in tally.problems[0] and "strides" in tally.problems[0]
    tally = validate._Tally()
    tally.compare("output", expected.clone(), expected)
    assert tally.problems == []


def test_main_in_process(capsys):
    code = validate.main(["--quick"])
    output = capsys.readouterr().out
    assert code == 0, output
    _assert_all_pass(output, torchconv.backends.available("cpu"))
    _unavailable_are_listed(output)
    for header in ("op", "backend", "device", "check", "result", "max abs err", "scaled err", "limit"):
        assert header in output.splitlines()[output.splitlines().index("") + 1]
    # Agreement rows carry their errors; float64 errors are near rounding.
    line = _row("conv2d", "reference", "cpu", "forward float64", "PASS").search(output)
    abs_error = float(output[line.end():].split()[0])
    assert abs_error < 1e-12


def test_command_quick():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("TORCHCONV_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torchconv.validate", "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A fresh process: the package's own backends (not the tests' cuda-emulated).
    _assert_all_pass(proc.stdout, CPU_BACKENDS)
    _unavailable_are_listed(proc.stdout)
    assert re.search(r"validation: \d+ checks on \d+ backend/device pair\(s\), \d+ PASS, 0 FAIL", proc.stdout)


@pytest.fixture
def broken_backend():
    """A backend whose conv2d returns zeros; every other kernel is the reference one."""

    def conv2d(input, weight, bias, stride, padding, dilation, groups):
        return torch.zeros_like(reference.conv2d(input, weight, bias, stride, padding, dilation, groups))

    kernels = types.SimpleNamespace(**{name: getattr(reference, name) for name in reference.__all__})
    kernels.conv2d = conv2d
    torchconv.backends.register(Backend("broken", kernels, devices=("cpu",), priority=-100))
    try:
        yield "broken"
    finally:
        torchconv.backends._REGISTRY.pop("broken", None)
    assert "broken" not in torchconv.backends.registered()


def test_broken_backend_fails(broken_backend, capsys):
    code = validate.main(["--quick", "--backend", broken_backend])
    output = capsys.readouterr().out
    assert code == 1, output
    # conv2d's forward is wrong, and gradcheck sees a zero numerical Jacobian.
    for check in ("forward float32", "forward float64", "gradcheck"):
        assert _row("conv2d", "broken", "cpu", check, "FAIL").search(output), (check, output)
    # conv2d's gradients use the (correct) transposed conv and weight-gradient
    # kernels, but conv_transpose2d's input gradient is conv2d.
    assert _row("conv2d", "broken", "cpu", "backward float32", "PASS").search(output), output
    assert _row("conv_transpose2d", "broken", "cpu", "backward float32", "FAIL").search(output), output
    for op in ("max_pool2d", "avg_pool2d"):
        for check in validate.checks_of(op):
            assert _row(op, "broken", "cpu", check, "PASS").search(output), (op, check, output)
    assert "Failures:" in output
    assert "validation: FAILED" in output
    # Only the requested backend ran.
    assert not re.search(r"^\S+\s+reference\s+cpu\s", output, re.MULTILINE)


def test_unavailable_backend_is_listed_not_run(capsys):
    how = "pip install torchconv-ghost (for this test only)"
    torchconv.backends.register(
        Backend("ghost", reference, devices=("cpu",), priority=-100, is_available=lambda: False, how_to_enable=how)
    )
    try:
        code = validate.main(["--quick", "--backend", "ghost"])
    finally:
        torchconv.backends._REGISTRY.pop("ghost", None)
    output = capsys.readouterr().out
    assert code == 1, output
    assert "Registered but unavailable backends" in output
    assert f"ghost [cpu]: {how}" in output
    assert "nothing was validated" in output


def test_unavailable_backend_says_why(capsys):
    torchconv.backends.register(
        Backend("ghost", reference, devices=("cpu",), priority=-100, is_available=lambda: False,
                how_to_enable="Build it.", why_unavailable=lambda: "its library failed to load (OSError: gone)")
    )
    try:
        assert torchconv.backends.unavailable_reason("ghost") == "its library failed to load (OSError: gone)"
        validate.main(["--quick", "--backend", "ghost"])
    finally:
        torchconv.backends._REGISTRY.pop("ghost", None)
    assert "ghost [cpu]: its library failed to load (OSError: gone). Build it." in capsys.readouterr().out


def test_unknown_backend_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        validate.main(["--backend", "no-such-backend"])
    assert exit_info.value.code == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_a_gpu_is_skipped(capsys):
    code = validate.main(["--quick", "--device", "cuda"])
    output = capsys.readouterr().out
    assert code == 1
    assert "Device cuda skipped: torch.cuda.is_available() is False" in output


def test_run_returns_results():
    results = validate.run(["reference"], ["cpu"], quick=True, ops=["avg_pool2d"])
    assert [r.check for r in results] == validate.checks_of("avg_pool2d")
    assert all(r.passed and r.op == "avg_pool2d" and r.backend == "reference" for r in results)
    assert all(r.max_abs_error is not None for r in results if r.check.startswith(("forward", "backward")))
    # The limits are torchconv.testing's table.
    limits = {r.check: r.limit for r in results}
    assert limits["forward float32"] == limits["backward float32"] == f"{TOLERANCES[torch.float32]:g} * scale"
    assert limits["forward bfloat16"] == f"{TOLERANCES[torch.bfloat16]:g} * scale"
    assert limits["forward int64"] == "equal"
