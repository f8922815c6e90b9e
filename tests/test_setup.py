"""setup.py's build decisions: which sources are built, and when CUDA is.

setup.py is imported as a module (its setup() call runs only as __main__), so
these check the decisions themselves, on any machine: a CPU-only torch builds
the C++ sources alone, TORCHCONV_BUILD_CUDA=1 fails with the reasons,
=0 disables CUDA even where it could be built, and a CUDA torch with nvcc
builds csrc/cuda too.
"""

import os

import pytest
import torch
from script_module import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def setup_py(monkeypatch):
    module = load_script(os.path.join(ROOT, "setup.py"), "torchconv_setup")
    for name in ("TORCHCONV_BUILD_CUDA", "TORCHCONV_BUILD_CPP"):
        monkeypatch.delenv(name, raising=False)
    return module


def _pretend_cuda_torch(monkeypatch, setup_py, nvcc="/usr/local/cuda/bin/nvcc"):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(setup_py, "_nvcc", lambda cuda_home: nvcc)


def test_cuda_sources_are_told_apart(setup_py):
    sources = setup_py._sources("**/*.cpp") + setup_py._sources("**/*.cu")
    cuda = {s for s in sources if setup_py._is_cuda_source(s)}
    assert cuda == {s for s in sources if s.startswith(os.path.join("csrc", "cuda"))}
    assert os.path.join("csrc", "cuda", "conv.cu") in cuda
    assert os.path.join("csrc", "cuda", "register.cpp") in cuda  # host code that needs the CUDA build
    assert os.path.join("csrc", "cpu", "conv", "conv2d.cpp") not in cuda


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA")
def test_cpu_torch_builds_no_cuda(setup_py, capsys):
    assert setup_py._want_cuda(True) is False
    assert "was built without CUDA" in capsys.readouterr().err
    (extension,), _ = setup_py.extensions()
    assert not any(setup_py._is_cuda_source(s) for s in extension.sources)
    assert os.path.join("csrc", "cpu", "conv", "conv2d.cpp") in extension.sources


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA")
def test_forcing_cuda_without_it_fails_with_the_reason(setup_py, monkeypatch):
    monkeypatch.setenv("TORCHCONV_BUILD_CUDA", "1")
    with pytest.raises(RuntimeError, match=r"TORCHCONV_BUILD_CUDA=1, but torch .* was built without CUDA"):
        setup_py._want_cuda(True)


def test_cuda_torch_with_nvcc_builds_cuda(setup_py, monkeypatch):
    _pretend_cuda_torch(monkeypatch, setup_py)
    assert setup_py._want_cuda(True) is True
    monkeypatch.setenv("TORCHCONV_BUILD_CUDA", "0")
    assert setup_py._want_cuda(True) is False


def test_missing_nvcc_is_named(setup_py, monkeypatch):
    _pretend_cuda_torch(monkeypatch, setup_py, nvcc=None)
    assert setup_py._want_cuda(True) is False
    monkeypatch.setenv("TORCHCONV_BUILD_CUDA", "1")
    with pytest.raises(RuntimeError, match=r"nvcc was not found"):
        setup_py._want_cuda(True)


def test_bad_flag_values_are_rejected(setup_py, monkeypatch):
    monkeypatch.setenv("TORCHCONV_BUILD_CUDA", "maybe")
    with pytest.raises(RuntimeError, match=r"TORCHCONV_BUILD_CUDA='maybe': expected 0 or 1"):
        setup_py._want_cuda(True)


def test_no_extension_when_disabled(setup_py, monkeypatch):
    monkeypatch.setenv("TORCHCONV_BUILD_CPP", "0")
    assert setup_py.extensions() == ([], {})
