"""The CUDA sources compile, checked on machines without a GPU too.

scripts/check_cuda_compiles.sh runs nvcc on every csrc/cuda source against
the installed torch's headers (a CPU wheel's are enough): type and template
errors in the CUDA backend show up in CI, not first on a GPU machine
(skipped where nvcc is not installed). And the same sources compiled as C++
for the CPU (tests/cuda_emulation/) must build: the core tests run them as
the ``cuda-emulated`` backend.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_every_cuda_source_compiles():
    env = dict(os.environ, NVCC=NVCC, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "check_cuda_compiles.sh")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all CUDA sources compile" in result.stdout


def test_cuda_emulation_builds():
    import conftest

    if os.environ.get("TORCHCONV_TEST_CUDA_EMULATION") == "0":
        pytest.skip("TORCHCONV_TEST_CUDA_EMULATION=0")
    assert conftest.EMULATION_ERROR is None, f"the CUDA emulation did not build: {conftest.EMULATION_ERROR}"
    assert ("cpu", "cuda-emulated") in conftest.DEVICE_BACKENDS
