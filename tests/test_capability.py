"""The CPU capability levels of the compiled kernels (csrc/cpu/capability.h,
torchconv.backends.cpp.capability / supported_capabilities / use_capability,
the environment variable TORCHCONV_CPU_CAPABILITY)."""

import os
import subprocess
import sys

import pytest
import torch

import torchconv
from torchconv.backends import cpp
from torchconv.testing import assert_close_to_torch

pytestmark = pytest.mark.skipif(
    not cpp.is_available(), reason="the C++ extension is not built (pip install --no-build-isolation -e .)"
)

LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]


def _in_fresh_process(level):
    """capability() and the warnings (Python's or c10's, on stderr) of a
    fresh interpreter whose TORCHCONV_CPU_CAPABILITY is `level`."""
    env = dict(os.environ, TORCHCONV_CPU_CAPABILITY=level)
    script = (
        "import warnings, torch, torchconv\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(torchconv.backends.cpp.capability())\n"
        "    torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))\n"
        "print('|'.join(str(w.message) for w in caught))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    level_used, warnings = done.stdout.splitlines()[-2:]
    return level_used, warnings + done.stderr


def test_levels_are_a_prefix_of_the_known_ones():
    supported = cpp.supported_capabilities()
    assert supported == LEVELS[: len(supported)] and supported[:2] == ["default", "avx2"]
    assert cpp.capability() in supported


def test_the_highest_level_follows_the_cpu_flags():
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    expected = "avx2"
    if all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        expected = "avx512_bf16" if "avx512_bf16" in flags else "avx512"
    elif not ("avx2" in flags and "fma" in flags):
        expected = "default"
    assert cpp.supported_capabilities()[-1] == expected


@pytest.mark.parametrize("level", ["default", "avx2"])
def test_environment_variable_lowers_the_level(level):
    assert _in_fresh_process(level) == (level, "")


def test_environment_variable_with_an_unknown_level_warns_and_is_ignored():
    level, warnings = _in_fresh_process("sse9")
    assert level == cpp.supported_capabilities()[-1]
    assert "ignoring invalid value for TORCHCONV_CPU_CAPABILITY: sse9" in warnings


def test_environment_variable_above_the_cpu_warns_and_is_ignored():
    supported = cpp.supported_capabilities()
    if supported == LEVELS:
        pytest.skip("this CPU runs every level")
    level, warnings = _in_fresh_process("avx512_bf16")
    assert level == supported[-1]
    assert "this CPU's highest level is" in warnings


def test_use_capability_sets_and_restores_the_level():
    before = cpp.capability()
    with cpp.use_capability("default") as level:
        assert level == "default" and cpp.capability() == "default"
    assert cpp.capability() == before


def test_use_capability_restores_the_level_after_an_error():
    before = cpp.capability()
    with pytest.raises(ZeroDivisionError):
        with cpp.use_capability("avx2"):
            1 / 0
    assert cpp.capability() == before


def test_use_capability_refuses_unknown_and_unsupported_levels():
    with pytest.raises(RuntimeError, match="unknown capability level 'avx3'"):
        with cpp.use_capability("avx3"):
            pass
    if cpp.supported_capabilities() != LEVELS:
        with pytest.raises(RuntimeError, match="this CPU cannot run capability level avx512_bf16"):
            with cpp.use_capability("avx512_bf16"):
                pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_level_gives_torchs_result(capability, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 12, 12, generator=generator).to(dtype).requires_grad_()
    w = torch.randn(24, 16, 3, 3, generator=generator).to(dtype).requires_grad_()
    with torchconv.backends.use("cpp"):
        y = torchconv.conv2d(x, w, padding=1)
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
    x32, w32 = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    y32 = torch.nn.functional.conv2d(x32, w32, padding=1)
    gx32, gw32 = torch.autograd.grad(y32.sum(), (x32, w32))
    assert_close_to_torch(y, y32.to(dtype))
    assert_close_to_torch(gx, gx32.to(dtype))
    assert_close_to_torch(gw, gw32.to(dtype))
