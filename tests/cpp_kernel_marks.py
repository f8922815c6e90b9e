"""The marks of the C++ kernel test files (tests/test_cpp_*.py, test_gemm.py):
skipped where the extension is not built, and every test run at each CPU
capability level this machine supports (the ``capability`` fixture)."""

import pytest

import torchconv

CPP_KERNEL_MARKS = [
    pytest.mark.skipif(
        "cpp" not in torchconv.backends.available("cpu"),
        reason="the C++ extension is not built (pip install --no-build-isolation -e .)",
    ),
    pytest.mark.usefixtures("capability"),
]
